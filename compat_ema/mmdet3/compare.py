"""Moved to :mod:`compat_ema.migrate.native_gap` (the comparison of migration targets
lives with the migration tools); this name keeps old imports working."""
from ..migrate.native_gap import *  # noqa: F401,F403
from ..migrate.native_gap import __all__  # noqa: F401
