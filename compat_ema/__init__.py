"""compat_ema: the mmcv 1.6, mmdet 2.28 and mmengine 0.10.7 EMA APIs, bit for bit.

Generations live in :mod:`compat_ema.mmcv`, :mod:`compat_ema.mmdet` and
:mod:`compat_ema.mmengine` (import paths mirror upstream); they are built from
config dicts through :mod:`compat_ema.registry`. Importing this package needs
only torch and packaging.
"""
__version__ = '0.1.0'

__all__ = ['__version__']
