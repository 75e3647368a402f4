"""Part 2 of ``compat-ema demo``: a legacy config trained, migrated, re-trained, compared.

For each built-in legacy config (:data:`LEGACY_CONFIGS`):

1. the config is written to the output directory and read back with
   :func:`compat_ema.migrate.load_config` (never executed);
2. its ``custom_hooks`` and ``optimizer`` train
   :class:`~compat_ema.demo.DemoRegressor` on :func:`~compat_ema.demo.regression_samples`
   for :data:`EPOCHS` epochs in the fake mmcv ``EpochBasedRunner``
   (:func:`compat_ema.testing.run_scenario`), checkpoint every epoch;
3. it is migrated with ``--exact`` and ``--native``
   (:func:`compat_ema.migrate.migrate_config`), both written next to it;
4. each migrated config's ``custom_hooks`` train the same model, data and
   optimizer in the fake mmengine ``Runner``;
5. the EMA weights are compared at every epoch end (legacy checkpoint
   ``state_dict`` at priority < 50 and mmengine's ``state_dict`` both hold the
   EMA): ``exact`` must be 0 everywhere, ``native`` shows how far it moves;
6. the legacy final checkpoint is converted to mmengine's layout and its EMA
   weights exported (:mod:`compat_ema.checkpoint`), and the momentum schedules
   plotted when matplotlib is installed.

The output directory is marked with a ``.compat-ema-demo`` file; an existing
directory without the mark (and not empty) is refused unless ``force``.
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import torch

from .core.atomic import write_new

__all__ = ['LEGACY_CONFIGS', 'EPOCHS', 'showcase', 'prepare_out', 'DemoOutputError']


def _write_text(path: str, text: str) -> None:
    """Atomically (re)write one of the demo's own files."""
    write_new(path, lambda f: f.write(text.encode('utf-8')), force=True)

#: training length of each run (3 iterations per epoch)
EPOCHS = 4

MARKER = '.compat-ema-demo'

LEGACY_CONFIGS: Dict[str, str] = {
    'legacy_yolox_style': '''\
# compat-ema demo: an mmdet 2.x YOLOX-style EMA setup (mmdet 2.28 ExpMomentumEMAHook).
runner = dict(type='EpochBasedRunner', max_epochs=4)
optimizer = dict(type='SGD', lr=0.05, momentum=0.9)
checkpoint_config = dict(interval=1)
resume_from = None

custom_hooks = [
    dict(
        type='ExpMomentumEMAHook',
        resume_from=resume_from,
        momentum=0.0001,
        total_iter=24,  # YOLOX keeps the default 2000; 24 shows the decay in 12 iterations
        priority=49)
]
''',
    'legacy_mmcv_style': '''\
# compat-ema demo: an mmcls/mmseg-style setup with mmcv 1.x EMAHook.
runner = dict(type='EpochBasedRunner', max_epochs=4)
optimizer = dict(type='SGD', lr=0.05, momentum=0.9)
checkpoint_config = dict(interval=1)

# momentum**interval = 0.09 per update, every 2nd iteration; the warm-up caps it up to iter 8
custom_hooks = [dict(type='EMAHook', momentum=0.3, interval=2, warm_up=100,
                     priority='ABOVE_NORMAL')]
''',
}


class DemoOutputError(FileExistsError):
    """The output directory exists, is not a demo directory, and ``force`` was not given."""


def prepare_out(out: str, force: bool = False) -> str:
    """Create/accept the output directory (see the module docstring)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DemoOutputError(f'{out}: exists and is not a directory')
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)) \
            and not force:
        raise DemoOutputError(f'{out}: exists, is not empty and was not written by compat-ema '
                              'demo; choose another --out or pass --force')
    _write_text(os.path.join(out, MARKER),
                'written by compat-ema demo; its files here are overwritten on the next run\n')
    return out


def _for_harness(hooks: List[dict]) -> List[dict]:
    """Migrated mmengine hook dicts -> compat_ema's registry names (``legacy.*`` scope)."""
    out = []
    for h in hooks:
        h = dict(h)
        if str(h.get('ema_type', '')).startswith('Legacy'):
            h['ema_type'] = 'legacy.' + h['ema_type']
        out.append(h)
    return out


def _epoch_ema(result, keys) -> List[Dict[str, torch.Tensor]]:
    return [{k: result.checkpoints[f'epoch_{e}.pth']['state_dict'][k] for k in keys}
            for e in range(1, EPOCHS + 1)]


def _max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


#: the element the part-2 table follows
ELEMENT = ('head.weight', (0, 0))


def _data():
    """The demo's training data as a loader for the fake runners (3 batches of 8 per epoch)."""
    from torch.utils.data import DataLoader
    from .demo import BATCH, regression_samples
    return DataLoader(regression_samples(3 * BATCH), batch_size=BATCH, shuffle=False)


def _model():
    from .demo import DemoRegressor
    return DemoRegressor(0)


