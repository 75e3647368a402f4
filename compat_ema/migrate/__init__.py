"""Config migration and the momentum-schedule explainer (``compat-ema migrate`` / ``schedule``).

* :func:`migrate_config`: rewrite the EMA hooks of an mmcv 1.x / mmdet 2.x
  config for mmengine, exactly (compat_ema's legacy-numerics types) or
  natively (mmengine's own types), reading the config with ``ast`` only.
* :func:`momentum_schedule`: what any generation's EMA hook does at each
  iteration (update/skip/copy and the effective momentum).
* :func:`compare`: how far two hook configs' numbers are apart.

See MIGRATION.md for the mapping tables and the quirk catalogue.
"""
from .compare import Comparison, compare, simulate_ema, toy_trajectory, weight_distance
from .configparse import ConfigError, load_config, parse_source
from .core import Migration, UnsupportedHooks, default_output, migrate_config, write_migration
from .hookspec import AmbiguousHookError, HookSpec, UnknownKeysError, classify
from .mapping import PLUGIN, map_exact, map_native
from .schedule import Step, format_table, momentum_schedule, plot_schedules, schedule_notes

__all__ = ['Comparison', 'compare', 'simulate_ema', 'toy_trajectory', 'weight_distance',
           'ConfigError', 'load_config', 'parse_source', 'Migration', 'UnsupportedHooks',
           'default_output', 'migrate_config', 'write_migration', 'AmbiguousHookError',
           'HookSpec', 'UnknownKeysError', 'classify', 'PLUGIN', 'map_exact', 'map_native',
           'Step', 'format_table', 'momentum_schedule', 'plot_schedules', 'schedule_notes']
