"""The sub-module EMA shared by mmedit 0.16's and mmagic 1.2's ``ExponentialMovingAverageHook``.

Both hooks keep the EMA in a sibling sub-module of the model (``generator_ema``
beside ``generator``) and run the same procedure; they differ only in the
interpolation formula and its defaults (the ``momentum`` flip, see
:mod:`compat_ema.mmedit` and :mod:`compat_ema.mmagic`). What is shared, with
the quirks it carries:

* :func:`check_module_keys`: a ``str`` or a *tuple* of ``str`` (a list is
  refused), each ending in ``'_ema'``; the source module is the key without
  its last four characters;
* :func:`gate`: before ``start_iter`` every call acts (and copies); from
  ``start_iter`` on, a call acts when ``(iter + 1 - start_iter) % n == 0``,
  and never when ``n <= 0`` (so the default ``interval=-1`` stops all
  updates at ``start_iter``);
* :func:`ensure_ema_modules` (``before_run``): a missing EMA module is a
  ``deepcopy`` of the source, with a warning; both missing is a RuntimeError;
* :func:`update_module_ema` (``after_train_iter``): the update goes through
  ``state_dict()`` and ``load_state_dict(strict=True)``. Every state entry of
  the *source* (parameters with ``keep_vars=True``, so ``requires_grad`` picks
  the momentum; persistent buffers) is interpolated out of place and the
  results are loaded back, so integer buffers are computed in floating point
  (the default dtype) and truncated by ``copy_`` on the way back, frozen
  parameters and buffers use ``momentum_nontrainable``, and non-persistent
  buffers are never touched. Before ``start_iter`` the entries are copied in
  place instead.

The hooks themselves share :class:`ModuleEMAHookMixin` (``every_n_iters``,
``before_run``), :func:`configure_hook` (the ``__init__`` body: attributes and
checks) and :func:`hook_update` (the ``after_train_iter`` body).

The core imports no OpenMMLab package; the hooks pass in their own
wrapper-unwrapping generation.
"""
from __future__ import annotations

import copy
import warnings
from functools import partial
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn as nn

from .checks import require
from .wrappers import unwrap

__all__ = ['check_module_keys', 'gate', 'ensure_ema_modules', 'update_module_ema',
           'source_key', 'ModuleEMAHookMixin', 'configure_hook', 'hook_update']


def check_module_keys(module_keys: Any, where: str) -> Tuple[str, ...]:
    """Upstream's key checks, raised explicitly; returns the keys as a tuple.

    Raises:
        AssertionError: not a str or a tuple of str (a list is refused, as
            ``is_tuple_of`` does), or a key not ending in ``'_ema'``.
    """
    ok = isinstance(module_keys, str) or (
        isinstance(module_keys, tuple) and all(isinstance(k, str) for k in module_keys))
    require(ok, f'{where}: module_keys must be a str or a tuple of str, but got '
                f'{module_keys!r} ({type(module_keys).__name__})')
    keys = (module_keys,) if isinstance(module_keys, str) else module_keys
    for key in keys:
        require(key.endswith('_ema'),
                f'You should give keys that end with "_ema". ({where}: got {key!r})')
    return keys


def source_key(key: str) -> str:
    """The source module's attribute name: the EMA key without its last four characters."""
    return key[:-4]


def gate(iteration: int, start_iter: int, n: int) -> bool:
    """Whether the hook acts at ``iteration`` (upstream's ``every_n_iters`` override)."""
    if iteration < start_iter:
        return True
    if n <= 0:
        return False
    return (iteration + 1 - start_iter) % n == 0


def ensure_ema_modules(model: nn.Module, keys: Tuple[str, ...], generation: str) -> None:
    """``before_run``: deep-copy the source into each missing EMA module (with a warning)."""
    model = unwrap(model, generation)
    for key in keys:
        src = source_key(key)
        has_ema, has_src = hasattr(model, key), hasattr(model, src)
        if not has_ema and not has_src:
            raise RuntimeError(f'Cannot find both {src} and {key} network for EMA hook.')
        if not has_ema:
            setattr(model, key, copy.deepcopy(getattr(model, src)))
            warnings.warn(f'We do not suggest construct and initialize EMA model {key} in hook. '
                          'You may explicitly define it by yourself.',
                          stacklevel=1)  # upstream's (the default)


