"""Undoing mmcv/mmdet's ``'ema_' + name.replace('.', '_')`` buffer names (docs/upstream-quirks.md
quirks 7)."""
from __future__ import annotations

import pytest

from compat_ema.checkpoint import CheckpointError, ema_name, match_ema_keys


def test_ema_name_rule():
    assert ema_name('backbone.layer1.0.conv1.weight') == 'ema_backbone_layer1_0_conv1_weight'


def test_real_layout_pairs_in_model_order():
    keys = ['ema_fc_weight', 'ema_fc_bias', 'fc.weight', 'fc.bias', 'bn.running_mean']
    model, pairs = match_ema_keys(keys)
    assert model == ['fc.weight', 'fc.bias', 'bn.running_mean']
    assert list(pairs.items()) == [('fc.weight', 'ema_fc_weight'), ('fc.bias', 'ema_fc_bias')]


def test_model_key_that_itself_starts_with_ema():
    """A top-level parameter named ``ema_scale`` gets the buffer ``ema_ema_scale``."""
    keys = ['ema_scale', 'ema_ema_scale', 'fc.weight', 'ema_fc_weight']
    model, pairs = match_ema_keys(keys)
    assert model == ['ema_scale', 'fc.weight']
    assert pairs == {'ema_scale': 'ema_ema_scale', 'fc.weight': 'ema_fc_weight'}


def test_explicit_model_keys():
    keys = ['ema_a_b', 'a.b', 'ema_c']
    model, pairs = match_ema_keys(keys, model_keys=['a.b', 'ema_c'])
    assert model == ['a.b', 'ema_c'] and pairs == {'a.b': 'ema_a_b'}
    with pytest.raises(CheckpointError, match=r"model keys missing from state_dict: \['x'\]"):
        match_ema_keys(keys, model_keys=['a.b', 'x'])


def test_ambiguous_and_orphan():
    with pytest.raises(CheckpointError, match=r"ambiguous EMA key 'ema_a_b_c'"):
        match_ema_keys(['a.b_c', 'a_b.c', 'ema_a_b_c'])
    with pytest.raises(CheckpointError, match=r"EMA keys \['ema_zz'\] match no model key"):
        match_ema_keys(['fc.weight', 'ema_zz'])
    with pytest.raises(CheckpointError, match='duplicate state_dict keys'):
        match_ema_keys(['fc.weight', 'fc.weight'])
