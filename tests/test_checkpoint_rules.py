"""Conversions that are right or refuse (issue 16): tied weights, an EMA side nothing decides,
one rule per question, warnings and ``--strict``, and ``inspect --json`` verdicts.

Expected values come from how each file was built here (which tensor went where) or from the
manifest of the real reference files (``raw_side`` observed in the real run), never from the
code under test.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from compat_ema import checkpoint as C
from compat_ema.cli import main as cli
from compat_ema.core.torch_features import bits_view
from helpers import torch_load

REF = Path(__file__).resolve().parents[1] / 'reference' / 'checkpoints'
MANIFEST = json.loads((REF / 'manifest.json').read_text())['files']


def bits(t):
    return t.dtype, tuple(t.shape), bits_view(t.detach().reshape(-1).contiguous()).tolist()


def load(p):
    return torch_load(p, map_location='cpu', weights_only=True)


def ema_name(k):
    return 'ema_' + k.replace('.', '_')


def ref_sides(name):
    """(raw, ema) of the tracked keys of a real legacy file, by the manifest's observed side."""
    sd = load(REF / name)['state_dict']
    tracked = [k for k in MANIFEST[name]['model_keys'] if ema_name(k) in sd]
    a = {k: sd[k] for k in tracked}
    b = {k: sd[ema_name(k)] for k in tracked}
    return (a, b) if MANIFEST[name]['raw_side'] == 'params' else (b, a)


# ------------------------------------------------------------------ 1. tied weights
def _tied_legacy(swapped: bool, mmdet_buffers: bool = False):
    """An mmcv-layout file of a model whose ``head.weight`` IS ``embed.weight`` (one storage),
    as mmcv EMAHook saves it: one ema_* buffer, named after the first name."""
    g = torch.Generator().manual_seed(0)
    raw_w, ema_w = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    raw_b, ema_b = torch.randn(3, generator=g), torch.randn(3, generator=g)
    shared = (ema_w if swapped else raw_w).clone()
    sd = OrderedDict()
    sd['ema_embed_weight'] = (raw_w if swapped else ema_w).clone()
    sd['ema_head_bias'] = (raw_b if swapped else ema_b).clone()
    if mmdet_buffers:
        sd['ema_head_weight'] = sd['ema_embed_weight'].clone()
    sd['embed.weight'] = shared
    sd['head.weight'] = shared
    sd['head.bias'] = (ema_b if swapped else raw_b).clone()
    ck = {'meta': {'epoch': 1, 'iter': 3}, 'state_dict': sd, 'optimizer': {}}
    return ck, dict(w=raw_w, b=raw_b), dict(w=ema_w, b=ema_b)


@pytest.mark.parametrize('priority', ['NORMAL', 49])
def test_tied_weights_to_mmengine_keep_the_ema_under_both_names(tmp_path, priority):
    ck, raw, ema = _tied_legacy(swapped=priority == 49)
    src, out = tmp_path / 'epoch_1.pth', tmp_path / 'e.pth'
    torch.save(ck, src)
    C.convert(src, out, to='mmengine', source_priority=priority)
    got = load(out)
    sd, esd = got['state_dict'], got['ema_state_dict']
    for name in ('embed.weight', 'head.weight'):   # mmengine's load: the later key wins
        assert bits(sd[name]) == bits(ema['w']), name
        assert bits(esd['module.' + name]) == bits(raw['w']), name
    assert sd['embed.weight'].data_ptr() == sd['head.weight'].data_ptr()   # still one tensor
    exp = tmp_path / 'w.pth'
    C.export_ema(src, exp, priority=priority)
    w = load(exp)
    assert bits(w['head.weight']) == bits(w['embed.weight']) == bits(ema['w'])
    assert bits(w['head.bias']) == bits(ema['b'])


