"""compat_ema inside a legacy project, on the legacy stack (tox env ``oracle-torch1.8.1``).

A legacy mmdet 2.x / mmcv 1.x project turns compat_ema's hooks on from its config alone:
``custom_imports=dict(imports=['compat_ema.integrations.mmcv'])`` plus ``custom_hooks``
naming ``CompatEMAHook`` / ``CompatExpMomentumEMAHook`` / ... (MIGRATION.md, "Keeping your
mmcv 1.x / mmdet 2.x training code"). Here that happens in a fresh Python process, exactly as
mmcv's tools do it: ``mmcv.Config.fromfile`` reads the config, ``import_modules_from_strings``
imports what ``custom_imports`` names (which registers the Compat* hooks in mmcv's ``HOOKS``:
they are not there before), and the real ``EpochBasedRunner``/``IterBasedRunner`` build the
hooks from ``custom_hooks``. The checkpoints must be bitwise equal to the ones the upstream
hook (mmcv's ``EMAHook``, mmdet's ``ExpMomentumEMAHook``/``LinearMomentumEMAHook``) writes in
the same runner. This runs in every oracle env; the legacy one makes it torch 1.8.1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.oracle

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]
    from _pytest.monkeypatch import MonkeyPatch
    import runner_kit as kit
    import torch
    kit.prepare(MonkeyPatch())
    import mmcv
    from mmcv.runner import HOOKS
    from mmcv.utils import import_modules_from_strings
    tmp, cases = Path(sys.argv[2]), json.loads(sys.argv[3])
    before = sorted(n for n in HOOKS.module_dict if n.startswith('Compat'))
    results = {'before': before, 'torch': torch.__version__, 'mmcv': mmcv.__version__, 'cases': {}}
    for name, (real, compat, kw, by_epoch) in cases.items():
        cfg_file = tmp / f'{name}_config.py'
        cfg_file.write_text(
            "custom_imports = dict(imports=['compat_ema.integrations.mmcv'], "
            "allow_failed_imports=False)\\n"
            f"custom_hooks = [dict(type={compat!r}, priority=49, **{kw!r})]\\n")
        cfg = mmcv.Config.fromfile(str(cfg_file))
        import_modules_from_strings(**cfg.custom_imports)
        weights, batches = kit.make_weights(3, True, 5), kit.make_batches(3, 5)
        common = dict(weights=weights, batches=batches, by_epoch=by_epoch, max_epochs=2,
                      max_iters=5, workflow=(('train', 1), ('val', 1)) if by_epoch else (('train', 1),),
                      val_batches=kit.make_batches(2, 6))
        runners = {}
        for side, hook_cfgs in (('real', [dict(type=real, priority=49, **kw)]),
                                ('compat', [dict(c) for c in cfg.custom_hooks])):
            runners[side] = kit.run_mmcv(tmp / f'{name}_{side}', hook_cfgs=hook_cfgs, **common)
        diffs = kit.compare_work_dirs(tmp / f'{name}_real', tmp / f'{name}_compat', kit.MMCV_SKIP)
        hook_types = {side: [type(h).__module__ + '.' + type(h).__name__ for h in r.hooks
                             if 'EMA' in type(h).__name__] for side, r in runners.items()}
        results['cases'][name] = {'diffs': diffs, 'hooks': hook_types,
                                  'files': kit.checkpoint_files(tmp / f'{name}_real')}
    results['after'] = sorted(n for n in HOOKS.module_dict if n.startswith('Compat'))
    print(json.dumps(results))
''')

CASES = {
    'mmcv_epoch': ('EMAHook', 'CompatEMAHook', dict(momentum=0.3, interval=1, warm_up=2), True),
    'mmdet_exp_epoch': ('ExpMomentumEMAHook', 'CompatExpMomentumEMAHook',
                        dict(momentum=0.3, total_iter=5), True),
    'mmdet_linear_iter': ('LinearMomentumEMAHook', 'CompatLinearMomentumEMAHook',
                          dict(momentum=0.3, warm_up=3, interval=2), False),
}


def test_config_custom_imports_and_custom_hooks_in_the_real_runners(tmp_path):
    proc = subprocess.run([sys.executable, '-c', CHILD, str(HERE), str(tmp_path), json.dumps(CASES)],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONHASHSEED='0'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res['mmcv'] == '1.6.0'
    assert res['before'] == []      # nothing of compat_ema's until custom_imports ran
    assert {'CompatEMAHook', 'CompatBaseEMAHook', 'CompatExpMomentumEMAHook',
            'CompatLinearMomentumEMAHook'} <= set(res['after'])
    for name, got in res['cases'].items():
        assert got['diffs'] == [], f'{name} on torch {res["torch"]}: ' + '\n'.join(got['diffs'][:10])
        assert got['files'], name                           # not vacuous: checkpoints written
        real, compat = got['hooks']['real'], got['hooks']['compat']
        assert len(real) == len(compat) == 1
        assert real[0].split('.')[0] in ('mmcv', 'mmdet'), real
        assert compat[0].startswith('compat_ema.integrations.mmcv.'), compat