@torch.no_grad()
def update_module_ema(model: nn.Module, keys: Tuple[str, ...], generation: str,
                      copy_only: bool, interp: Callable[..., torch.Tensor]) -> None:
    """One ``after_train_iter`` update of every EMA module in ``keys``.

    Args:
        model: the runner's model (unwrapped here for ``generation``).
        keys: the EMA modules' attribute names.
        generation: 'mmcv' or 'mmengine' (which wrappers to unwrap).
        copy_only: before ``start_iter``: copy the source entries in place.
        interp: ``interp(orig, ema, trainable=...)`` -> the new EMA entry.
    """
    model = unwrap(model, generation)
    for key in keys:
        ema_net = getattr(model, key)
        averaged = ema_net.state_dict(keep_vars=False)
        source = getattr(model, source_key(key)).state_dict(keep_vars=True)
        if copy_only:
            for name, tensor in source.items():
                averaged[name].data.copy_(tensor.data)
        else:
            for name, tensor in source.items():
                averaged[name] = interp(tensor, averaged[name],
                                        trainable=tensor.requires_grad).detach()
        ema_net.load_state_dict(averaged, strict=True)


class ModuleEMAHookMixin:
    """The hook methods mmedit 0.16's and mmagic 1.2's ``ExponentialMovingAverageHook`` share.

    Mixed in before each generation's ``Hook``. It defines only names both
    upstream hooks have: ``interp_mode`` may name any attribute of the hook
    (upstream checks ``hasattr``), so a helper method here would widen what
    construction accepts; the shared ``__init__`` and ``after_train_iter``
    bodies are the functions :func:`configure_hook` and :func:`hook_update`.
    """

    _generation: str   # 'mmcv' or 'mmengine': which wrappers to unwrap
    module_keys: Tuple[str, ...]
    interp_mode: str
    interp_cfg: dict
    interval: int
    start_iter: int
    interp_func: Callable[..., torch.Tensor]

    def every_n_iters(self, runner, n: int) -> bool:
        """True before ``start_iter``; then ``(iter + 1 - start_iter) % n == 0`` (False if n <= 0)."""
        return gate(runner.iter, self.start_iter, n)

    def before_run(self, runner) -> None:
        """Deep-copy the source into a missing EMA module (with a warning)."""
        ensure_ema_modules(runner.model, self.module_keys, self._generation)


def configure_hook(hook: ModuleEMAHookMixin, module_keys: Any, interp_mode: str,
                   interp_cfg: Optional[dict], interval: int, start_iter: int) -> None:
    """The hooks' ``__init__`` body: set the attributes upstream sets, with its checks.

    ``interp_cfg`` is deep-copied (None: empty) and bound into ``interp_func``,
    ``partial(getattr(hook, interp_mode), **interp_cfg)``, so unknown keys fail at
    the first update, not here.

    Raises:
        AssertionError: bad ``module_keys`` (:func:`check_module_keys`, the message
            names the hook class), or ``interp_mode`` not an attribute of the hook.
    """
    hook.module_keys = check_module_keys(module_keys, type(hook).__name__)
    hook.interp_mode = interp_mode
    hook.interp_cfg = dict() if interp_cfg is None else copy.deepcopy(interp_cfg)
    hook.interval = interval
    hook.start_iter = start_iter
    require(hasattr(hook, interp_mode), f'Currently, we do not support {interp_mode} for EMA.')
    hook.interp_func = partial(getattr(hook, interp_mode), **hook.interp_cfg)


def hook_update(hook: ModuleEMAHookMixin, runner: Any,
                interp: Callable[..., torch.Tensor]) -> None:
    """The hooks' ``after_train_iter`` body: when ``every_n_iters`` lets it act, copy (before
    ``start_iter``) or interpolate every EMA module with ``interp``."""
    if not hook.every_n_iters(runner, hook.interval):
        return
    update_module_ema(runner.model, hook.module_keys, hook._generation,
                      runner.iter < hook.start_iter, interp)