def test_tied_weights_mmengine_to_mmcv_one_buffer_and_one_value(tmp_path):
    g = torch.Generator().manual_seed(1)
    ema_w, raw_w = torch.randn(2, 2, generator=g), torch.randn(2, 2, generator=g)
    sd = OrderedDict([('embed.weight', ema_w), ('head.weight', ema_w)])
    esd = OrderedDict([('steps', torch.tensor(3)), ('module.embed.weight', raw_w),
                       ('module.head.weight', raw_w)])
    src, out = tmp_path / 'epoch_1.pth', tmp_path / 'l.pth'
    torch.save({'meta': {'epoch': 1, 'iter': 3}, 'state_dict': sd, 'ema_state_dict': esd}, src)
    C.convert(src, out, to='mmcv')
    got = load(out)['state_dict']
    # mmcv's EMAHook tracks named_parameters(): the tied tensor once, under its first name
    assert [k for k in got if k.startswith('ema_')] == ['ema_embed_weight']
    # epoch target: parameters hold the EMA, ema_* the raw weights (resume_from swaps back)
    assert bits(got['embed.weight']) == bits(got['head.weight']) == bits(ema_w)
    assert bits(got['ema_embed_weight']) == bits(raw_w)


def test_tied_weights_mmdet_buffers_that_disagree_are_refused(tmp_path):
    ck, _, _ = _tied_legacy(swapped=True, mmdet_buffers=True)
    ck['state_dict']['ema_head_weight'] = ck['state_dict']['embed.weight'].clone()
    src = tmp_path / 'epoch_1.pth'
    torch.save(ck, src)
    with pytest.raises(C.CheckpointError, match='tied weights.*disagree'):
        C.convert(src, tmp_path / 'e.pth', to='mmengine', source_priority=49)
    assert not (tmp_path / 'e.pth').exists()


# ------------------------------------------------------------------ 2. which side
def test_unknown_side_is_refused_naming_source_priority(tmp_path, capsys):
    """The real mmcv EMAHook priority-49 file holds no evidence of its side."""
    src, out = REF / 'mmcv_epoch_p49.pth', tmp_path / 'e.pth'
    for cmd in (['convert', str(src), str(out), '--to', 'mmengine'],
                ['export-ema', str(src), str(out)]):
        assert cli(cmd) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert '--source-priority' in err and 'meta.config' in err
        assert not out.exists()
    assert cli(['inspect', str(src)]) == 0
    text = capsys.readouterr().out
    assert 'EMA weights: UNKNOWN' in text
    assert 'convert --to mmengine, export-ema: REFUSED' in text


def _with_config(name, config, tmp_path):
    ck = load(REF / name)
    ck['meta']['config'] = config
    path = tmp_path / name
    torch.save(ck, path)
    return path


@pytest.mark.parametrize('name,config,why', [
    ('mmcv_epoch_p49.pth',
     "custom_hooks = [dict(type='EMAHook', momentum=0.2, warm_up=1, priority=49)]\n",
     "meta.config: EMAHook priority=49"),
    ('mmcv_epoch_normal.pth',     # no priority key: mmcv's register_custom_hooks uses NORMAL
     "runner = dict(type='EpochBasedRunner', max_epochs=2)\n"
     "custom_hooks = [dict(type='NumClassCheckHook'),\n"
     "                dict(type='EMAHook', momentum=0.2, warm_up=1)]\n",
     "meta.config: EMAHook no priority: NORMAL"),
])
def test_side_from_the_config_in_meta(tmp_path, name, config, why):
    src, out = _with_config(name, config, tmp_path), tmp_path / 'e.pth'
    res = C.convert(src, out, to='mmengine')
    assert any(why in e for e in res.evidence), res.evidence
    raw, ema = ref_sides(name)
    got = load(out)
    for k in raw:
        assert bits(got['state_dict'][k]) == bits(ema[k]), k
        assert bits(got['ema_state_dict']['module.' + k]) == bits(raw[k]), k


