"""``inspect``: describe a checkpoint of any generation without running pickled code.

No upstream counterpart. Loads with inert placeholders for anything outside the
allowlist (:mod:`.safe_load`), so even a hostile file can be described; such
references are listed as suspicious and make :attr:`Report.safe` false.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core.torch_features import storage_nbytes, storage_of
from . import gan
from .errors import CheckpointError
from .formats import COMPAT_KEY, parse
from .safe_load import detect_serialization, load, opaque_objects

__all__ = ['Report', 'inspect', 'verdicts']

_SERIALIZATION = {'zip': 'zip (torch >= 1.6 default)',
                  'legacy': 'legacy non-zip pickle stream (torch < 1.6 or '
                            '_use_new_zipfile_serialization=False)',
                  'legacy-tar': 'legacy tar archive (torch < 0.4)'}


@dataclass
class Report:
    """What :func:`inspect` found; :meth:`format` renders it for people."""

    path: str
    serialization: str
    generation: Optional[str] = None
    evidence: List[str] = field(default_factory=list)
    top_level_keys: List[str] = field(default_factory=list)
    meta_epoch: Optional[int] = None
    meta_iter: Optional[int] = None
    iters_done: Optional[int] = None
    by_epoch: Optional[bool] = None
    ema_side: Optional[str] = None
    ema_keys: Dict[str, str] = field(default_factory=dict)
    steps: Optional[int] = None
    num_tensors: int = 0
    num_bytes: int = 0
    placeholders: List[str] = field(default_factory=list)
    suspicious: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: tied weights: alias key -> the key the hook tracks
    aliases: Dict[str, str] = field(default_factory=dict)
    #: what ``convert --to T`` / ``export-ema`` would do with this file and the same options:
    #: ``{'convert mmengine': {'verdict': 'exact'|'warning'|'refused', 'reasons': [...]}, ...}``
    verdicts: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        """True when the default (restricted) load accepts the file."""
        return not self.suspicious

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (``compat-ema inspect --json``), with ``safe`` added."""
        d = asdict(self)
        d['safe'] = self.safe
        return d

    def format(self) -> str:
        """The report as text, one fact per line (``compat-ema inspect``)."""
        out = [f'file: {self.path}', f'serialization: {self.serialization}']
        if self.generation:
            out.append(f'generation: {self.generation}')
        out += [f'  evidence: {e}' for e in self.evidence]
        if self.top_level_keys:
            out.append(f'top-level keys: {self.top_level_keys}')
        if self.meta_epoch is not None:
            runner = {True: 'epoch-based', False: 'iteration-based', None: '?'}[self.by_epoch]
            out.append(f'meta: epoch {self.meta_epoch}, iter {self.meta_iter} ({runner}; '
                       f'{self.iters_done} iterations completed)')
        if self.ema_side:
            out.append(f'EMA weights: {self.ema_side}')
        out += [f'tied: {a} is {p}' for a, p in self.aliases.items()]
        if self.steps is not None:
            out.append(f'steps: {self.steps}')
        if self.ema_keys:
            out.append(f'EMA keys ({len(self.ema_keys)}):')
            out += [f'  {k} <- {v}' for k, v in self.ema_keys.items()]
        out.append(f'tensors: {self.num_tensors} ({self.num_bytes} bytes)')
        if self.placeholders:
            out.append(f'allowlisted objects read as inert placeholders: '
                       f'{sorted(set(self.placeholders))}')
        for s in self.suspicious:
            out.append(f'SUSPICIOUS: {s}')
        for p in self.problems:
            out.append(f'PROBLEM: {p}')
        out += [f'note: {n}' for n in self.notes]
        groups: Dict[str, List[str]] = {}   # one line per distinct verdict
        for what, v in self.verdicts.items():
            why = f': {v["reasons"][0]}' if v['reasons'] else ''
            more = f' (+{len(v["reasons"]) - 1} more)' if len(v['reasons']) > 1 else ''
            groups.setdefault(f'{v["verdict"].upper()}{why}{more}', []).append(what)
        for verdict, whats in groups.items():
            out.append(f'{", ".join(whats)}: {verdict}')
        out.append('safe to load: ' + ('yes' if self.safe else
                                       'NO (the default load refuses it; nothing was executed)'))
        return '\n'.join(out)


def _tensors(obj, seen=None):
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen)


