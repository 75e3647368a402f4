"""``compat-ema schedule`` and compat_ema.migrate.schedule.

Expected momenta come from float64 formulas written here (from the upstream
sources quoted in docs/runner-behaviour.md#mmcv-emahook, #mmdet-update, #mmengine-emahook), and a
second check drives
compat_ema's own hook classes on float64 weights and reads the momentum back
from the EMA values.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from compat_ema.cli import main as cli
from compat_ema.core.runner import SimpleRunner
from compat_ema.migrate.hookspec import AmbiguousHookError, UnknownKeysError, classify
from compat_ema.migrate.schedule import momentum_schedule, schedule_notes
from compat_ema.registry import HOOKS


def sched(entry, iters, generation=None, ipe=None):
    return momentum_schedule(classify(entry, generation), iters, ipe)


# -- the pinned table: mmcv defaults, warm-up without effect ---------------------------------

PINNED_MMCV_DEFAULTS = """\
hook: mmcv.EMAHook(momentum=0.0002, interval=1, warm_up=100)
   iter |   action     momentum | formula
-----------------------------------------
      0 |   update       0.0002 | min(0.0002, 1/100=0.01) -> momentum**interval
      1 |   update       0.0002 | min(0.0002, 2/101=0.019802) -> momentum**interval
      2 |   update       0.0002 | min(0.0002, 3/102=0.0294118) -> momentum**interval
      3 |   update       0.0002 | min(0.0002, 4/103=0.038835) -> momentum**interval
      4 |   update       0.0002 | min(0.0002, 5/104=0.0480769) -> momentum**interval
      5 |   update       0.0002 | min(0.0002, 6/105=0.0571429) -> momentum**interval
