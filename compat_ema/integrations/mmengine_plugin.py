"""The mmengine plugin: compat_ema's hooks and averaged models in the real mmengine registries.

Name it in a config (mmengine imports it when the config is loaded)::

    custom_imports = dict(imports=['compat_ema.integrations.mmengine_plugin'],
                          allow_failed_imports=False)
    custom_hooks = [dict(type='EMAHook', ema_type='LegacyExpMomentumEMA',
                         momentum=0.0001, priority=49)]

Importing it (it imports mmengine; nothing else in compat_ema does):

* registers every averaged model of compat_ema's ``mmengine``-side scopes into
  ``mmengine.registry.MODELS`` and every hook into ``mmengine.registry.HOOKS``,
  hooks as subclasses of the real ``mmengine.hooks.Hook`` (the Runner requires
  it). Names never clobber mmengine's own:

  ==========================  ===========================================================
  compat scope                name in mmengine's registries
  ==========================  ===========================================================
  ``legacy``                  unchanged (new names): ``LegacyMMCVEMA``, ``LegacyMMDetEMA``,
                              ``LegacyExpMomentumEMA``, ``LegacyLinearMomentumEMA``,
                              ``LegacyEMAHook``, ``LegacyExponentialMovingAverageHook``
  ``mmengine``                ``Compat`` + name: ``CompatEMAHook``,
                              ``CompatExponentialMovingAverage``, ``CompatMomentumAnnealingEMA``,
                              ``CompatStochasticWeightAverage``
  ``mmdet3`` (if present)     ``CompatMMDet3`` + name, e.g. ``CompatMMDet3ExpMomentumEMA``
  ``mmyolo`` (if present)     ``CompatMMYOLO`` + name, e.g. ``CompatMMYOLOExpMomentumEMA``
  ``mmagic``                  ``CompatMMagic`` + name: ``CompatMMagicExponentialMovingAverageHook``
  ==========================  ===========================================================

  A name already taken by another class is left alone (with a warning);
* registers mmengine's model-wrapper classes (``MODEL_WRAPPERS``) into
  :mod:`compat_ema.core.wrappers`, so compat hooks unwrap what mmengine's
  ``is_model_wrapper`` unwraps.

The legacy averaged models work with mmengine's *own* ``EMAHook`` (that is the
point: ``dict(type='EMAHook', ema_type='LegacyMMCVEMA', ...)``). ``CompatEMAHook``
and ``LegacyEMAHook`` build their averaged model from compat_ema's registry:
``ema_type='ExponentialMovingAverage'`` (mmengine scope) or
``'legacy.LegacyMMCVEMA'`` for ``CompatEMAHook``; a ``Legacy*`` name for
``LegacyEMAHook``. :func:`as_mmengine_hook` converts an existing compat hook.
"""
from __future__ import annotations

import importlib
import logging
from typing import Dict

try:
    import mmengine.hooks  # noqa: F401  (registers mmengine's own hooks first)
    import mmengine.model  # noqa: F401  (registers mmengine's averaged models and wrappers)
    from mmengine.hooks import Hook as EngineHook
    from mmengine.registry import HOOKS as ENGINE_HOOKS
    from mmengine.registry import MODEL_WRAPPERS as ENGINE_MODEL_WRAPPERS
    from mmengine.registry import MODELS as ENGINE_MODELS
except ImportError as _exc:
    raise ImportError('compat_ema.integrations.mmengine_plugin needs mmengine installed '
                      f'(pip install compat-ema[mmengine]); importing it failed: {_exc}') from _exc

from ..core.wrappers import register_wrapper
from ..legacy.hook import LegacyEMAHook as _LegacyEMAHook
from ..mmengine.hooks.ema_hook import EMAHook as _CompatEMAHook
from ..registry import HOOKS, MODELS, SCOPES
from ._mixin import hook_class_for, retype

__all__ = ['CompatEMAHook', 'LegacyEMAHook', 'PREFIXES', 'REGISTERED_HOOKS', 'REGISTERED_MODELS',
           'as_mmengine_hook', 'mmengine_hook_class', 'install']

_LOG = logging.getLogger('compat_ema.integrations')

#: compat scope -> prefix of its names in mmengine's registries
PREFIXES = {'mmengine': 'Compat', 'mmdet3': 'CompatMMDet3', 'mmyolo': 'CompatMMYOLO',
            'mmagic': 'CompatMMagic', 'legacy': ''}
#: name in mmengine's HOOKS / MODELS -> class registered there by :func:`install`
REGISTERED_HOOKS: Dict[str, type] = {}
REGISTERED_MODELS: Dict[str, type] = {}


def mmengine_hook_class(cls: type) -> type:
    """The subclass of compat hook class ``cls`` that is also an ``mmengine.hooks.Hook``."""
    return hook_class_for(cls, EngineHook, __name__)


def as_mmengine_hook(hook):
    """Make a compat (mmengine-generation) hook instance acceptable to the real Runner (in place)."""
    return retype(hook, mmengine_hook_class(type(hook)))


_OPTIONAL = ('mmdet3', 'mmyolo')


def _import_scope(scope: str) -> bool:
    """Import the module that fills a compat scope; optional scopes may be absent or broken."""
    module = SCOPES[scope][1]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module and scope not in _OPTIONAL:
            raise
        return False
    except Exception as exc:  # an optional generation must not take the plugin down
        if scope not in _OPTIONAL:
            raise
        _LOG.warning('compat_ema: scope %r (%s) not registered: %s', scope, module, exc)
        return False
    return True


def _register(registry, name: str, cls: type, out: Dict[str, type]) -> None:
    taken = registry.module_dict.get(name)
    if taken is None:
        registry.register_module(name=name, module=cls)
    elif taken is not cls:
        _LOG.warning('compat_ema: %r is already registered in mmengine %s (as %r); '
                     'not overwriting it', name, registry.name, taken)
        return
    out[name] = cls


def _register_wrappers() -> None:
    stack = [ENGINE_MODEL_WRAPPERS]
    while stack:
        registry = stack.pop()
        for cls in registry.module_dict.values():
            register_wrapper(cls, 'mmengine')
        stack.extend(registry.children.values())


def install() -> Dict[str, Dict[str, type]]:
    """Register compat's hooks and averaged models into mmengine (idempotent)."""
    for scope, prefix in PREFIXES.items():
        if not _import_scope(scope):
            continue
        for name, cls in sorted(MODELS.get_scope(scope)._module_dict.items()):
            _register(ENGINE_MODELS, prefix + name, cls, REGISTERED_MODELS)
        for name, cls in sorted(HOOKS.get_scope(scope)._module_dict.items()):
            mixed = mmengine_hook_class(cls)
            _register(ENGINE_HOOKS, prefix + name, mixed, REGISTERED_HOOKS)
    _register_wrappers()
    return {'hooks': dict(REGISTERED_HOOKS), 'models': dict(REGISTERED_MODELS)}


install()
#: compat's mmengine EMAHook / LegacyEMAHook as real ``mmengine.hooks.Hook`` subclasses
CompatEMAHook = mmengine_hook_class(_CompatEMAHook)
LegacyEMAHook = mmengine_hook_class(_LegacyEMAHook)
