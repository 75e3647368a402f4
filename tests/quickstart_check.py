"""The Quickstart's first command must reach a user without a single warning line.

``python tests/quickstart_check.py DIR`` runs ``compat-ema demo --out DIR/demo`` with
``PYTHONWARNINGS=default`` (every warning shown once; ResourceWarning stays hidden, as it is
from every user)
and exits 1, listing them, if any line of its output is a warning. ``tox -e quickstart`` runs it
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


def demo_command() -> List[str]:
    exe = shutil.which('compat-ema', path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, '-m', 'compat_ema']


def warning_lines(argv: List[str], cwd: str) -> List[str]:
    """Run ``argv`` in ``cwd``; return its output lines that are (or carry) warnings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHONWARNINGS')}
    # every warning once, DeprecationWarnings included (stricter than a user's interpreter),
    # except ResourceWarning, which Python never shows by default: torch 2.6's SGD imports
    # torch._dynamo, whose torch.distributed.nn leaves a TemporaryDirectory to its finalizer
    env['PYTHONWARNINGS'] = 'default,ignore::ResourceWarning'
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'{argv} exited {proc.returncode}:\n{proc.stderr[-2000:]}')
    return [line for line in (proc.stdout + proc.stderr).splitlines() if _WARNING.search(line)]


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
