"""CLI subcommands; each module exposes ``register(subparsers)``.

Exit status, the same for every command (``compat-ema --help`` lists it):

* :data:`DONE` (0): the command did its job (for ``inspect`` and ``doctor``: and found nothing
  wrong);
* :data:`REFUSED` (1): refused input (a missing, unreadable, unsafe or invalid file or config, an
  output that exists without ``--force``) or a check that found a problem (``inspect``,
  ``doctor``);
* :data:`USAGE` (2): the command line itself is wrong (argparse's own errors, bad values);
* :data:`INTERNAL` (3): a bug in compat_ema (one line; ``COMPAT_EMA_DEBUG=1`` shows the
  traceback).
"""
from __future__ import annotations

import os
import re
import sys

DONE, REFUSED, USAGE, INTERNAL = 0, 1, 2, 3

EXIT_CODES = f"""\
exit status (every command):
  {DONE}  done (inspect, doctor: and nothing wrong found)
  {REFUSED}  refused input (missing, unreadable, unsafe or invalid file or config; existing
     output without --force) or a check that found a problem (inspect, doctor)
  {USAGE}  usage error (unknown option, missing or invalid argument)
  {INTERNAL}  internal error, a bug: please report it (COMPAT_EMA_DEBUG=1 shows the traceback)"""

# "pass force=True / --force" in a library message -> "pass --force" on the command line
_API_AND_CLI = re.compile(r'\b[a-z_]*[a-z](?:_[a-z]+|=[^\s/]+)+ / (--[\w-]+)')


def cli_words(text: str) -> str:
    """A library message in the command line's words (its ``--options``, not keyword arguments)."""
    return _API_AND_CLI.sub(r'\1', text)


def fail(command: str, message: object, status: int = REFUSED, one_line: bool = False) -> int:
    """Print ``compat-ema COMMAND: error: MESSAGE`` (in CLI words; only its first line if
    ``one_line``) to stderr; return ``status``."""
    text = str(message) or type(message).__name__
    if one_line:
        text = text.splitlines()[0]
    print(f'compat-ema {command}: error: {cli_words(text)}', file=sys.stderr)
    return status


def internal_error(command: str, exc: BaseException) -> int:
    if os.environ.get('COMPAT_EMA_DEBUG'):
        raise exc
    first = str(exc).splitlines()[0] if str(exc) else ''
    print(f'compat-ema {command}: internal error: {type(exc).__name__}: {first} '
          '(set COMPAT_EMA_DEBUG=1 for the traceback)', file=sys.stderr)
    return INTERNAL
