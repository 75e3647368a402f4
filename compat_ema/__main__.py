"""``python -m compat_ema``: the CLI."""
import sys

from .cli import main

sys.exit(main())