def inspect(path, trust: bool = False, model_keys: Optional[Sequence[str]] = None,
            priority=None, by_epoch: Optional[bool] = None) -> Report:
    """Describe the checkpoint at ``path``: generation (with evidence), EMA keys and side,
    ``steps``, meta epoch/iter, serialization format, anything suspicious.

    Raises :class:`CheckpointError` only when the file cannot be read at all
    (empty, truncated, not a torch file); content problems go in the report.
    """
    path = Path(path)
    fmt = detect_serialization(path)
    rep = Report(path=str(path), serialization=_SERIALIZATION.get(fmt, fmt))
    refused: List[str] = []
    ckpt = load(path, trust=trust, opaque=True, _refused=refused)
    found = opaque_objects(ckpt)
    for where, name, allowed in found:
        if allowed:
            rep.placeholders.append(name)
        else:
            rep.suspicious.append(f'{where}: references {name} (refused by the default load)')
    for name in sorted(set(refused) - {n for _, n, _ in found}):
        rep.suspicious.append(f'references {name} (refused by the default load)')
    if isinstance(ckpt, dict):
        rep.top_level_keys = [str(k) for k in ckpt]
    storages = {}
    for t in _tensors(ckpt):
        rep.num_tensors += 1
        try:
            storages[storage_of(t).data_ptr()] = storage_nbytes(t)  # any torch >= 1.8
        except Exception:  # pragma: no cover
            pass
    rep.num_bytes = sum(storages.values())
    layout = gan.detect(ckpt, path.resolve().name)
    if layout is not None:  # mmedit 0.x / mmagic 1.x: the EMA is a sibling sub-module
        rep.generation, rep.evidence, rep.notes = layout.family, layout.evidence, layout.notes
        rep.iters_done, rep.by_epoch = layout.iters_done, False
        meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
        rep.meta_epoch, rep.meta_iter = meta.get('epoch'), meta.get('iter')
        form = '.module.*' if layout.averaged_model else '.*'
        rep.ema_side = ', '.join(f'{e}{form} (EMA of {s}.*)' for e, s in layout.pairs.items())
        if layout.steps:
            rep.steps = min(layout.steps.values())
        return rep
    # mmcv's latest.pth is a link to epoch_N.pth / iter_N.pth: the target's name is evidence
    opts = dict(model_keys=model_keys, priority=priority, by_epoch=by_epoch,
                filename=path.resolve().name)
    try:
        ck = parse(ckpt, need_counters=False, unknown_side_ok=True, **opts)
    except CheckpointError as exc:
        rep.problems.append(str(exc))
        return rep
    rep.verdicts = verdicts(ckpt, **opts)
    rep.aliases = dict(ck.aliases)
    rep.generation = ck.generation
    rep.evidence = ck.evidence
    rep.meta_epoch, rep.meta_iter = ck.meta.get('epoch'), ck.meta.get('iter')
    rep.iters_done, rep.by_epoch = ck.iters_done, ck.by_epoch
    rep.steps = ck.steps
    if ck.generation == 'mmengine':
        rep.ema_side = ('state_dict (ema_state_dict holds steps + module.* raw weights)'
                        if ck.ema is not None else 'none (no ema_state_dict)')
        if ck.ema is not None and ck.steps != ck.iters_done:
            rep.notes.append(f'steps {ck.steps} != iterations completed {ck.iters_done} '
                             '(begin_iter/begin_epoch, or load_from without resume)')
    else:
        rep.ema_keys = dict(ck.ema_keys)
        if ck.ema is None:
            rep.ema_side = 'none (no ema_* buffers)'
        elif ck.side_unknown:
            rep.ema_side = ('UNKNOWN (nothing in the file says whether the model keys or the '
                            'ema_* buffers hold the EMA; pass --source-priority)')
        else:
            rep.ema_side = ('model keys (ema_* buffers hold the raw weights)' if ck.ema_in_params
                            else 'ema_* buffers (model keys hold the raw weights)')
    if COMPAT_KEY in ck.meta:
        src = ck.meta[COMPAT_KEY].get('source') if isinstance(ck.meta[COMPAT_KEY], dict) else '?'
        rep.notes.append(f'converted by compat_ema from {src} (meta.{COMPAT_KEY} carries the '
                         'original layout)')
    bad = [k for k, t in list(ck.raw.items()) + list((ck.ema or {}).items())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        rep.problems.append(f'non-finite values (NaN/Inf) in {sorted(set(bad))}')
    rep.notes += ck.notes
    if ck.bare:
        rep.notes.append('a state dict, not a runner checkpoint (no meta epoch/iter): '
                         'export-ema reads it, convert refuses it')
    return rep


def verdicts(ckpt: Any, **opts) -> Dict[str, Dict[str, Any]]:
    """What ``convert --to T`` (each T) and ``export-ema`` would do with the loaded ``ckpt``
    and these source options, without writing anything: ``exact`` (exit 0, no warning),
    ``warning`` (exit 0 with warnings; ``--strict`` refuses) or ``refused`` (exit 1)."""
    from .convert import TARGETS, build
    from .export import export_warnings
    out: Dict[str, Dict[str, Any]] = {}
    for what in [f'convert --to {t}' for t in TARGETS] + ['export-ema']:
        try:
            ck = parse(ckpt, need_counters=what != 'export-ema', **opts)
            if what == 'export-ema':
                if ck.ema is None:
                    raise CheckpointError('no EMA weights in this checkpoint')
                warns = export_warnings(ck)
            else:
                build(ck, what.rsplit(' ', 1)[-1])
                warns = ck.warnings
        except CheckpointError as exc:
            out[what] = {'verdict': 'refused', 'reasons': [str(exc)]}
            continue
        out[what] = {'verdict': 'warning' if warns else 'exact', 'reasons': list(warns)}
    return out
