"""Acceptance, against the real frameworks:

* ``compat-ema migrate`` on each of the four configs mmedit 0.16.1 ships with an
  ``ExponentialMovingAverageHook`` (extracted from its wheel): the ``--exact`` output loads with
  mmengine 0.10.7's ``Config``, its hook is built by the real mmengine Runner from the config's
  ``custom_hooks`` (through ``custom_imports``), and the EMA equals the legacy run (the real
  mmedit hook, built by mmcv 1.6 from the original config, in the real mmcv runner) bit for bit
  after every iteration. ``--native`` loads too and builds the real mmagic hook; its EMA stays
  within rounding of the legacy one but is not bitwise equal (the report's claim).
* a converted mmedit checkpoint resumes in the real mmengine Runner with the real mmagic hook.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gan_native
from runner_kit import diff, make_batches, real_runners  # noqa: F401
from test_gan_runners import _snap, run_engine, run_mmcv

try:
    CONFIG_DIR = gan_native.native_dir() / 'mmedit' / '.mim' / 'configs' / 'restorers'
except RuntimeError as exc:
    pytest.skip(str(exc), allow_module_level=True)

from extract_native import MMEDIT_EMA_CONFIGS  # noqa: E402


def _cfg(path):
    from mmengine.config import Config
    return Config.fromfile(str(path))


@pytest.mark.parametrize('rel', MMEDIT_EMA_CONFIGS)
def test_migrated_mmedit_configs(real_runners, tmp_path, rel):  # noqa: F811
    import mmcv
    from mmcv.runner import HOOKS as MMCV_HOOKS

    from compat_ema.cli import main
    gan_native.mmedit_cls()  # registers the real hook into mmcv's HOOKS
    gan_native.mmagic_cls()  # ... and the real mmagic one into mmengine's
    src = tmp_path / Path(rel).name
    src.write_bytes((CONFIG_DIR / rel).read_bytes())
    assert main(['migrate', '--exact', '--sim-iters', '50', str(src)]) == 0
    assert main(['migrate', '--native', '--sim-iters', '50', str(src)]) == 0
    exact = _cfg(tmp_path / (src.stem + '_exact.py'))
    native = _cfg(tmp_path / (src.stem + '_native.py'))
    assert exact.custom_hooks[0]['type'] == 'LegacyExponentialMovingAverageHook'
    assert native.custom_hooks[0]['interp_cfg'] == dict(momentum=0.001)

    legacy_cfg = mmcv.Config.fromfile(str(src)).custom_hooks[0]
    batches = make_batches(6, seed=3)
    for with_ema in (True, False):
        legacy_hook = MMCV_HOOKS.build(dict(legacy_cfg))
        assert type(legacy_hook).__module__ == 'native_mmedit_ema'
        legacy_model, legacy_log = run_mmcv(tmp_path / f'mmcv{with_ema}', legacy_hook, batches,
                                            with_ema)
        exact_model, exact_log, runner = run_engine(
            tmp_path / f'exact{with_ema}', dict(exact.custom_hooks[0]), batches, with_ema)
        assert any(type(h).__name__ == 'LegacyExponentialMovingAverageHook' for h in runner.hooks)
        assert len(legacy_log) == len(exact_log) == 6
        for (it, a), (_, b) in zip(legacy_log, exact_log):
            assert not diff(a, b), f'{rel} iter {it}: {diff(a, b)[:4]}'
        native_model, native_log, runner = run_engine(
            tmp_path / f'native{with_ema}', dict(native.custom_hooks[0]), batches, with_ema)
        assert any(type(h).__module__ == 'native_mmagic_ema' for h in runner.hooks)
        a, b = _snap(legacy_model), _snap(native_model)
        gaps = [float((a[k].double() - b[k].double()).abs().max()) for k in a
                if k.startswith('generator_ema.') and a[k].is_floating_point()]
        assert max(gaps) < 1e-5
        assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith('generator_ema.'))


def test_converted_mmedit_checkpoint_resumes_with_the_mmagic_hook(real_runners, tmp_path):  # noqa: F811,E501
    from mmengine.hooks import Hook

    from compat_ema.checkpoint import convert
    real_mmedit, real_mmagic = gan_native.mmedit_cls(), gan_native.mmagic_cls()
    batches = make_batches(6, seed=4)
    run_mmcv(tmp_path / 'mmcv', real_mmedit(module_keys='generator_ema', interval=1,
                                           interp_cfg=dict(momentum=0.9)), batches,
             ckpt_interval=3)
    legacy = torch.load(tmp_path / 'mmcv' / 'iter_3.pth', map_location='cpu', weights_only=False)
    convert(tmp_path / 'mmcv' / 'iter_3.pth', tmp_path / 'mmagic.pth', to='mmagic')

    seen = {}

    class Probe(Hook):
        priority = 'VERY_HIGH'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if 'start' not in seen:
                seen['start'] = (runner.iter, _snap(runner.model))

    hook = real_mmagic(module_keys='generator_ema', interval=1, interp_cfg=dict(momentum=0.1))
    model, log, runner = run_engine(tmp_path / 'engine', hook, batches, iters=6,
                                    load_from=str(tmp_path / 'mmagic.pth'), resume=True,
                                    extra_hooks=[Probe()])
    it, state = seen['start']
    assert it == 3 and runner.iter == 6
    assert not diff(state, dict(legacy['state_dict']))
    # the EMA after resuming, replayed with the REAL mmagic lerp from the checkpoint's EMA
    ema = {k[len('generator_ema.'):]: v.clone() for k, v in legacy['state_dict'].items()
           if k.startswith('generator_ema.')}
    trainable = {k: v.requires_grad for k, v in model.generator.state_dict(keep_vars=True).items()}
    for _, snap in log:
        for k in ema:
            ema[k] = real_mmagic.lerp(snap['generator.' + k], ema[k], momentum=0.1,
                                      trainable=trainable[k]).to(ema[k].dtype)
    final = _snap(model)
    assert not diff({k: final['generator_ema.' + k] for k in ema}, ema)


def test_ema_config_form_loads_into_mmagics_averaged_model(real_runners, tmp_path):  # noqa: F811
    """``convert --to mmagic --ema-config`` keeps the EMA history in mmagic 1.2.0's own
    ``ExponentialMovingAverage`` (what ``BaseGAN(ema_config=...)`` builds); the plain hook keys
    load too, but with ``steps`` reset to 0, so its next update copies the generator."""
    import torch.nn as nn

    from compat_ema.checkpoint import convert
    from test_gan_runners import _generator
    avg_cls = gan_native.mmagic_average_module().ExponentialMovingAverage
    batches = make_batches(4, seed=5)
    run_mmcv(tmp_path / 'mmcv', gan_native.mmedit_cls()(module_keys='generator_ema', interval=1,
                                                        interp_cfg=dict(momentum=0.9)),
             batches, iters=4, ckpt_interval=4)
    legacy = torch.load(tmp_path / 'mmcv' / 'iter_4.pth', map_location='cpu', weights_only=False)
    convert(tmp_path / 'mmcv' / 'iter_4.pth', tmp_path / 'avg.pth', to='mmagic', ema_config=True)
    convert(tmp_path / 'mmcv' / 'iter_4.pth', tmp_path / 'hook.pth', to='mmagic')

    class GanModel(nn.Module):  # BaseGAN's layout: generator + averaged-model generator_ema
        def __init__(self):
            super().__init__()
            torch.manual_seed(123)
            self.generator = _generator(True)
            self.generator_ema = avg_cls(self.generator, momentum=0.1)

    ema_keys = [k for k in legacy['state_dict'] if k.startswith('generator_ema.')]
    for name, steps in (('avg.pth', 4), ('hook.pth', 0)):
        model = GanModel()
        sd = torch.load(tmp_path / name, map_location='cpu', weights_only=False)['state_dict']
        model.load_state_dict(sd)
        assert int(model.generator_ema.steps) == steps, name
        got = model.generator_ema.module.state_dict()
        for k in ema_keys:
            assert torch.equal(got[k[len('generator_ema.'):]], legacy['state_dict'][k]), (name, k)
        # the next update: a blend when steps > 0, a plain copy of the generator when steps == 0
        model.generator_ema.update_parameters(model.generator)
        w = model.generator_ema.module[0].weight
        assert torch.equal(w, model.generator[0].weight) == (steps == 0), name
