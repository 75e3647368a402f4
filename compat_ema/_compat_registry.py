"""Scope handles of the registries, for the generation packages to register into."""
from .registry import HOOKS, MODELS

MMCV_HOOKS = HOOKS.get_scope('mmcv')
MMDET_HOOKS = HOOKS.get_scope('mmdet')
MMENGINE_HOOKS = HOOKS.get_scope('mmengine')
MMENGINE_MODELS = MODELS.get_scope('mmengine')
