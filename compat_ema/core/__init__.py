"""The shared core: kernels, priorities, wrapper unwrapping, the runner protocol.

It imports neither the harness, the CLI, nor any OpenMMLab package.
"""
from .priority import Priority, get_priority
from .runner import EMARunner, SimpleRunner
from .wrappers import is_wrapper, register_wrapper, unwrap

__all__ = ['Priority', 'get_priority', 'EMARunner', 'SimpleRunner', 'is_wrapper',
           'register_wrapper', 'unwrap']