def _run_one(name: str, text: str, out: str, lines: List[str]) -> Tuple[float, float]:
    from .migrate import load_config, migrate_config, write_migration
    from .migrate.compare import compare
    from .testing import run_scenario

    legacy_path = os.path.join(out, name + '.py')
    _write_text(legacy_path, text)
    cfg = load_config(legacy_path).cfg
    hooks, optimizer = cfg['custom_hooks'], cfg['optimizer']
    runs = os.path.join(out, 'runs', name)
    legacy = run_scenario('mmcv', 'epoch', hooks=hooks, max_epochs=EPOCHS, recorders=(),
                          model=_model(), data=_data(), optimizer=optimizer,
                          work_dir=os.path.join(runs, 'legacy'))
    results = {}
    migrated = {}
    for mode in ('exact', 'native'):
        dst = os.path.join(out, f'{name}_{mode}.py')
        mig = migrate_config(legacy_path, mode, out=dst, iters=3 * EPOCHS)
        write_migration(mig, dst, force=True)
        migrated[mode] = mig
        new_hooks = load_config(dst).cfg['custom_hooks']
        results[mode] = run_scenario('mmengine', 'epoch', hooks=_for_harness(new_hooks),
                                     max_epochs=EPOCHS, recorders=(), val=False,
                                     model=_model(), data=_data(), optimizer=optimizer,
                                     work_dir=os.path.join(runs, mode))
    keys = [k for k in results['exact'].checkpoints['epoch_1.pth']['state_dict']
            if results['exact'].checkpoints['epoch_1.pth']['state_dict'][k].is_floating_point()]
    leg = _epoch_ema(legacy, keys)
    ex, na = _epoch_ema(results['exact'], keys), _epoch_ema(results['native'], keys)
    spec = migrated['exact'].mapped[0]
    lines.append(f'{name}: {spec.spec.describe()}')
    lines.append(f'  exact : {migrated["exact"].mapped[0].new_entry()}')
    lines.append(f'  native: {migrated["native"].mapped[0].new_entry()}')
    key, idx = ELEMENT
    where = f'{key}[{idx[0]},{idx[1]}]'
    lines.append(f'  after each epoch: the EMA of {where} (legacy, native) and differences, at '
                 f'that element and as the max over all {len(keys)} EMA tensors')
    lines.append(f'  {"epoch":>5} | {"legacy EMA":>10} | {"max|exact-legacy|":>17} | '
                 f'{"native EMA":>10} | {"|native-legacy|":>15} | {"max|native-legacy|":>18}')
    for e in range(EPOCHS):
        lv, nv = float(leg[e][key][idx]), float(na[e][key][idx])
        lines.append(f'  {e + 1:>5} | {lv:>10.6f} | {_max_diff(ex[e], leg[e]):>17.3g} | '
                     f'{nv:>10.6f} | {abs(nv - lv):>15.3g} | {_max_diff(na[e], leg[e]):>18.3g}')
    legacy_entry = dict(hooks[0], type=spec.spec.kind)
    cmp = compare(legacy_entry, migrated['native'].mapped[0].new_entry(), 3 * EPOCHS)
    for line in cmp.summary('native'):
        lines.append(f'  native momentum schedule: {line}' if 'momentum' in line[:20] else
                     f'  {line}')
    _artefacts(name, legacy, out, lines, legacy_entry, migrated['native'].mapped[0].new_entry())
    return _max_diff(ex[-1], leg[-1]), _max_diff(na[-1], leg[-1])


def _artefacts(name, legacy, out, lines, legacy_entry, native_entry) -> None:
    last = os.path.join(legacy.work_dir, f'epoch_{EPOCHS}.pth')
    try:
        from .checkpoint import convert, export_ema
    except ImportError:  # pragma: no cover - the checkpoint tools are part of compat_ema
        lines.append('  (checkpoint tools not available: no conversion)')
    else:
        conv = os.path.join(out, f'{name}_epoch_{EPOCHS}_as_mmengine.pth')
        exp = os.path.join(out, f'{name}_epoch_{EPOCHS}_ema_weights.pth')
        # mmcv files do not record the hook priority: say it (the side of the EMA depends on it)
        priority = legacy_entry.get('priority', 'NORMAL')
        convert(last, conv, to='mmengine', force=True, source_priority=priority)
        export_ema(last, exp, force=True, priority=priority)
        lines.append(f'  checkpoints: {os.path.relpath(conv)} (mmengine layout), '
                     f'{os.path.relpath(exp)} (EMA weights only)')
    from .migrate.hookspec import classify
    from .migrate.schedule import MatplotlibMissing, momentum_schedule, plot_schedules
    png = os.path.join(out, f'{name}_momentum.png')
    try:
        plot_schedules({'legacy': momentum_schedule(classify(legacy_entry), 3 * EPOCHS),  # type: ignore[arg-type]
                        'native': momentum_schedule(classify(native_entry, 'mmengine'),  # type: ignore[arg-type]
                                                    3 * EPOCHS)},
                       png, title=f'{name}: effective momentum per iteration')
        lines.append(f'  plot: {os.path.relpath(png)}')
    except MatplotlibMissing:
        lines.append("  plot: skipped (pip install 'compat-ema[plot]' for matplotlib)")


def showcase(out: str = 'compat-ema-demo', force: bool = False) -> str:
    """Run part 2 into ``out``; print and return the text (also saved as ``report.txt``)."""
    out = prepare_out(out, force)
    lines = [f'compat-ema demo, part 2: legacy configs migrated to mmengine ({EPOCHS} epochs x '
             '3 iterations, fake mmcv runner vs fake mmengine Runner, same model, data, SGD)',
             f'artefacts in {out}', '']
    for name, text in LEGACY_CONFIGS.items():
        _run_one(name, text, out, lines)
        lines.append('')
    lines.append('exact: the legacy EMA bit for bit under mmengine (compat_ema legacy types); '
                 "native: mmengine's own types, the numbers move as shown. See MIGRATION.md.")
    text = '\n'.join(lines)
    _write_text(os.path.join(out, 'report.txt'), text + '\n')
    print(text)
    return text
