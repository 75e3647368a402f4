"""Build subclasses of compat hooks that are also instances of a framework's ``Hook``."""
from __future__ import annotations

from typing import Dict, Tuple

_CACHE: Dict[Tuple[type, type], type] = {}

# methods a base Hook forwards to generic ones (mmcv: before_epoch..., mmengine: _before_epoch...)
_FORWARDS = {
    'before_epoch': ('before_train_epoch', 'before_val_epoch'),
    'after_epoch': ('after_train_epoch', 'after_val_epoch'),
    'before_iter': ('before_train_iter', 'before_val_iter'),
    'after_iter': ('after_train_iter', 'after_val_iter'),
    '_before_epoch': ('before_train_epoch', 'before_val_epoch', 'before_test_epoch'),
    '_after_epoch': ('after_train_epoch', 'after_val_epoch', 'after_test_epoch'),
    '_before_iter': ('before_train_iter', 'before_val_iter', 'before_test_iter'),
    '_after_iter': ('after_train_iter', 'after_val_iter', 'after_test_iter'),
}


def _compat_base(cls: type) -> type:
    """The compat ``Hook`` base class ``cls`` derives from (the last class named Hook in its MRO
    that lives in compat_ema)."""
    for klass in reversed(cls.__mro__):
        if klass.__name__ == 'Hook' and klass.__module__.startswith('compat_ema.'):
            return klass
    raise TypeError(f'{cls.__name__} is not a compat_ema hook')


def _get_triggered_stages(self):
    """The stages this hook acts on, judged against compat's base Hook (for the runners' logs)."""
    base = _compat_base(type(self))
    stages = set()
    for stage in base.stages:
        if getattr(type(self), stage, None) is not getattr(base, stage, None):
            stages.add(stage)
    for method, mapped in _FORWARDS.items():
        if hasattr(base, method) and getattr(type(self), method) is not getattr(base, method):
            stages.update(s for s in mapped if s in base.stages)
    return [s for s in base.stages if s in stages]


def hook_class_for(cls: type, framework_hook: type, module: str) -> type:
    """A subclass of compat hook ``cls`` that is also a ``framework_hook`` subclass.

    The compat class comes first in the MRO, so every hook method is compat's
    (compat's base Hook defines all of them); the framework base only makes
    ``isinstance(hook, framework_hook)`` true, as the real runners require.
    Cached: the same pair always gives the same class.
    """
    if issubclass(cls, framework_hook):
        return cls
    key = (cls, framework_hook)
    if key not in _CACHE:
        _CACHE[key] = type(cls.__name__, (cls, framework_hook), {
            '__module__': module,
            '__qualname__': cls.__name__,
            '__doc__': (cls.__doc__ or '') + f'\n\n    (A ``{framework_hook.__module__}.'
                                              f'{framework_hook.__name__}`` subclass.)',
            'get_triggered_stages': _get_triggered_stages,
        })
    return _CACHE[key]


def retype(hook, cls: type):
    """Make an existing compat hook instance an instance of ``cls`` (a :func:`hook_class_for` class)."""
    if not isinstance(hook, cls.__mro__[1]):
        raise TypeError(f'cannot convert a {type(hook).__name__} into {cls.__name__}')
    hook.__class__ = cls
    return hook
