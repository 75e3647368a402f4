"""The Quickstart's first command must reach a user without a single warning line.

``python tests/quickstart_check.py DIR`` runs ``compat-ema demo --out DIR/demo`` with
``PYTHONWARNINGS=default`` (every warning shown once; a dependency's DeprecationWarning or
ResourceWarning, which Python hides from users by default, is not counted) and exits 1, listing them, if any line of its output is a warning. ``tox -e quickstart`` runs it
in a fresh venv that holds only compat_ema's runtime dependencies (what
``python -m pip install torch==2.13.0 .`` installs); ``tests/test_quickstart.py`` runs it in the
test env. Without numpy, torch prints "UserWarning: Failed to initialize NumPy" on import: numpy
is therefore a runtime dependency.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import List

_WARNING = re.compile(r'warn', re.I)
#: how Python prints a warning: ``path:line: Category: message`` (then, indented, the source line)
_HEADER = re.compile(r'^(?P<path>.+?):\d+: (?P<category>\w+): ')
#: categories Python's default filters hide unless the code that warns is ``__main__``
_HIDDEN_BY_DEFAULT = {'DeprecationWarning', 'PendingDeprecationWarning', 'ImportWarning',
                      'ResourceWarning'}


def demo_command() -> List[str]:
    exe = shutil.which('compat-ema', path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, '-m', 'compat_ema']


def reaching_warnings(output: str) -> List[str]:
    """The warning records in ``output`` that would reach a user: every line carrying "warn",
    one per warning (the indented source line Python prints under a warning is part of it),
    except the categories Python hides by default when they come from outside compat_ema
    (a dependency's DeprecationWarning, e.g. torch 1.10 importing ``pkg_resources`` under a new
    setuptools, or torch 2.6's dynamo leaving a TemporaryDirectory to its finalizer)."""
    found: List[str] = []
    after_header = False
    for line in output.splitlines():
        if after_header and line[:1].isspace():
            after_header = False
            continue  # the source line of the warning just recorded
        header = _HEADER.match(line)
        after_header = bool(header)
        if header and header['category'] in _HIDDEN_BY_DEFAULT \
                and 'compat_ema' not in header['path'].replace('\\', '/').split('/'):
            continue
        if header or _WARNING.search(line):
            found.append(line)
    return found


def warning_lines(argv: List[str], cwd: str) -> List[str]:
    """Run ``argv`` in ``cwd`` with every warning shown once (``PYTHONWARNINGS=default``);
    return the warnings that would reach a user (:func:`reaching_warnings`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHONWARNINGS')}
    env['PYTHONWARNINGS'] = 'default'
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'{argv} exited {proc.returncode}:\n{proc.stderr[-2000:]}')
    return reaching_warnings(proc.stdout + proc.stderr)


def main(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    found = warning_lines(demo_command() + ['demo', '--out', os.path.join(directory, 'demo')],
                          directory)
    for line in found:
        print(f'warning reached the user: {line}', file=sys.stderr)
    print(f'compat-ema demo: {len(found)} warning line(s)')
    return 1 if found else 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else '.'))
