"""The registry: scopes, config dicts as users write them, clear errors."""
from __future__ import annotations

import pytest

from compat_ema import mmcv, mmdet, mmengine
from compat_ema.registry import HOOKS, MODELS, build_hook, default_scope


def test_same_name_two_generations_scope_decides():
    assert type(HOOKS.build(dict(type='EMAHook'), scope='mmcv')) is mmcv.EMAHook
    assert type(HOOKS.build(dict(type='EMAHook'), scope='mmengine')) is mmengine.EMAHook
    assert type(HOOKS.build(dict(type='mmcv.EMAHook'))) is mmcv.EMAHook
    with default_scope('mmengine'):
        assert type(HOOKS.build(dict(type='EMAHook'))) is mmengine.EMAHook


def test_ambiguous_name_lists_scopes():
    with pytest.raises(KeyError, match=r"ambiguous.*\['mmcv', 'mmengine'\]"):
        HOOKS.build(dict(type='EMAHook'))


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError) as info:
        HOOKS.build(dict(type='EMAHok'), scope='mmcv')
    assert 'EMAHok' in str(info.value) and 'mmdet.ExpMomentumEMAHook' in str(info.value)


def test_priority_popped_and_set():
    hook = build_hook(dict(type='mmdet.ExpMomentumEMAHook', momentum=0.0001, priority=49))
    assert isinstance(hook, mmdet.ExpMomentumEMAHook) and hook.priority == 49
    assert hook.momentum == 0.0001


def test_mmdet_scope_inherits_mmcv_names():
    assert HOOKS.get('mmdet.EMAHook') is mmcv.EMAHook
    assert type(HOOKS.build(dict(type='EMAHook'), scope='mmdet')) is mmcv.EMAHook


def test_ema_type_resolution_and_user_types():
    hook = HOOKS.build(dict(type='EMAHook', ema_type='MomentumAnnealingEMA', gamma=10),
                       scope='mmengine')
    assert hook.ema_cfg == dict(type='MomentumAnnealingEMA', gamma=10)

    class MyAverage(mmengine.ExponentialMovingAverage):
        """A user type."""
    MODELS.register_module(scope='mmengine', module=MyAverage)
    assert MODELS.get('MyAverage', scope='mmengine') is MyAverage
    with pytest.raises(KeyError, match='already registered'):
        MODELS.register_module(scope='mmengine', module=type('MyAverage', (), {}))


def test_build_argument_errors_name_the_class():
    with pytest.raises(TypeError, match='EMAHook'):
        HOOKS.build(dict(type='EMAHook', bogus=1), scope='mmcv')
    with pytest.raises(KeyError, match='type'):
        HOOKS.build(dict(momentum=1), scope='mmcv')
    with pytest.raises(KeyError, match='unknown scope'):
        HOOKS.build(dict(type='EMAHook'), scope='nope')


def test_root_registration_needs_a_scope():
    with pytest.raises(ValueError, match='scope'):
        HOOKS.register_module(module=type('X', (), {}))
