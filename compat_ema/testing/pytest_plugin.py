"""pytest plugin: the ``ema_golden`` fixture and the ``--golden-record`` flag.

Registered through the ``pytest11`` entry point ``compat_ema_golden`` (installed
with compat-ema), so any test suite gets it. In a test::

    def test_my_ema(ema_golden):
        ...
        ema_golden.check(ema_model.state_dict())            # a state dict
        ema_golden.check(trajectory, name='ema_per_iter')   # a compat_ema.testing.golden.Trajectory

Golden files live beside the test, in a directory named after the test module
(``tests/test_x.py`` -> ``tests/test_x/<name>.pt``), as pytest-regressions'
``datadir`` does. ``name`` defaults to the test's name (with its parameter id).
``pytest --golden-record`` (re)writes them, atomically; without it a missing
file fails the test with the command that records it. Comparison is bitwise by
default; ``ulp=`` and ``atol=`` loosen it (see :mod:`compat_ema.testing.golden`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest

from . import golden

_RECORDED = pytest.StashKey[List[str]]()


def pytest_addoption(parser) -> None:
    """Add ``--golden-record``."""
    group = parser.getgroup('compat_ema golden', 'compat_ema golden files (ema_golden fixture)')
    group.addoption('--golden-record', action='store_true', default=False,
                    help='(re)record the golden files that ema_golden.check() compares against, '
                         'instead of comparing')


def pytest_configure(config) -> None:
    """Start the list of golden files recorded in this session."""
    config.stash[_RECORDED] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """List the golden files written under ``--golden-record``."""
    recorded = config.stash.get(_RECORDED, [])
    if recorded:
        terminalreporter.write_sep('-', f'compat_ema golden: recorded {len(recorded)} file(s)')
        for path in recorded:
            terminalreporter.write_line(path)


class GoldenChecker:
    """What the ``ema_golden`` fixture gives a test: :meth:`check` and :meth:`path`."""

    def __init__(self, request):
        self._request = request
        self._record = bool(request.config.getoption('golden_record'))
        test_file = Path(str(getattr(request.node, "path", None) or request.node.fspath))
        self.datadir = test_file.parent / test_file.stem
        self._used: Dict[str, int] = {}

    def path(self, name: Optional[str] = None) -> Path:
        """The golden file for ``name`` (default: this test's name, sanitised)."""
        if name is None:
            name = self._request.node.name
        safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'golden'
        return self.datadir / f'{safe}.pt'

    def check(self, obj: Any, name: Optional[str] = None, *, ulp: golden.TolSpec = 0,
              atol: golden.TolSpec = 0.0, meta: Optional[Mapping[str, Any]] = None) -> None:
        """Compare ``obj`` (state dict, module, Trajectory, list of state dicts) with its
        golden file, or record it under ``--golden-record``.

        Call it once per name in a test; a second call without ``name`` gets ``_1``, ...
        """
        if name is None:
            base = self._request.node.name
            n = self._used.get(base, 0)
            self._used[base] = n + 1
            name = base if n == 0 else f'{base}_{n}'
        path = self.path(name)
        nodeid = self._request.node.nodeid
        obj = golden.as_golden(obj)
        if self._record:
            golden.save_golden(path, obj, meta={'test': nodeid, **dict(meta or {})})
            self._request.config.stash[_RECORDED].append(str(path))
            return
        if not path.exists():
            pytest.fail(f'golden file {path} does not exist; record it with:\n'
                        f'    pytest {nodeid} --golden-record', pytrace=False)
        message = None
        try:
            expected, _ = golden.load_golden(path)
            golden.assert_matches(expected, obj, ulp=ulp, atol=atol, context=str(path))
        except golden.GoldenFileError as exc:
            message = str(exc)
        except golden.GoldenMismatch as exc:
            message = (f'{exc}\n(re-record with: pytest {nodeid} --golden-record, if the '
                       'change is intended)')
        if message is not None:  # outside the except: no chained traceback in the report
            pytest.fail(message, pytrace=False)


@pytest.fixture
def ema_golden(request) -> GoldenChecker:
    """Compare EMA state against golden files next to the test (``--golden-record`` to record)."""
    return GoldenChecker(request)