@pytest.mark.parametrize('name', ['mmdet_epoch_normal_skip0.pth', 'mmdet_epoch_p49_skip0.pth'])
def test_side_from_the_step_counters(name):
    rep = C.inspect(REF / name)
    assert any('step counter bn.num_batches_tracked' in e for e in rep.evidence)
    swapped = MANIFEST[name]['raw_side'] == 'ema_keys'
    assert rep.ema_side.startswith('model keys' if swapped else 'ema_* buffers')


def test_side_from_the_runner_kind():
    rep = C.inspect(REF / 'mmcv_iter_normal.pth')
    assert any('IterBasedRunner never swaps' in e for e in rep.evidence)
    assert rep.verdicts['convert --to mmengine']['verdict'] == 'exact'


def test_side_from_equal_values(tmp_path):
    """Before the first update both sides are equal: the side does not matter, so no refusal."""
    ck = load(REF / 'mmcv_epoch_p49.pth')
    sd = ck['state_dict']
    for k in MANIFEST['mmcv_epoch_p49.pth']['param_keys']:
        sd[ema_name(k)] = sd[k].clone()
    src = tmp_path / 'epoch_2.pth'
    torch.save(ck, src)
    res = C.convert(src, tmp_path / 'e.pth', to='mmengine')
    assert any('bitwise equal' in e for e in res.evidence)


def test_side_from_compat_emas_own_record(tmp_path):
    mid, back = tmp_path / 'e.pth', tmp_path / 'epoch_2.pth'
    C.convert(REF / 'mmcv_epoch_p49.pth', mid, to='mmengine', source_priority=49)
    C.convert(mid, back, to='mmcv', target_priority=49)
    rep = C.inspect(back)
    assert rep.ema_side.startswith('model keys')
    assert any('compat_ema wrote it so' in e for e in rep.evidence)


def test_given_priority_still_decides():
    rep = C.inspect(REF / 'mmcv_epoch_p49.pth', priority=49)
    assert rep.ema_side.startswith('model keys')
    assert rep.verdicts['convert --to mmengine']['verdict'] == 'exact'


# ------------------------------------------------------------------ 4. one rule per question
def test_same_layout_is_nothing_to_convert(tmp_path):
    out = tmp_path / 'x.pth'
    for name, to in (('mmengine_epoch_ema.pth', 'mmengine'), ('mmdet_epoch_p49_skip0.pth', 'mmdet'),
                     ('mmcv_iter_normal.pth', 'mmcv')):
        with pytest.raises(C.CheckpointError, match='nothing to convert'):
            C.convert(REF / name, out, to=to)
        assert not out.exists()
    # a real change of layout is still a conversion
    C.convert(REF / 'mmdet_epoch_p49_skip0.pth', out, to='mmdet', target_priority='NORMAL')


def test_no_ema_state_gets_the_same_note_both_ways(tmp_path):
    ck = load(REF / 'mmcv_epoch_normal.pth')
    ck['state_dict'] = OrderedDict((k, v) for k, v in ck['state_dict'].items()
                                   if not k.startswith('ema_'))
    plain = tmp_path / 'epoch_2.pth'
    torch.save(ck, plain)
    a = C.convert(plain, tmp_path / 'a.pth', to='mmengine')
    b = C.convert(REF / 'mmengine_epoch_noema.pth', tmp_path / 'b.pth', to='mmcv')
    note = [n for n in a.notes if n.startswith('no EMA state')]
    assert note and note == [n for n in b.notes if n.startswith('no EMA state')]
    assert not a.warnings and not b.warnings


