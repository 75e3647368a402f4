"""The harness's mmcv 1.6 checkpoint functions: re-exported from :mod:`compat_ema.mmcv.runner.checkpoint`.

Kept so that ``compat_ema.testing.mmcv_checkpoint`` keeps working; the
functions live with the mmcv generation (upstream: ``mmcv.runner.checkpoint``).
"""
from ..mmcv.runner.checkpoint import (
                                      MMCV_VERSION,
                                      atomic_torch_save,
                                      get_state_dict,
                                      load_checkpoint,
                                      save_checkpoint,
                                      symlink,
                                      weights_to_cpu,
)

__all__ = ['MMCV_VERSION', 'atomic_torch_save', 'get_state_dict', 'load_checkpoint', 'save_checkpoint',
           'symlink', 'weights_to_cpu']
