"""Resume-equivalence checks: does interrupting and resuming reproduce the uninterrupted run?

:func:`check_resume` runs a scenario uninterrupted, then once per checkpoint
(the last one excepted) a fresh run resumed from it by the chosen path, and
compares bitwise the final model weights, the EMA state and the contents of
every checkpoint both runs wrote. Where upstream itself does not reproduce
(docs/runner-behaviour.md#resume-matrix, docs/runner-behaviour.md#mmcv-resume), the harness
reproduces upstream's behaviour, and :func:`expected_difference` names the reason; a report is
``consistent`` when the outcome matches that expectation.

:func:`resume_matrix` runs the check for each runner mode, EMA generation,
priority and resume path.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core.priority import get_priority
from ..core.torch_features import bits_view
from .mmcv_runner import EMASetupWarning
from .scenario import RESUME_PATHS, run_scenario

__all__ = ['ResumeCheck', 'ResumeReport', 'check_resume', 'expected_difference', 'resume_matrix',
           'GENERATION_HOOKS', 'tensors_equal']

#: a representative hook config per EMA generation
GENERATION_HOOKS: Dict[str, dict] = {
    'mmcv': dict(type='EMAHook', momentum=0.5, warm_up=4),
    'mmdet': dict(type='ExpMomentumEMAHook', momentum=0.3, total_iter=5),
    'mmengine': dict(type='EMAHook', momentum=0.5),
}


def tensors_equal(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Same keys in the same order, and every tensor equal bit for bit (dtype and shape too)."""
    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape:
                return False
            if not torch.equal(bits_view(x), bits_view(y)):
                return False
        elif isinstance(x, dict) and isinstance(y, dict):
            if not tensors_equal(x, y):
                return False
        elif x != y:
            return False
    return True


@dataclass
class ResumeCheck:
    """One interruption point: which checkpoint, and what matched bitwise."""

    checkpoint: str
    model_equal: bool
    ema_equal: bool
    checkpoints_equal: bool
    error: Optional[str] = None

    @property
    def equal(self) -> bool:
        return self.error is None and self.model_equal and self.ema_equal and self.checkpoints_equal


@dataclass
class ResumeReport:
    """The result of :func:`check_resume` for one setup."""

    framework: str
    runner: str
    hooks: List[dict]
    how: str
    expected_reason: Optional[str]
    checks: List[ResumeCheck] = field(default_factory=list)

    @property
    def all_equal(self) -> bool:
        return bool(self.checks) and all(c.equal for c in self.checks)

    @property
    def consistent(self) -> bool:
        """Equal where upstream reproduces; different (or failing) where it names a reason."""
        if self.expected_reason is None:
            return self.all_equal
        return bool(self.checks) and not any(c.equal for c in self.checks)

    def __str__(self) -> str:
        prio = ','.join(str(h.get('priority', 'NORMAL')) for h in self.hooks)
        status = 'equal' if self.all_equal else 'differs'
        why = f' ({self.expected_reason})' if self.expected_reason else ''
        return (f'{self.framework}/{self.runner} {self.hooks[0]["type"]}@{prio} resume={self.how}: '
                f'{status}{why}{"" if self.consistent else "  <-- UNEXPECTED"}')


#: where the reasons are documented
DOC = 'docs/runner-behaviour.md'


def expected_difference(framework: str, runner: str, hooks: Sequence[dict], how: str) -> Optional[str]:
    """Why upstream does not reproduce the uninterrupted run on this path, or None if it does."""
    if framework == 'mmengine':
        if how == 'load_from':
            return ('load_from without resume restarts the counters and the EMA (steps 0; model and '
                    f'EMA both get the EMA weights; {DOC}#mmengine-emahook)')
        return None
    if how == 'load_from':
        return f'load_from loads weights only; epoch/iter and the optimizer restart ({DOC}#mmcv-load-checkpoint)'
    if runner == 'iter':
        if how in ('hook', 'both'):
            return ('the hook resumes through IterBasedRunner.resume(map_location="default"), which '
                    f'needs CUDA ({DOC}#mmcv-resume)')
        return ('IterBasedRunner saves iter = completed - 1 and does not fast-forward the data, so '
                f'the resumed run repeats an iteration ({DOC}#mmcv-resume)')
    prios = [get_priority(h.get('priority', 'NORMAL')) for h in hooks]
    if how == 'runner':
        return ('the runner-level resume runs before the hook registers its ema_* buffers; the ema_* '
                f'keys are dropped and the EMA restarts from the loaded weights ({DOC}#resume-matrix)')
    if any(p >= 50 for p in prios):
        return ('the hook runs after CheckpointHook, so the checkpoint holds raw weights in the normal '
                f'keys; resuming swaps them in and the roles are inverted ({DOC}#resume-matrix)')
    return None


def _split_mmcv(state: Dict[str, torch.Tensor]):
    ema = {k: v for k, v in state.items() if k.startswith('ema_')}
    model = {k: v for k, v in state.items() if not k.startswith('ema_')}
    return model, ema


