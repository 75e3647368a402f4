"""``compat-ema doctor``: tell users when their EMA setup loses EMA history.

The real runners (docs/runner-behaviour.md) make EMA resume depend on details users do
not see: the hook's priority relative to ``CheckpointHook`` (50), which
``resume_from`` is set, and the runner type. :func:`diagnose` reads a config
(an mmdet 2.x / mmcv style dict, an mmengine style dict, or a single hook
dict) and returns :class:`Finding` rows; :func:`diagnose_runner` does the same
for a harness runner just before ``run()`` (the harness turns them into
:class:`EMASetupWarning`; numbers never change).

Codes (each with the anchors of docs/runner-behaviour.md that show the behaviour):

* ``E101`` runner-level ``resume_from`` without the hook's ``resume_from``:
  the ``ema_*`` keys are dropped as unexpected and the EMA restarts from the
  loaded weights (#resume-matrix, docs/upstream-quirks.md#mmdet-resume);
* ``E102`` hook ``resume_from`` with the hook at priority >= 50 (NORMAL, after
  CheckpointHook): raw and EMA weights come back with their roles inverted
  (#mmcv-emahook, #resume-matrix);
* ``E103`` EMA hook at priority >= 50 under the epoch runner: checkpoints hold
  raw weights under the normal keys and EMA under ``ema_*`` (#mmdet-checkpoint, info);
* ``E104`` IterBasedRunner: the EMA is never swapped in (#mmcv-emahook, mmcv#2195);
* ``E105`` IterBasedRunner with a resume: one iteration is repeated and the
  data are not fast-forwarded; the hook's ``resume_from`` needs CUDA (#mmcv-resume);
* ``E106`` mmcv ``EMAHook`` with ``interval > 1``: the momentum becomes
  ``momentum ** interval`` (#mmcv-emahook, docs/upstream-quirks.md#momentum-power-interval);
* ``E201`` mmengine ``load_from`` without ``resume``: the EMA restarts
  (``steps`` 0) and the model gets the EMA weights (#mmengine-emahook, info);
* ``E202`` mmengine ``train()`` then ``test()`` on one runner: the EMA model is
  rebuilt from the raw weights before testing (#mmengine-emahook).

GAN/restoration family (mmedit 0.x / mmagic 1.x, docs/gan-family.md):

* ``E301`` mmagic ``ExponentialMovingAverageHook`` with ``interp_cfg`` momentum
  > 0.5, or mmagic ``model.ema_config`` momentum > 0.5: mmagic's momentum is the
  weight of the *new* weights, so this is an un-flipped mmedit 0.x value and the
  EMA follows the generator almost exactly;
* ``E302`` mmedit/mmagic hook with ``interval <= 0`` (the default is -1): the
  EMA stops changing at ``start_iter`` (info).
"""
from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .core.priority import get_priority

__all__ = ['Finding', 'diagnose', 'diagnose_runner', 'load_config', 'format_findings',
           'EMASetupWarning', 'EMAGuardHook']

_MMCV_TYPES = ('ExpMomentumEMAHook', 'LinearMomentumEMAHook', 'BaseEMAHook')
_MMENGINE_KEYS = ('ema_type', 'update_buffers', 'begin_iter', 'begin_epoch', 'strict_load', 'gamma')
_CHECKPOINT_PRIORITY = 50