def test_a_bare_state_dict_is_not_a_runner_checkpoint(tmp_path):
    sd = load(REF / 'mmdet_epoch_p49_skip0.pth')['state_dict']
    flat, wrapped = tmp_path / 'flat.pth', tmp_path / 'wrapped.pth'
    torch.save(sd, flat)
    torch.save({'state_dict': sd, 'meta': {'mmcv_version': '1.6.0'}}, wrapped)
    for src in (flat, wrapped):
        with pytest.raises(C.CheckpointError, match='a state dict, not a runner checkpoint'):
            C.convert(src, tmp_path / 'e.pth', to='mmengine')
        # export-ema just works (the stale num_batches_tracked copy decides the side)
        out = tmp_path / f'{src.stem}_ema.pth'
        C.export_ema(src, out)
        raw, ema = ref_sides('mmdet_epoch_p49_skip0.pth')
        got = load(out)
        assert list(got) == MANIFEST['mmdet_epoch_p49_skip0.pth']['model_keys']
        for k in ema:
            assert bits(got[k]) == bits(ema[k]), k
    rep = C.inspect(flat)
    assert rep.verdicts['convert --to mmengine']['verdict'] == 'refused'
    assert rep.verdicts['export-ema']['verdict'] == 'exact'


def test_bare_state_dict_without_evidence_needs_the_priority(tmp_path):
    sd = load(REF / 'mmcv_epoch_p49.pth')['state_dict']
    flat = tmp_path / 'flat.pth'
    torch.save(sd, flat)
    with pytest.raises(C.CheckpointError, match='--source-priority'):
        C.export_ema(flat, tmp_path / 'w.pth')
    C.export_ema(flat, tmp_path / 'w.pth', priority=49)
    _, ema = ref_sides('mmcv_epoch_p49.pth')
    got = load(tmp_path / 'w.pth')
    assert all(bits(got[k]) == bits(ema[k]) for k in ema)


# ------------------------------------------------------------------ warnings, --strict, verdicts
def test_warnings_are_printed_and_strict_refuses(tmp_path, capsys):
    src, out = REF / 'mmengine_epoch_ema.pth', tmp_path / 'l.pth'
    assert cli(['convert', str(src), str(out), '--to', 'mmcv', '-q']) == 0
    assert 'WARNING: parameter keys GUESSED' in capsys.readouterr().out
    out.unlink()
    assert cli(['convert', str(src), str(out), '--to', 'mmcv', '--strict']) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and '--strict' in err and 'GUESSED' in err
    assert not out.exists()
    keys = tmp_path / 'params.txt'
    keys.write_text('\n'.join(MANIFEST['mmengine_epoch_ema.pth']['param_keys']))
    assert cli(['convert', str(src), str(out), '--to', 'mmcv', '--strict',
                '--param-keys', str(keys)]) == 0


def test_inspect_json_has_the_same_verdicts(capsys):
    assert cli(['inspect', str(REF / 'mmengine_epoch_ema.pth'), '--json']) == 0
    v = json.loads(capsys.readouterr().out)['verdicts']
    assert v['convert --to mmcv']['verdict'] == 'warning'
    assert 'GUESSED' in v['convert --to mmcv']['reasons'][0]
    assert v['convert --to mmengine']['verdict'] == 'refused'
    assert v['export-ema']['verdict'] == 'exact'
    assert cli(['inspect', str(REF / 'mmcv_epoch_p49.pth'), '--json']) == 0
    d = json.loads(capsys.readouterr().out)
    assert d['ema_side'].startswith('UNKNOWN')
    assert all(d['verdicts'][w]['verdict'] == 'refused' for w in d['verdicts'])
    assert '--source-priority' in d['verdicts']['export-ema']['reasons'][0]


def test_latest_link_names_its_target(tmp_path):
    """mmcv's CheckpointHook links latest.pth to iter_N.pth: the target's name is evidence of the
    runner kind (and an IterBasedRunner never swaps)."""
    src = tmp_path / 'iter_4.pth'
    src.write_bytes((REF / 'mmcv_iter_normal.pth').read_bytes())
    ck = load(src)
    ck['meta'].pop('hook_msgs', None)
    torch.save(ck, src)
    (tmp_path / 'latest.pth').symlink_to(src)
    rep = C.inspect(tmp_path / 'latest.pth')
    assert rep.by_epoch is False and rep.ema_side.startswith('ema_* buffers')