def _ckpt_view(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    meta = ckpt.get('meta', {})
    out: Dict[str, Any] = dict(keys=list(ckpt), epoch=meta.get('epoch'), iter=meta.get('iter'),
                               state_dict=dict(ckpt['state_dict']))
    if 'ema_state_dict' in ckpt:
        out['ema_state_dict'] = dict(ckpt['ema_state_dict'])
    if 'optimizer' in ckpt:
        out['optimizer'] = {str(k): v for k, v in ckpt['optimizer'].get('state', {}).items()}
    return out


def check_resume(framework: str = 'mmcv', runner: str = 'epoch', hooks: Optional[Sequence[dict]] = None,
                 how: Optional[str] = None, max_epochs: Optional[int] = None,
                 max_iters: Optional[int] = None, checkpoint: Any = 1,
                 workflow: Optional[Sequence] = None, root: Optional[str] = None,
                 map_location: Any = 'cpu', **kwargs) -> ResumeReport:
    """Uninterrupted vs interrupted-at-every-checkpoint-then-resumed, compared bitwise.

    Defaults: 3 epochs (epoch runner) or 6 iterations with checkpoints every 2
    (iter runner); ``how`` defaults to the path that works upstream ('hook' for
    mmcv/mmdet, 'resume' for mmengine). ``map_location`` is what an mmcv
    runner-level ``runner.resume`` gets ('cpu': the IterBasedRunner default needs
    CUDA; the hooks' own ``resume_from`` always uses the default). Extra keyword arguments go to
    :func:`~compat_ema.testing.scenario.run_scenario`.
    """
    hooks = [dict(h) for h in (hooks or [GENERATION_HOOKS['mmdet' if framework == 'mmcv' else 'mmengine']])]
    how = how or ('hook' if framework == 'mmcv' else 'resume')
    if how not in RESUME_PATHS[framework] or how == 'test_load':
        raise ValueError(f'how must be one of {RESUME_PATHS[framework]} (not test_load), got {how!r}')
    if runner == 'epoch' and max_epochs is None:
        max_epochs = 3
    if runner == 'iter' and max_iters is None:
        max_iters = 6
        if checkpoint == 1:
            checkpoint = dict(interval=2, by_epoch=False) if framework == 'mmengine' else 2
    root = tempfile.mkdtemp(prefix='compat-ema-resume-') if root is None else root
    common = dict(framework=framework, runner=runner, hooks=hooks, max_epochs=max_epochs,
                  max_iters=max_iters, checkpoint=checkpoint, workflow=workflow, **kwargs)
    report = ResumeReport(framework, runner, hooks, how, expected_difference(framework, runner, hooks, how))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', EMASetupWarning)
        full = run_scenario(work_dir=os.path.join(root, 'full'), **common)
        names = sorted(full.checkpoints, key=lambda n: (full.checkpoints[n]['meta']['iter'], n))
        for name in names[:-1]:
            res = run_scenario(work_dir=os.path.join(root, f'from_{name[:-4]}'), catch=True,
                               resume=dict(how=how, checkpoint=os.path.join(full.work_dir, name),
                                           map_location=map_location), **common)
            if res.error is not None:
                report.checks.append(ResumeCheck(name, False, False, False,
                                                 f'{type(res.error).__name__}: {res.error}'))
                continue
            if framework == 'mmcv':
                (m_full, e_full), (m_res, e_res) = _split_mmcv(full.final), _split_mmcv(res.final)
            else:
                m_full, e_full, m_res, e_res = full.final, full.ema or {}, res.final, res.ema or {}
            ckpts_equal = all(
                n in full.checkpoints and tensors_equal(_ckpt_view(full.checkpoints[n]), _ckpt_view(c))
                for n, c in res.checkpoints.items()) and bool(res.checkpoints)
            report.checks.append(ResumeCheck(name, tensors_equal(m_full, m_res),
                                             tensors_equal(e_full, e_res), ckpts_equal))
    return report


def resume_matrix(root: Optional[str] = None, runners: Sequence[str] = ('epoch', 'iter'),
                  generations: Sequence[str] = ('mmcv', 'mmdet', 'mmengine'),
                  priorities: Sequence[Any] = (49, 'NORMAL')) -> List[ResumeReport]:
    """:func:`check_resume` for every runner mode x generation x priority x resume path."""
    root = tempfile.mkdtemp(prefix='compat-ema-matrix-') if root is None else root
    reports = []
    for runner in runners:
        for gen in generations:
            framework = 'mmengine' if gen == 'mmengine' else 'mmcv'
            for prio in (priorities if framework == 'mmcv' else ('NORMAL',)):
                hook = dict(GENERATION_HOOKS[gen], priority=prio)
                for how in RESUME_PATHS[framework]:
                    if how in ('test_load',):
                        continue
                    sub = os.path.join(root, f'{runner}_{gen}_{prio}_{how}')
                    reports.append(check_resume(framework, runner, [hook], how, root=sub))
    return reports
