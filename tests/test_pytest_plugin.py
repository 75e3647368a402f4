"""The ``ema_golden`` pytest plugin, exercised with pytester on models that are not the project's.

A user's test suite (a GRU and a Transformer encoder layer averaged by compat_ema's
mmengine ``ExponentialMovingAverage``) records its golden files, passes against
them, fails with a readable diff when the EMA changes, and fails clearly when a
golden file is missing, corrupt, or a malicious pickle.
"""
from __future__ import annotations

import os
import pickle
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ['pytester']

README = Path(__file__).resolve().parents[1] / 'README.md'

USER_TESTS = '''
import os
import torch
from compat_ema.mmengine.model import ExponentialMovingAverage
from compat_ema.testing.golden import Trajectory


def _train(model, steps=5):
    """A user's loop: a fixed update per step, the EMA after each; perturbed on request."""
    ema = ExponentialMovingAverage(model, momentum=0.1)
    traj = Trajectory()
    perturb = float(os.environ.get('GOLDEN_PERTURB', '0'))
    for i in range(steps):
        with torch.no_grad():
            for j, p in enumerate(model.parameters()):
                p.add_(0.01 * (i + 1) * (-1) ** j)
        ema.update_parameters(model)
        if i == 3 and perturb:
            with torch.no_grad():
                next(ema.module.parameters()).view(-1)[5] += perturb
        traj.record(f'iter {i}', ema.state_dict())
    return ema, traj


def test_gru_trajectory(ema_golden):
    torch.manual_seed(0)
    _, traj = _train(torch.nn.GRU(3, 4))
    ema_golden.check(traj, atol=float(os.environ.get('GOLDEN_ATOL', '0')))


def test_transformer_final_state(ema_golden):
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    ema, _ = _train(layer, steps=3)
    ema_golden.check(ema.state_dict(), name='transformer_ema')
'''


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.delenv('GOLDEN_PERTURB', raising=False)
    monkeypatch.delenv('GOLDEN_ATOL', raising=False)
    pytester.makepyfile(test_user_ema=USER_TESTS)
    return pytester


def _run(pytester, *args):
    # the nested runs load the plugin by name, not by entry point: in-process, a second run
    # can otherwise pick up entry points of whatever an earlier import put on sys.path (torch
    # 1.10 imports pkg_resources, which adds setuptools' vendored typeguard plugin) and fail
    # before collection; test_entry_point_is_registered checks the entry point itself
    before = os.environ.get('PYTEST_DISABLE_PLUGIN_AUTOLOAD')
    os.environ['PYTEST_DISABLE_PLUGIN_AUTOLOAD'] = '1'
    try:
        return pytester.runpytest('-p', 'compat_ema.testing.pytest_plugin',
                                  '-p', 'no:cacheprovider', *args)
    finally:
        if before is None:
            del os.environ['PYTEST_DISABLE_PLUGIN_AUTOLOAD']
        else:
            os.environ['PYTEST_DISABLE_PLUGIN_AUTOLOAD'] = before


def _golden_files(pytester):
    return sorted(p.name for p in (pytester.path / 'test_user_ema').iterdir())


def test_entry_point_is_registered():
    eps = entry_points()
    group = eps.select(group='pytest11') if hasattr(eps, 'select') else eps.get('pytest11', [])
    assert {(e.name, e.value) for e in group} >= {
        ('compat_ema_golden', 'compat_ema.testing.pytest_plugin')}


def test_record_then_pass(suite):
    rec = _run(suite, '--golden-record')
    rec.assert_outcomes(passed=2)
    rec.stdout.fnmatch_lines(['*compat_ema golden: recorded 2 file(s)*'])
    # beside the test module, named after the test (or the name given); no temp files left
    assert _golden_files(suite) == ['test_gru_trajectory.pt', 'transformer_ema.pt']
    _run(suite).assert_outcomes(passed=2)


def test_perturbed_ema_fails_with_readable_diff(suite, monkeypatch):
    _run(suite, '--golden-record').assert_outcomes(passed=2)
    monkeypatch.setenv('GOLDEN_PERTURB', '1e-3')
    res = _run(suite, '-k', 'gru')
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "2 snapshot(s) differ from the golden trajectory (bitwise); first at step 3 " \
           "('iter 3'), key 'module.weight_ih_l0'" in out
    line = next(ln for ln in out.splitlines() if "'module.weight_ih_l0': 1/36 elements" in ln)
    assert re.search(r'max abs error 0\.001\b', line), line
    assert re.search(r'max ULP error \d+', line) and 'first at index [1, 2]' in line, line
    assert 'last differing step: 4' in out
    assert 'pytest test_user_ema.py::test_gru_trajectory --golden-record' in out
    # the same perturbation passes under an absolute tolerance above it
    monkeypatch.setenv('GOLDEN_ATOL', '2e-3')
    _run(suite, '-k', 'gru').assert_outcomes(passed=1)


def test_missing_golden_file_says_how_to_record(suite):
    res = _run(suite, '-k', 'transformer')
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(['*test_user_ema/transformer_ema.pt does not exist; record it with:*',
                              '*pytest test_user_ema.py::test_transformer_final_state '
                              '--golden-record*'])


def test_corrupt_golden_file_is_a_clear_error(suite):
    _run(suite, '--golden-record').assert_outcomes(passed=2)
    path = suite.path / 'test_user_ema' / 'transformer_ema.pt'
    path.write_bytes(path.read_bytes()[:200])  # truncated
    res = _run(suite, '-k', 'transformer')
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(['*transformer_ema.pt: cannot be read safely as a compat_ema.golden '
                              'file*re-record it (pytest --golden-record)*'])


class _Payload:
    def __reduce__(self):
        return (open, (os.environ['GOLDEN_MARKER'], 'w'))


def test_malicious_or_foreign_pickle_is_refused_not_run(suite, monkeypatch, tmp_path):
    _run(suite, '--golden-record').assert_outcomes(passed=2)
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('GOLDEN_MARKER', str(marker))
    import torch
    torch.save({'x': _Payload()}, suite.path / 'test_user_ema' / 'transformer_ema.pt',
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    marker.unlink(missing_ok=True)  # torch.save itself does not call __reduce__'s result
    res = _run(suite, '-k', 'transformer')
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(['*cannot be read safely as a compat_ema.golden file*'])
    assert not marker.exists()
    torch.save({'weight': torch.ones(2)}, suite.path / 'test_user_ema' / 'transformer_ema.pt')
    res = _run(suite, '-k', 'transformer')
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(['*not a valid compat_ema.golden file (missing format marker)*'])


def test_readme_example_runs(pytester):
    """The README's "Golden tests for your own models" block, run as a user would."""
    text = README.read_text(encoding='utf-8')
    m = re.search(r'<!-- golden-example -->\s*```python\n(.*?)```', text, re.S)
    assert m, 'README.md lost its <!-- golden-example --> python block'
    pytester.makepyfile(test_readme_example=m.group(1))
    _run(pytester, '--golden-record').assert_outcomes(passed=1)
    assert list((pytester.path / 'test_readme_example').glob('*.pt'))
    _run(pytester).assert_outcomes(passed=1)
