"""The GAN/restoration family in the tools: migrate, schedule, doctor, convert/inspect/export-ema.

Config fixtures in tests/fixtures/gan/ are written for these tests in the style of mmedit 0.16's
Real-ESRGAN configs and of mmagic 1.2's (tests/oracle/test_gan_migrate_real.py runs migrate on
the four configs mmedit 0.16.1 itself ships). Checkpoints are written by the harness mmcv runner
with the mmedit hook.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from compat_ema.checkpoint import convert, export_ema, inspect
from compat_ema.checkpoint.errors import CheckpointError
from compat_ema.cli import main
from compat_ema.commands import REFUSED
from compat_ema.migrate.configparse import parse_source
from compat_ema.migrate.core import migrate_config
from compat_ema.migrate.gan import flip
from compat_ema.mmengine.hooks.hook import Hook as EngineHook
from compat_ema.registry import HOOKS
from compat_ema.testing.gan import TinyRestorer, generator_parameters
from compat_ema.testing.mmcv_runner import IterBasedRunner
from compat_ema.testing.mmengine_runner import Runner
from compat_ema.testing.models import ListLoader, make_loader

FIX = Path(__file__).resolve().parent / 'fixtures' / 'gan'


@pytest.fixture
def configs(tmp_path):
    dst = tmp_path / 'gan'
    shutil.copytree(FIX, dst)
    return dst


def _hooks(text: str):
    return parse_source(text, 'x.py').values['custom_hooks']


def test_migrate_exact_keeps_arguments_and_adds_the_plugin(configs):
    mig = migrate_config(str(configs / 'mmedit_restorer.py'), mode='exact')
    (hook,) = _hooks(mig.text)
    assert hook == dict(type='LegacyExponentialMovingAverageHook', module_keys='generator_ema',
                        interval=1, interp_cfg=dict(momentum=0.999))
    assert "custom_imports = dict(imports=['compat_ema.integrations.mmengine_plugin']" in mig.text
    assert mig.iters == 2000 and mig.iters_from == 'total_iters'
    built = HOOKS.build(dict(hook, type='legacy.' + hook['type']))
    assert built.interp_cfg == dict(momentum=0.999) and built.module_keys == ('generator_ema',)


def test_migrate_native_flips_the_momenta(configs, capsys):
    assert main(['migrate', '--native', '--sim-iters', '300',
                 str(configs / 'mmedit_quirks.py')]) == 0
    out = capsys.readouterr().out
    text = (configs / 'mmedit_quirks_native.py').read_text()
    first, second = _hooks(text)
    # defaults: mmedit momentum 0.999 / nontrainable 0.0 -> mmagic 0.001 / 1.0, written out
    assert first == dict(type='ExponentialMovingAverageHook', interp_cfg=dict(momentum=0.001),
                         module_keys=('generator_ema', 'disc_ema'), start_iter=10,
                         priority='VERY_HIGH')
    assert second == dict(type='ExponentialMovingAverageHook', module_keys='generator_ema',
                          interval=4, start_iter=2,
                          interp_cfg=dict(momentum=0.1, momentum_nontrainable=0.5))
    assert 'neither hook updates after start_iter=10' in out
    assert 'toy EMA (float32; amplitude 1): first bitwise difference at iteration' in out
    assert 'custom_imports' not in text


def test_migrate_native_refuses_what_mmagic_cannot_take(configs):
    bad = configs / 'bad.py'
    bad.write_text("total_iters = 10\ncheckpoint_config = dict(interval=5)\ncustom_hooks = [dict("
                   "type='ExponentialMovingAverageHook', module_keys='generator_ema', "
                   "interp_cfg=dict(momentum=1.0))]\n")
    with pytest.raises(ValueError, match='mmagic needs 0 < 1 - momentum < 1'):
        migrate_config(str(bad), mode='native')
    assert main(['migrate', '--native', str(bad)]) == REFUSED
    migrate_config(str(bad), mode='exact')  # the legacy hook takes any momentum, as mmedit did


def test_migrate_rejects_unknown_keys(configs):
    bad = configs / 'bad_keys.py'
    bad.write_text("total_iters = 10\ncheckpoint_config = dict(interval=5)\ncustom_hooks = [dict("
                   "type='ExponentialMovingAverageHook', module_keys='generator_ema', "
                   "interp_cfg=dict(beta=0.9))]\n")
    assert main(['migrate', '--exact', str(bad)]) == REFUSED


def test_flip_writes_config_values():
    assert flip(0.999) == 0.001 and flip(0.0) == 1.0 and flip(0.9) == 0.1
    assert flip(0.9999) == 0.0001 and flip(0.995) == 0.005


def test_schedule_explains_both_conventions(configs, capsys):
    assert main(['schedule', str(configs / 'mmedit_quirks.py'), '--iters', '6']) == 0
    out = capsys.readouterr().out
    assert 'mmedit.ExponentialMovingAverageHook' in out and 'weight of the OLD EMA' in out
    assert 'never changes afterwards' in out
    assert main(['schedule', str(configs / 'mmagic_unflipped.py'), '--iters', '3']) == 0
    out = capsys.readouterr().out
    assert 'mmagic.ExponentialMovingAverageHook' in out and 'un-flipped' in out
    assert '0.999 | momentum' in out


@pytest.mark.parametrize('name,codes,rc', [('mmagic_unflipped.py', ['E301'], 1),
                                           ('mmagic_ema_config.py', ['E301'], 1),
                                           ('mmedit_restorer.py', [], 0),
                                           ('mmedit_quirks.py', ['E302'], 0)])
def test_doctor_flags_unflipped_mmagic_momentum(configs, capsys, name, codes, rc):
    assert main(['doctor', str(configs / name)]) == rc
    out = capsys.readouterr().out
    for code in ('E301', 'E302'):
        assert (f'[{code} ' in out) == (code in codes), out


# --- checkpoints ------------------------------------------------------------------------------
def _mmedit_run(work_dir: Path, iters=4):
    model = TinyRestorer(seed=0)
    runner = IterBasedRunner(model, optimizer=torch.optim.SGD(generator_parameters(model), lr=0.1),
                             work_dir=str(work_dir), max_iters=iters, hook_scope='mmedit')
    runner.register_training_hooks(optimizer_config=dict(),
                                   checkpoint_config=dict(interval=2, by_epoch=False))
    runner.register_hook_from_cfg(dict(type='ExponentialMovingAverageHook',
                                       module_keys='generator_ema', interval=1,
                                       interp_cfg=dict(momentum=0.9)))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner.run([ListLoader(list(make_loader(8, batch_size=2)))], [('train', iters)])
    return model


def test_mmedit_checkpoint_converts_both_ways_and_resumes_under_mmagic(tmp_path):
    _mmedit_run(tmp_path / 'run')
    src = tmp_path / 'run' / 'iter_2.pth'
    legacy = torch.load(src)
    rep = inspect(src)
    assert rep.generation == 'mmedit' and rep.iters_done == 2
    assert 'generator_ema.* (EMA of generator.*)' in rep.ema_side

    res = convert(src, tmp_path / 'mmagic.pth', to='mmagic')
    assert (res.source, res.target) == ('mmedit', 'mmagic')
    out = torch.load(tmp_path / 'mmagic.pth')
    assert out['meta']['iter'] == 2 and 'message_hub' in out
    assert list(out['state_dict']) == list(legacy['state_dict'])
    assert inspect(tmp_path / 'mmagic.pth').generation == 'mmagic'
    # and back: the same tensors, mmcv's meta iter (completed - 1)
    convert(tmp_path / 'mmagic.pth', tmp_path / 'back.pth', to='mmedit')
    back = torch.load(tmp_path / 'back.pth')
    assert back['meta']['iter'] == legacy['meta']['iter']
    assert all(torch.equal(back['state_dict'][k], v) for k, v in legacy['state_dict'].items())

    # BaseGAN ema_config form: module.* + steps (so mmagic's averaged model does not copy)
    convert(src, tmp_path / 'avg.pth', to='mmagic', ema_config=True)
    avg = torch.load(tmp_path / 'avg.pth')['state_dict']
    assert int(avg['generator_ema.steps']) == 2
    assert torch.equal(avg['generator_ema.module.fc.weight'],
                       legacy['state_dict']['generator_ema.fc.weight'])
    assert inspect(tmp_path / 'avg.pth').generation == 'mmagic-ema_config'

    # export-ema: the generator's keys with the EMA values
    export_ema(tmp_path / 'avg.pth', tmp_path / 'ema.pth')
    ema = torch.load(tmp_path / 'ema.pth')
    assert set(ema) == {k for k in legacy['state_dict'] if k.startswith('generator.')}
    assert torch.equal(ema['generator.fc.weight'], legacy['state_dict']['generator_ema.fc.weight'])

    # resume in the harness mmengine Runner with the mmagic hook
    model = TinyRestorer(seed=5)
    seen = []

    class Probe(EngineHook):
        priority = 'VERY_HIGH'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if not seen:
                seen.append((runner.iter, {k: v.clone() for k, v in
                                           runner.model.generator_ema.state_dict().items()}))
    runner = Runner(model, str(tmp_path / 'resumed'), train_dataloader=make_loader(8, 2),
                    train_cfg=dict(by_epoch=False, max_iters=4),
                    optim_wrapper=torch.optim.SGD(generator_parameters(model), lr=0.1),
                    custom_hooks=[dict(type='ExponentialMovingAverageHook',
                                       module_keys='generator_ema', interval=1,
                                       interp_cfg=dict(momentum=0.1)), Probe()],
                    load_from=str(tmp_path / 'mmagic.pth'), resume=True, hook_scope='mmagic')
    runner.train()
    it, ema = seen[0]
    assert it == 2
    assert all(torch.equal(ema[k], legacy['state_dict']['generator_ema.' + k]) for k in ema)


def test_gan_checkpoint_errors(tmp_path):
    _mmedit_run(tmp_path / 'run', iters=2)
    src = tmp_path / 'run' / 'iter_2.pth'
    with pytest.raises(CheckpointError, match='convert it with --to mmagic'):
        convert(src, tmp_path / 'x.pth', to='mmengine')
    with pytest.raises(CheckpointError, match='already an mmedit'):
        convert(src, tmp_path / 'x.pth', to='mmedit')
    torch.save({'state_dict': {'fc.weight': torch.zeros(1)}}, tmp_path / 'plain.pth')
    with pytest.raises(CheckpointError, match='not an mmedit/mmagic checkpoint'):
        convert(tmp_path / 'plain.pth', tmp_path / 'x.pth', to='mmagic')
    assert not (tmp_path / 'x.pth').exists()
    assert main(['convert', str(src), str(tmp_path / 'cli.pth'), '--to', 'mmagic',
                 '--ema-config']) == 0


def test_native_report_numbers_in_the_docs(configs, capsys):
    """docs/gan-family.md quotes this report (3000 iterations, momentum 0.999)."""
    assert main(['migrate', '--native', '--dry-run', '--iters', '3000',
                 str(configs / 'mmedit_restorer.py')]) == 0
    out = capsys.readouterr().out
    line = ('toy EMA (float32; amplitude 1): first bitwise difference at iteration 0; 27114 of '
            '72000 values differ over 3000 iterations; max gap 6.97e-06 at iteration 1153; final '
            'max gap 2.92e-06')
    assert line in out
    assert line in (Path(__file__).resolve().parents[1] / 'docs' / 'gan-family.md').read_text()
