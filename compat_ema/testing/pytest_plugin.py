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

``check`` pins whatever it is given, training numerics included: a state dict of
an EMA after live training differs in the last bits on another CPU, BLAS or
thread count. For goldens that pin the EMA and not the machine, record the run
with ``ema_golden.replay(name)`` (:class:`compat_ema.testing.replay.EMAReplay`):
the inputs the EMA saw are recorded and fed back on every machine, and the file
holds one recording per kernel class: after a ``--golden-record`` session the
plugin re-runs the recorded tests in child processes under every other
``ATEN_CPU_CAPABILITY`` this CPU can run (``--golden-record-class``), adding
their arithmetic to the file. See docs/golden-tests.md.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest

from . import golden
from .environment import environment_note, fingerprint, producible_capabilities, training_key
from .replay import EMAReplay

_RECORDED = pytest.StashKey[List[str]]()
_REPLAYED = pytest.StashKey[List[str]]()



def pytest_addoption(parser) -> None:
    """Add ``--golden-record``."""
    group = parser.getgroup('compat_ema golden', 'compat_ema golden files (ema_golden fixture)')
    group.addoption('--golden-record', action='store_true', default=False,
                    help='(re)record the golden files that ema_golden.check() compares against, '
                         'instead of comparing')
    group.addoption('--golden-record-class', action='store_true', default=False,
                    help='add the running kernel class\'s arithmetic to existing ema_golden.replay '
                         'files (run by --golden-record itself under each ATEN_CPU_CAPABILITY)')


def pytest_configure(config) -> None:
    """Start the list of golden files recorded in this session."""
    config.stash[_RECORDED] = []
    config.stash[_REPLAYED] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    """After ``--golden-record``: re-run the tests that recorded ``replay`` goldens under the
    other kernel classes of this CPU, each adding its own arithmetic to the files."""
    config = session.config
    nodeids = sorted(set(config.stash.get(_REPLAYED, [])))
    if not nodeids or exitstatus != 0 or hasattr(config, 'workerinput'):
        return
    for req in producible_capabilities():  # AVX2 and DEFAULT on an AVX2 CPU, + AVX512
        env = dict(os.environ, ATEN_CPU_CAPABILITY=req)
        proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                               '-p', 'no:xdist', '--golden-record-class', *nodeids],
                              env=env, cwd=str(config.invocation_params.dir),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise pytest.UsageError(f'compat_ema golden: recording kernel class '
                                    f'ATEN_CPU_CAPABILITY={req} failed:\n{proc.stdout[-3000:]}')

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
            golden.save_golden(path, obj, meta={'test': nodeid, 'environment': fingerprint(),
                                                **dict(meta or {})})
            self._request.config.stash[_RECORDED].append(str(path))
            return
        if not path.exists():
            pytest.fail(f'golden file {path} does not exist; record it with:\n'
                        f'    pytest {nodeid} --golden-record', pytrace=False)
        message = None
        recorded_env = None
        try:
            expected, file_meta = golden.load_golden(path)
            recorded_env = file_meta.get('environment')
            golden.assert_matches(expected, obj, ulp=ulp, atol=atol, context=str(path))
        except golden.GoldenFileError as exc:
            message = str(exc)
        except golden.GoldenMismatch as exc:
            here = fingerprint()
            env = ''
            if recorded_env and training_key(recorded_env) != training_key(here):
                env = (f'\n({environment_note(recorded_env, here)}: this golden pins live values, '
                       'whose last bits are the machine\'s; ema_golden.replay() pins the EMA '
                       'only, see docs/golden-tests.md)')
            message = (f'{exc}{env}\n(re-record with: pytest {nodeid} --golden-record, if the '
                       'change is intended)')
        if message is not None:  # outside the except: no chained traceback in the report
            pytest.fail(message, pytrace=False)


    def replay(self, name: Optional[str] = None, device: Any = 'cpu',
               meta: Optional[Mapping[str, Any]] = None) -> EMAReplay:
        """An :class:`~compat_ema.testing.replay.EMAReplay` for golden ``name`` (default: the
        test's name); use it as a context manager, it checks (or records) on exit."""
        path = self.path(name)
        nodeid = self._request.node.nodeid
        config = self._request.config
        if self._record:
            def done(p):
                config.stash[_RECORDED].append(str(p))
                config.stash[_REPLAYED].append(nodeid)
            return EMAReplay(path, 'record', device, {'test': nodeid, **dict(meta or {})}, done)
        mode = 'record-class' if config.getoption('golden_record_class') else 'check'
        if not path.exists():
            pytest.fail(f'golden file {path} does not exist; record it with:\n'
                        f'    pytest {nodeid} --golden-record', pytrace=False)

        def fail(message: str) -> None:
            pytest.fail(f'{message}\n(re-record with: pytest {nodeid} --golden-record, if the '
                        'change is intended)', pytrace=False)
        return EMAReplay(path, mode, device, fail=fail)


@pytest.fixture
def ema_golden(request) -> GoldenChecker:
    """Compare EMA state against golden files next to the test (``--golden-record`` to record)."""
    return GoldenChecker(request)
