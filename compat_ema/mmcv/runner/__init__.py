"""Mirror of ``mmcv.runner``: the hook base, priorities and ``EMAHook``."""
from ...core.priority import Priority, get_priority
from .hooks import EMAHook, Hook

__all__ = ['EMAHook', 'Hook', 'Priority', 'get_priority']