#: where the behaviour behind each finding is documented (``Finding.ref`` holds its anchors)
DOC = 'docs/runner-behaviour.md'


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``code``, ``severity`` ('warning' or 'info'), ``message``, ``ref`` (the
    anchors of :data:`DOC` that show the behaviour, space-separated)."""

    code: str
    severity: str
    message: str
    ref: str

    def __str__(self) -> str:
        where = ', '.join(a if '/' in a else f'{DOC}#{a}' for a in self.ref.split())
        return f'[{self.code} {self.severity}] {self.message} (see {where})'


def _short_type(cfg: Dict[str, Any]) -> str:
    return str(cfg.get('type', '')).rpartition('.')[2]


def _is_ema(cfg: Dict[str, Any]) -> bool:
    return 'EMA' in _short_type(cfg)


def _generation(config: Dict[str, Any], hooks: Sequence[Dict[str, Any]]) -> str:
    if any(_short_type(h) in _MMCV_TYPES for h in hooks):
        return 'mmcv'
    if any(k in h for h in hooks for k in _MMENGINE_KEYS):
        return 'mmengine'
    if any(str(h.get('type', '')).startswith(('mmengine.', 'mmdet3.', 'mmyolo.')) for h in hooks):
        return 'mmengine'
    if any(k in config for k in ('train_cfg', 'default_hooks')) or isinstance(config.get('resume'), bool):
        return 'mmengine'
    return 'mmcv'


def diagnose(config: Dict[str, Any], generation: Optional[str] = None) -> List[Finding]:
    """Findings for a config dict (or a single hook dict with ``type``).

    Understood keys: ``custom_hooks``, ``resume_from``, ``load_from``,
    ``runner=dict(type='EpochBasedRunner'|'IterBasedRunner')`` (mmcv style);
    ``resume`` (bool), ``load_from``, ``train_cfg`` (mmengine style);
    ``test_after_train`` (bool) for the mmengine train-then-test case.
    """
    if not isinstance(config, dict):
        raise TypeError(f'config must be a dict, got {type(config).__name__}')
    if 'type' in config and 'custom_hooks' not in config:
        config = dict(custom_hooks=[config])
    gan = _diagnose_gan(config, generation)
    hooks = [h for h in config.get('custom_hooks') or [] if isinstance(h, dict) and _is_ema(h)]
    if not hooks:
        return gan
    generation = generation or _generation(config, hooks)
    if generation == 'mmengine':
        return gan + _diagnose_mmengine(config)
    runner_type = str((config.get('runner') or {}).get('type', 'EpochBasedRunner'))
    iter_runner = 'Iter' in runner_type
    out: List[Finding] = []
    for cfg in hooks:
        prio = get_priority(cfg.get('priority', 'NORMAL'))
        out.extend(_mmcv_rules(_short_type(cfg), prio, bool(cfg.get('resume_from')),
                               bool(config.get('resume_from')), iter_runner,
                               int(cfg.get('interval', 1))))
    return gan + out


def _mmcv_rules(kind: str, prio: int, hook_resume: bool, runner_resume: bool, iter_runner: bool,
                interval: int) -> List[Finding]:
    out: List[Finding] = []
    after_ckpt = prio >= _CHECKPOINT_PRIORITY
    if runner_resume and not hook_resume:
        lost = ('the raw weights are lost (the checkpoint holds EMA weights under the normal keys)'
                if not after_ckpt and not iter_runner else 'the EMA history is lost')
        out.append(Finding('E101', 'warning',
                           f'{kind}: the runner-level resume_from runs before the hook registers '
                           f'its ema_* buffers, so the ema_* keys are dropped as unexpected and '
                           f'the EMA restarts from the loaded weights; {lost}. Set resume_from on '
                           f'the hook too (mmdet 2.x FAQ).', 'resume-matrix'))
    if hook_resume and after_ckpt and not iter_runner:
        out.append(Finding('E102', 'warning',
                           f'{kind} at priority {prio} runs after CheckpointHook (50), so its '
                           f'checkpoints hold raw weights under the normal keys; resuming through '
                           f'the hook\'s resume_from swaps them at before_train_epoch and training '
                           f'continues from the EMA weights with the raw ones as EMA (roles '
                           f'inverted). Use priority 49 (as the YOLOX configs do).', 'mmcv-emahook resume-matrix'))
    elif after_ckpt and not iter_runner:
        out.append(Finding('E103', 'info',
                           f'{kind} at priority {prio} runs after CheckpointHook: epoch_N.pth holds '
                           f'raw weights under the normal keys and the EMA under ema_*.', 'mmdet-checkpoint'))
    if iter_runner:
        out.append(Finding('E104', 'warning',
                           f'{kind} under IterBasedRunner: before_train_epoch/after_train_epoch are '
                           f'never called, so the EMA weights are never swapped in; evaluation and '
                           f'the normal checkpoint keys use the raw weights (mmcv#2195).', 'mmcv-iter-runner mmcv-emahook'))
        if hook_resume or runner_resume:
            out.append(Finding('E105', 'warning',
                               'IterBasedRunner.resume: the saved iter is completed-1, so one '
                               'iteration is repeated and the data loader is not fast-forwarded; '
                               'the hook\'s resume_from calls it with map_location="default", which '
                               'needs CUDA.', 'mmcv-resume'))
    if kind == 'EMAHook' and interval > 1:
        out.append(Finding('E106', 'info',
                           f'mmcv EMAHook stores momentum**interval (interval={interval}): the '
                           f'per-update momentum gets smaller as the interval grows.', 'mmcv-emahook'))
    return out


_FLIP_REF = 'docs/gan-family.md'


def _diagnose_gan(config: Dict[str, Any], generation: Optional[str]) -> List[Finding]:
    """E301/E302 for mmedit/mmagic ``ExponentialMovingAverageHook`` and mmagic ``ema_config``."""
    from .migrate.gan import GanSpec, classify_gan
    from .migrate.hookspec import config_generation
    gen = generation or config_generation(config) or (
        'mmengine' if isinstance(config.get('model'), dict)
        and 'ema_config' in config['model'] else 'mmcv')
    out: List[Finding] = []
    for i, hook in enumerate(config.get('custom_hooks') or []):
        try:
            spec = classify_gan(hook, gen)
        except ValueError:  # unknown keys / ambiguous: the migrate command reports those
            spec = None
        if not isinstance(spec, GanSpec):
            continue
        a = spec.resolved()
        m = a.get('momentum')
        if spec.flipped and isinstance(m, (int, float)) and m > 0.5:
            out.append(Finding('E301', 'warning',
                               f'custom_hooks[{i}] mmagic ExponentialMovingAverageHook with '
                               f'interp_cfg momentum={m!r}: in mmagic 1.x momentum is the weight '
                               f'of the NEW weights, so the EMA follows the generator almost '
                               f'exactly; this looks like an un-flipped mmedit 0.x value (mmedit '
                               f'{m!r} is mmagic {1 - m:.6g}).', _FLIP_REF))
        if isinstance(a.get('interval'), int) and a['interval'] <= 0:
            out.append(Finding('E302', 'info',
                               f'custom_hooks[{i}] {spec.kind} with interval={a["interval"]} '
                               f'(default -1): the EMA is a copy of the generator until '
                               f'start_iter={a["start_iter"]} and never changes afterwards.',
                               _FLIP_REF))
    model = config.get('model')
    ema_cfg = model.get('ema_config') if isinstance(model, dict) else None
    if isinstance(ema_cfg, dict):
        m = ema_cfg.get('momentum')
        kind = str(ema_cfg.get('type', 'ExponentialMovingAverage')).rpartition('.')[2]
        if kind == 'ExponentialMovingAverage' and isinstance(m, (int, float)) and m > 0.5:
            out.append(Finding('E301', 'warning',
                               f'model.ema_config momentum={m!r}: mmagic\'s ExponentialMovingAverage '
                               f'gives the NEW weights this weight, so the EMA follows the '
                               f'generator almost exactly; an un-flipped mmedit-style value? '
                               f'(mmedit {m!r} is {1 - m:.6g} here).', _FLIP_REF))
    return out


def _diagnose_mmengine(config: Dict[str, Any]) -> List[Finding]:
    out: List[Finding] = []
    if config.get('load_from') and not config.get('resume'):
        out.append(Finding('E201', 'info',
                           'mmengine EMAHook with load_from and resume=False: both the model and '
                           'the EMA copy receive the EMA weights from state_dict and steps restarts '
                           'at 0 (the next update is a plain copy); use resume=True to continue '
                           'the EMA.', 'mmengine-resume mmengine-emahook'))
    if config.get('test_after_train'):
        out.append(Finding('E202', 'warning',
                           'runner.train() then runner.test() on the same runner: before_run fires '
                           'again and rebuilds the EMA model from the raw weights, so the test '
                           'evaluates raw weights. Test from a fresh runner with load_from.', 'mmengine-emahook'))
    return out


def diagnose_runner(runner: Any) -> List[Finding]:
    """Warnings for an mmcv-style runner about to ``run()`` (hooks registered, resume done).

    A runner-level resume is detected by ``runner.iter``/``runner.epoch`` being
    non-zero before ``before_run`` (or the harness's record of ``resume()``).
    """
    from .mmcv.runner.hooks.ema import EMAHook
    from .mmdet.core.hook.ema import BaseEMAHook
    iter_runner = 'IterBased' in type(runner).__name__
    runner_resume = (getattr(runner, '_resumed_from', None) is not None
                     or getattr(runner, 'iter', 0) > 0 or getattr(runner, 'epoch', 0) > 0)
    out: List[Finding] = []
    for hook in runner.hooks:
        if not isinstance(hook, (EMAHook, BaseEMAHook)):
            continue
        interval = getattr(hook, 'interval', 1)
        for f in _mmcv_rules(type(hook).__name__, int(hook.priority), hook.checkpoint is not None,  # type: ignore[union-attr]
                             runner_resume, iter_runner, interval):
            if f.severity == 'warning':
                out.append(f)
    return out


def _literal(node: ast.AST) -> Any:
    """``ast.literal_eval`` that also accepts ``dict(key=value, ...)`` calls (config style)."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict'
            and not node.args):
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    return ast.literal_eval(node)


