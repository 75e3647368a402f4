"""compat_ema.testing.golden: ULP distance, comparison, file format, atomic writes, policy.

Expected ULP distances come from numpy's ``nextafter`` (an independent count of
representable steps), not from the code under test.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from compat_ema.core.torch_features import save_byte_stable
from compat_ema.testing import golden

MIGRATION = Path(__file__).resolve().parents[1] / 'MIGRATION.md'


def _steps(x: float, n: int, dtype) -> float:
    v = np.array(x, dtype=dtype)
    for _ in range(abs(n)):
        v = np.nextafter(v, np.array(np.inf if n > 0 else -np.inf, dtype=dtype))
    return float(v)


@pytest.mark.parametrize('np_dtype,t_dtype', [(np.float32, torch.float32),
                                               (np.float64, torch.float64),
                                               (np.float16, torch.float16)])
@pytest.mark.parametrize('x,n', [(1.0, 1), (1.0, -1), (0.3, 7), (-2.5, 1000), (1e-30, 3),
                                 (-0.0, 2)])
def test_ulp_distance_counts_representable_steps(np_dtype, t_dtype, x, n):
    if np_dtype is np.float16 and abs(x) < 1e-7 and x != 0:
        pytest.skip('underflows in float16')
    a = torch.tensor([x], dtype=t_dtype)
    b = torch.tensor([_steps(x, n, np_dtype)], dtype=t_dtype)
    assert golden.ulp_distance(a, b).item() == abs(n)
    assert golden.ulp_distance(b, a).item() == abs(n)


def test_ulp_distance_across_zero_and_specials():
    tiny = float(np.nextafter(np.float32(0), np.float32(1)))
    a = torch.tensor([-tiny, -0.0, float('nan'), float('inf')])
    b = torch.tensor([tiny, 0.0, 1.0, float('inf')])
    assert golden.ulp_distance(a, b).tolist() == [2.0, 0.0, float('inf'), 0.0]
    # bfloat16: one step of its 7-bit mantissa at 1.0 is 2**-7
    one = torch.tensor([1.0], dtype=torch.bfloat16)
    assert golden.ulp_distance(one, one + 2 ** -7).item() == 1


def test_compare_state_dicts_reports_every_problem():
    exp = {'w': torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 'n': torch.tensor(3),
           'gone': torch.zeros(1), 'shape': torch.zeros(2), 'dt': torch.zeros(2)}
    act = {'w': torch.tensor([[1.0, 2.0], [3.5, 4.0]]), 'n': torch.tensor(3),
           'extra': torch.zeros(1), 'shape': torch.zeros(3), 'dt': torch.zeros(2, dtype=torch.float64)}
    diffs = {d.key: d for d in golden.compare_state_dicts(exp, act)}
    assert {k: d.problem for k, d in diffs.items()} == {
        'gone': 'missing', 'extra': 'unexpected', 'w': 'values', 'shape': 'shape', 'dt': 'dtype'}
    w = diffs['w']
    assert (w.n_bad, w.numel, w.max_abs, w.first_index) == (1, 4, 0.5, (1, 0))
    assert w.max_ulp == 2 ** 21  # 3.0 -> 3.5 in float32: a quarter of [2, 4)'s 2**23 steps
    text = w.describe()
    assert "'w': 1/4 elements differ, max abs error 0.5, max ULP error 2097152, " \
           'first at index [1, 0]: expected 3.0, got 3.5' == text


def test_tolerances_and_exact_integers():
    x = torch.tensor([1.0, -0.0, 5.0])
    y = torch.tensor([_steps(1.0, 3, np.float32), 0.0, 5.0])
    assert golden.compare_state_dicts({'x': x}, {'x': y})            # bitwise: -0 != +0
    assert golden.compare_state_dicts({'x': x}, {'x': y}, ulp=2)     # 3 ULP > 2
    assert not golden.compare_state_dicts({'x': x}, {'x': y}, ulp=3)
    assert not golden.compare_state_dicts({'x': x}, {'x': y}, atol=1e-6)
    assert not golden.compare_state_dicts({'x': x}, {'x': y}, ulp={'float32': 3})
    assert golden.compare_state_dicts({'x': x}, {'x': y}, ulp={'float64': 3})  # wrong dtype key
    n = {'n': torch.tensor([3])}
    assert golden.compare_state_dicts(n, {'n': torch.tensor([4])}, ulp=10, atol=10.0)


def test_trajectory_round_trip_is_byte_stable(tmp_path):
    traj = golden.Trajectory()
    m = torch.nn.Linear(2, 2).to(torch.bfloat16)
    traj.record('init', m)
    m.register_buffer('late', torch.arange(3))
    traj.record('after', m.state_dict())
    with torch.no_grad():
        m.weight.add_(1)  # recorded snapshots are clones
    p1 = golden.save_golden(tmp_path / 'a.pt', traj, meta={'note': 'x'})
    p2 = golden.save_golden(tmp_path / 'b.pt', traj, meta={'note': 'x'})
    # torch 1.8 names storage records after memory addresses: the content is stable there
    assert (p1.read_bytes() == p2.read_bytes()) is save_byte_stable()
    back, meta = golden.load_golden(p1)
    assert meta['note'] == 'x' and meta['recorded_with']['torch'] == torch.__version__
    assert back.labels == ['init', 'after'] and 'late' not in back.snapshots[0]
    golden.assert_matches(traj, back)
    with pytest.raises(golden.GoldenMismatch, match=r"first at step 0 \('init'\), key 'weight'"):
        golden.assert_matches(back, [('init', {k: v for k, v in m.state_dict().items()
                                               if k != 'late'}), ('after', m.state_dict())])


def test_state_dict_kind_and_kind_mismatch(tmp_path):
    sd = {'a': torch.ones(2), 'steps': torch.tensor(4)}
    golden.save_golden(tmp_path / 's.pt', sd)
    assert golden.assert_matches_golden(dict(sd), tmp_path / 's.pt')['recorded_with']
    with pytest.raises(golden.GoldenMismatch, match='golden is a state dict, compared object '
                                                   'is a trajectory'):
        golden.assert_matches_golden([sd], tmp_path / 's.pt')
    with pytest.raises(TypeError, match="entry 'a' is int"):
        golden.save_golden(tmp_path / 'bad.pt', {'a': 1})


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = golden.save_golden(tmp_path / 'g.pt', {'a': torch.ones(1)})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', boom)  # what core.atomic's rename calls
    with pytest.raises(OSError, match='disk full'):
        golden.save_golden(path, {'a': torch.zeros(1)})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['g.pt']  # no temp file left


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(golden.GoldenFileError, match='does not exist'):
        golden.load_golden(tmp_path / 'nope.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a zip')
    with pytest.raises(golden.GoldenFileError, match=r'junk\.pt: cannot be read safely'):
        golden.load_golden(tmp_path / 'junk.pt')
    torch.save({'format': golden.FORMAT, 'version': 99, 'kind': 'state_dict', 'keys': [],
                'data': {}}, tmp_path / 'future.pt')
    with pytest.raises(golden.GoldenFileError, match='format version 99'):
        golden.load_golden(tmp_path / 'future.pt')
    torch.save({'format': golden.FORMAT, 'version': 1, 'kind': 'trajectory', 'keys': ['a'],
                'data': {'a': torch.zeros(2, 1)}, 'labels': ['x'], 'index': {'a': [0]},
                'meta_json': '{}'}, tmp_path / 'index.pt')
    with pytest.raises(golden.GoldenFileError, match="index of key 'a' does not match"):
        golden.load_golden(tmp_path / 'index.pt')


def test_tolerance_policy_rows():
    assert golden.tolerance_for('2.13.0+cpu', 'cpu').ulp == 0
    assert golden.tolerance_for('2.13.0+cpu', 'cpu').atol == {}
    assert golden.tolerance_for('2.6.0+cu124', 'cpu').ulp == 0
    assert golden.tolerance_for('1.13.1+cu117', 'cpu').ulp == {'default': 0, 'bfloat16': 2}
    assert golden.tolerance_for('1.13.1+cu117', 'cpu').atol == {'bfloat16': 2 ** -11}
    for version in ('1.8.1+cu102', '1.10.2+cu102', '1.12.1+cu102'):
        assert golden.tolerance_for(version, 'cpu').ulp == {'default': 0, 'bfloat16': 2}
    assert golden.tolerance_for('2.14.1+cu130', 'cpu').ulp == 0
    for version, device in [('2.6.0+cpu', 'cpu'), ('1.13.1', 'cpu'), ('2.13.0+cu126', 'cpu'),
                            ('2.13.0+cu126', 'cuda'), ('2.13.0+cpu', 'cuda:0')]:
        tol = golden.tolerance_for(version, device)
        assert tol.ulp == 16 and tol.atol['float32'] == 16 * 2 ** -23, (version, device)
    with pytest.raises(LookupError, match="no tolerance policy for torch 2.13.0 on 'mps'"):
        golden.tolerance_for('2.13.0', 'mps')


def test_migration_table_matches_the_code_table():
    text = MIGRATION.read_text(encoding='utf-8')
    section = text.split('## Tolerance policy', 1)[1].split('\n## ', 1)[0]
    lines = section.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('| torch build |'))
    table = []
    for line in lines[start:]:  # the policy table only: up to its first non-table line
        if not line.startswith('|'):
            break
        table.append(line)
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) < 3 or not line.startswith('|') or set(cells[0]) <= set('-: ') \
                or cells[0] == 'torch build':
            continue
        build = '*' if cells[0].startswith('any') else cells[0].strip('`')
        ulp = {'default': int(re.match(r'\d+', cells[2]).group())}
        ulp.update((k, int(v)) for k, v in re.findall(r'(\w+): (\d+)', cells[2]))
        rows.append((build, cells[1], ulp))
    code = [(pat, dev, dict(tol.ulp) if isinstance(tol.ulp, dict) else {'default': tol.ulp})
            for pat, dev, tol in golden.TOLERANCE_TABLE]
    assert rows == code
