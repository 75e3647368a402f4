"""Bridges to the real OpenMMLab frameworks (the only place compat_ema imports them).

* :mod:`compat_ema.integrations.mmcv`: compat hooks as real ``mmcv.runner.Hook``
  instances, registered in mmcv 1.x's ``HOOKS`` as ``CompatEMAHook``,
  ``CompatBaseEMAHook``, ``CompatExpMomentumEMAHook``, ``CompatLinearMomentumEMAHook``.
* :mod:`compat_ema.integrations.mmengine_plugin`: the module to name in
  ``custom_imports=dict(imports=['compat_ema.integrations.mmengine_plugin'])``; it
  registers compat's hooks and averaged models into mmengine's registries.

Importing this package imports neither framework; each submodule imports its
framework when it is itself imported.
"""
from ._mixin import hook_class_for

__all__ = ['hook_class_for']