note: warm-up has no effect: (1+t)/(warm_up+t) >= 1/warm_up = 0.01 >= 0.0002 at every \
iteration, so the momentum is 0.0002 throughout (it would need warm_up > 5000)
"""


def test_mmcv_defaults_table_is_pinned(capsys):
    assert cli(['schedule', 'mmcv.EMAHook()', '--iters', '6']) == 0
    out = capsys.readouterr().out
    assert out.strip() == PINNED_MMCV_DEFAULTS.strip()
    # every row: min(0.0002, (1+t)/(100+t)) is 0.0002, computed independently in float64
    for t in range(6):
        assert min(0.0002, (1 + t) / (100 + t)) == 0.0002
        assert f'{t + 1}/{100 + t}={(1 + t) / (100 + t):.6g})' in out


def test_mmcv_defaults_warm_up_never_bites_over_a_long_run():
    steps = sched(dict(type='mmcv.EMAHook'), 20000)
    assert all(s.action == 'update' and s.momentum == 0.0002 for s in steps)
    assert all(min(0.0002, (1 + t) / (100 + t)) == 0.0002 for t in range(20000))


def test_mmcv_interval_power_and_gating():
    steps = sched(dict(type='mmcv.EMAHook', momentum=0.0002, interval=4), 12)
    for t, s in enumerate(steps):
        if t % 4 == 0:
            assert s.action == 'update'
            assert s.momentum == min(0.0002 ** 4, (1 + t) / (100 + t))
            assert s.momentum == pytest.approx(1.6e-15, rel=1e-12)
        else:
            assert (s.action, s.momentum) == ('skip', 0.0)
    notes = ' '.join(schedule_notes(classify(dict(type='mmcv.EMAHook', interval=4)), steps))
    assert 'momentum**interval' in notes and '[0, 4, 8]' in notes


def test_linear_warm_up_that_bites():
    # m=0.01, interval 1, warm_up 1000: (1+t)/(1000+t) < 0.01 while t < (0.01*1000-1)/(1-0.01)
    steps = sched(dict(type='LinearMomentumEMAHook', momentum=0.01, warm_up=1000), 20)
    bound = (0.01 * 1000 - 1) / (1 - 0.01)
    for t, s in enumerate(steps):
        expected = min(0.01, (1 + t) / (1000 + t))
        assert s.momentum == expected
        assert (s.momentum < 0.01) == (t < bound)
    note = ' '.join(schedule_notes(classify(dict(type='LinearMomentumEMAHook', momentum=0.01,
                                                 warm_up=1000)), steps))
    assert 'up to iteration 9' in note and math.ceil(bound) - 1 == 9


def test_mmdet_exp_and_gating():
    steps = sched(dict(type='ExpMomentumEMAHook', momentum=1e-4, interval=3, total_iter=50), 9)
    for t, s in enumerate(steps):
        if (t + 1) % 3 == 0:
            assert s.momentum == (1 - 1e-4) * math.exp(-(1 + t) / 50) + 1e-4
        else:
            assert s.action == 'skip'
    assert [s.iter for s in steps if s.action == 'update'] == [2, 5, 8]


def test_mmengine_tables_match_c9():
    # docs/runner-behaviour.md#mmengine-emahook verified table (momentum 0.5)
    a = sched(dict(type='mmengine.EMAHook', momentum=0.5), 4)
    assert [s.action for s in a] == ['copy', 'update', 'update', 'update']
    b = sched(dict(type='mmengine.EMAHook', momentum=0.5, interval=3), 6)
    assert [s.action for s in b] == ['copy', 'skip', 'skip', 'update', 'skip', 'skip']
    c = sched(dict(type='mmengine.EMAHook', momentum=0.5, begin_iter=3), 6)
    assert [s.action for s in c] == ['hold', 'hold', 'copy', 'update', 'update', 'update']
    d = sched(dict(type='mmengine.EMAHook', momentum=0.5, begin_epoch=2), 9, ipe=3)
    assert [s.action for s in d] == ['hold'] * 3 + ['copy'] + ['update'] * 5
    e = sched(dict(type='mmengine.EMAHook', momentum=0.5, begin_epoch=1), 3, ipe=3)
    assert e[0].action == 'copy'  # begin_epoch=1 behaves like 0
    with pytest.raises(ValueError, match='iters-per-epoch'):
        sched(dict(type='mmengine.EMAHook', begin_epoch=2), 3)


def test_mmengine_averaged_model_formulas():
    ann = sched(dict(type='EMAHook', ema_type='MomentumAnnealingEMA', momentum=0.01, gamma=10), 30)
    for s_, st in enumerate(ann[1:], start=1):
        assert st.momentum == max(0.01, 10 / (10 + s_))
    swa = sched(dict(type='EMAHook', ema_type='StochasticWeightAverage', interval=2), 7)
    for s_, st in enumerate(swa):
        if s_ and s_ % 2 == 0:
            assert st.momentum == 1 / float(s_ // 2 + 1)
    exp = sched(dict(type='EMAHook', ema_type='mmdet.ExpMomentumEMA', momentum=1e-3, gamma=7), 5)
    for s_, st in enumerate(exp[1:], start=1):
        assert st.momentum == (1 - 1e-3) * math.exp(-float(1 + s_) / 7) + 1e-3


@pytest.mark.parametrize('legacy,exact', [
    (dict(type='mmcv.EMAHook', momentum=0.01, interval=2, warm_up=30), 'LegacyMMCVEMA'),
    (dict(type='ExpMomentumEMAHook', momentum=1e-3, interval=2, total_iter=20),
     'LegacyExpMomentumEMA'),
    (dict(type='LinearMomentumEMAHook', momentum=0.1, interval=3, warm_up=500),
     'LegacyLinearMomentumEMA'),
])
def test_legacy_types_under_mmengine_have_the_legacy_schedule(legacy, exact):
    entry = dict(legacy, type='EMAHook', ema_type=exact)
    a, b = sched(legacy, 40), sched(entry, 40)
    assert [(s.action, s.momentum) for s in a] == [(s.action, s.momentum) for s in b]


class _W(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([v], dtype=torch.float64))


@pytest.mark.parametrize('entry', [
    dict(type='mmcv.EMAHook', momentum=0.3, interval=2, warm_up=4),
    dict(type='mmdet.ExpMomentumEMAHook', momentum=0.2, interval=2, total_iter=5),
    dict(type='mmdet.LinearMomentumEMAHook', momentum=0.5, warm_up=3),
    dict(type='mmengine.EMAHook', momentum=0.25, interval=2, begin_iter=2),
    dict(type='mmengine.EMAHook', ema_type='MomentumAnnealingEMA', momentum=0.05, gamma=3),
])
def test_schedule_matches_compat_hooks_on_float64_weights(entry):
    """Drive the real compat classes; read back m = (ema' - ema) / (p - ema)."""
    spec = classify(entry)
    steps = momentum_schedule(spec, 10)
    model = _W(10.0)
    runner = SimpleRunner(model, max_iters=10, max_epochs=1)
    cfg = {k: v for k, v in entry.items()}
    hook = HOOKS.build(cfg)
    hook.before_run(runner)
    if spec.generation == 'mmengine':
        hook.before_train(runner)
        read = lambda: hook.ema_model.module.w.item()  # noqa: E731
    else:
        read = lambda: model.ema_w.item()  # noqa: E731
    for t in range(10):
        before = read()
        p = 2.0 * t - 3.5  # never equal to the EMA
        model.w.data.fill_(p)
        runner.iter = t
        if spec.generation == 'mmengine':
            hook.after_train_iter(runner, batch_idx=t)
        else:
            hook.after_train_iter(runner)
        m = (read() - before) / (p - before)
        assert m == pytest.approx(steps[t].momentum, abs=1e-12), (t, steps[t])


def test_errors_name_the_problem(capsys):
    with pytest.raises(AmbiguousHookError):
        classify(dict(type='EMAHook', momentum=0.1))
    with pytest.raises(UnknownKeysError, match="'decay'"):
        classify(dict(type='ExpMomentumEMAHook', decay=0.9))
    with pytest.raises(UnknownKeysError, match="'warm_up'"):
        classify(dict(type='mmengine.EMAHook', warm_up=3))
    assert cli(['schedule', "dict(type='ExpMomentumEMAHook', decay=0.9)"]) == 1
    assert "'decay'" in capsys.readouterr().err
    assert cli(['schedule', 'missing_file.py']) == 1
    assert cli(['schedule', "dict(type='mmcv.EMAHook', momentum=1.5)"]) == 1
    assert 'momentum' in capsys.readouterr().err


def test_bare_emahook_shows_both_generations(capsys):
    assert cli(['schedule', "dict(type='EMAHook', momentum=0.5)", '--iters', '2']) == 0
    out = capsys.readouterr().out
    assert 'as mmcv: mmcv.EMAHook' in out and 'as mmengine: mmengine.EMAHook' in out
    assert 'copy' in out


def test_schedule_of_a_config_file(capsys):
    path = 'tests/fixtures/configs/mmdet2_yolox/yolox/yolox_tiny_8x8_300e_coco.py'
    assert cli(['schedule', path, '--iters', '3']) == 0
    out = capsys.readouterr().out
    assert 'custom_hooks[2]: mmdet.ExpMomentumEMAHook' in out
    assert f'{(1 - 1e-4) * math.exp(-1 / 2000) + 1e-4:>12.6g}' in out


def test_plot(tmp_path, capsys):
    out = tmp_path / 'm.png'
    rc = cli(['schedule', 'mmdet.ExpMomentumEMAHook()', '--iters', '50', '--plot', str(out)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert rc == 1
        assert "pip install 'compat-ema[plot]'" in capsys.readouterr().err
        assert not out.exists()
    else:
        assert rc == 0 and out.read_bytes()[:4] == b'\x89PNG'
        assert cli(['schedule', 'mmcv.EMAHook()', '--plot', str(out)]) == 1  # no --force
