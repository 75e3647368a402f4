"""compat hooks inside the real mmcv 1.x runners (``EpochBasedRunner``, ``IterBasedRunner``).

The real runners accept only instances of ``mmcv.runner.Hook``
(``BaseRunner.register_hook`` asserts it). Importing this module (it imports
mmcv; nothing else in compat_ema does):

* defines :data:`EMAHook`, :data:`BaseEMAHook`, :data:`ExpMomentumEMAHook` and
  :data:`LinearMomentumEMAHook`: the compat_ema hooks (mmcv 1.6 / mmdet 2.28
  numerics and quirks, unchanged) as subclasses of the real ``mmcv.runner.Hook``.
  Swapping ``from mmcv.runner import EMAHook`` for
  ``from compat_ema.integrations.mmcv import EMAHook`` is the whole migration;
* registers them in mmcv's ``HOOKS`` under names that do not clobber mmcv's or
  mmdet's own: ``CompatEMAHook``, ``CompatBaseEMAHook``, ``CompatExpMomentumEMAHook``,
  ``CompatLinearMomentumEMAHook``, so configs can name them in ``custom_hooks``
  (after ``custom_imports=dict(imports=['compat_ema.integrations.mmcv'])`` or an
  import of this module);
* registers mmcv's module-wrapper classes (``mmcv.parallel.MODULE_WRAPPERS``,
  the deprecated ``MMDistributedDataParallel`` included) into
  :mod:`compat_ema.core.wrappers`, so the hooks unwrap exactly what mmcv's
  ``is_module_wrapper`` unwraps.

:func:`as_mmcv_hook` converts an existing compat hook instance in place.
"""
from __future__ import annotations

import importlib
import logging
from typing import Dict

try:
    from mmcv.runner import HOOKS as MMCV_HOOKS
    from mmcv.runner import Hook as MMCVHook
except ImportError as _exc:  # mmcv 2.x has no mmcv.runner; or mmcv is not installed
    raise ImportError('compat_ema.integrations.mmcv needs mmcv 1.x (mmcv.runner) installed; '
                      f'importing it failed: {_exc}') from _exc

from ..core.wrappers import register_wrapper
from ..mmcv.runner.hooks.ema import EMAHook as _EMAHook
from ..mmdet.core.hook.ema import BaseEMAHook as _BaseEMAHook
from ..mmdet.core.hook.ema import ExpMomentumEMAHook as _ExpMomentumEMAHook
from ..mmdet.core.hook.ema import LinearMomentumEMAHook as _LinearMomentumEMAHook
from ..mmedit.core.hooks.ema import ExponentialMovingAverageHook as _MMEditEMAHook
from ._mixin import hook_class_for, retype

__all__ = ['EMAHook', 'BaseEMAHook', 'ExpMomentumEMAHook', 'LinearMomentumEMAHook',
           'ExponentialMovingAverageHook',
           'REGISTERED', 'as_mmcv_hook', 'mmcv_hook_class', 'install']

_LOG = logging.getLogger('compat_ema.integrations')


def mmcv_hook_class(cls: type) -> type:
    """The subclass of compat hook class ``cls`` that is also an ``mmcv.runner.Hook``."""
    return hook_class_for(cls, MMCVHook, __name__)


def as_mmcv_hook(hook):
    """Make a compat hook instance acceptable to the real mmcv runners (in place); returns it."""
    return retype(hook, mmcv_hook_class(type(hook)))


EMAHook = mmcv_hook_class(_EMAHook)
BaseEMAHook = mmcv_hook_class(_BaseEMAHook)
ExpMomentumEMAHook = mmcv_hook_class(_ExpMomentumEMAHook)
LinearMomentumEMAHook = mmcv_hook_class(_LinearMomentumEMAHook)
#: mmedit 0.16.1's ``ExponentialMovingAverageHook`` (registered as ``CompatExponentialMovingAverageHook``)
ExponentialMovingAverageHook = mmcv_hook_class(_MMEditEMAHook)

#: name in mmcv's HOOKS -> class registered there by :func:`install`
REGISTERED: Dict[str, type] = {}


def _register_wrappers() -> None:
    import mmcv.parallel as parallel
    try:  # the deprecated MMDistributedDataParallel registers itself on import
        importlib.import_module('mmcv.parallel.distributed_deprecated')
    except Exception as exc:  # pragma: no cover - depends on the mmcv build
        _LOG.debug('mmcv.parallel.distributed_deprecated not importable: %s', exc)
    stack = [parallel.MODULE_WRAPPERS]
    while stack:
        registry = stack.pop()
        for cls in registry.module_dict.values():
            register_wrapper(cls, 'mmcv')
        stack.extend(registry.children.values())


def install() -> Dict[str, type]:
    """Register the hooks in mmcv's HOOKS and mmcv's wrappers in compat_ema (idempotent)."""
    for name, cls in (('CompatEMAHook', EMAHook), ('CompatBaseEMAHook', BaseEMAHook),
                      ('CompatExpMomentumEMAHook', ExpMomentumEMAHook),
                      ('CompatLinearMomentumEMAHook', LinearMomentumEMAHook),
                      ('CompatExponentialMovingAverageHook', ExponentialMovingAverageHook)):
        taken = MMCV_HOOKS.module_dict.get(name)
        if taken is None:
            MMCV_HOOKS.register_module(name=name, module=cls)
        elif taken is not cls:
            _LOG.warning('compat_ema: %r is already registered in mmcv HOOKS (as %r); '
                         'not overwriting it', name, taken)
            continue
        REGISTERED[name] = cls
    _register_wrappers()
    return dict(REGISTERED)


install()