def load_config(text: str) -> Dict[str, Any]:
    """A config from a .json/.py file path, or an inline dict literal / JSON string.

    A Python config is parsed, never executed, with ``_base_`` inheritance
    merged as mmcv's ``Config.fromfile`` does (:mod:`compat_ema.migrate.configparse`).
    """
    if os.path.isfile(text):
        if text.endswith('.json'):
            with open(text) as f:
                return json.loads(f.read())
        from .migrate.configparse import load_config as parse_config
        return parse_config(text).cfg
    if text.strip().endswith(('.py', '.json')):
        raise FileNotFoundError(f'{text}: no such config file')
    try:
        value = _literal(ast.parse(text.strip(), mode='eval').body)
    except (ValueError, SyntaxError):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f'{text!r} is neither a file nor a dict literal '
                             f'(dict(...) or {{...}}) nor a JSON object') from exc
    if not isinstance(value, dict):
        raise ValueError(f'expected a dict, got {type(value).__name__}')
    return value


def format_findings(findings: Sequence[Finding]) -> str:
    """One line per finding, or a line saying nothing was found."""
    if not findings:
        return 'OK: no EMA resume or priority problem found.'
    return '\n'.join(str(f) for f in findings)


class EMASetupWarning(UserWarning):
    """Issued (never changing numbers) when an EMA setup loses EMA history on resume."""


def _guard_base():
    from .mmcv.runner.hooks.hook import Hook
    return Hook


class EMAGuardHook(_guard_base()):  # type: ignore[misc]
    """Opt-in mmcv-style hook: at ``before_run`` warn (:class:`EMASetupWarning`) about E101-E105.

    Register it at HIGHEST priority so it runs before the EMA hooks'
    ``before_run``: ``runner.register_hook(EMAGuardHook(), 'HIGHEST')`` or
    ``custom_hooks=[dict(type=EMAGuardHook, priority='HIGHEST')]``. It only
    reads the runner (the EMA hooks' priority, ``resume_from``, the counters).
    """

    def before_run(self, runner) -> None:
        import warnings
        for finding in diagnose_runner(runner):
            warnings.warn(str(finding), EMASetupWarning, stacklevel=2)
