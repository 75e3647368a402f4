"""docs/hooks.md "Testing EMA setups without OpenMMLab": the example block runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from helpers import BN_COUNTS_IN_PLACE, resume_comparable

README = Path(__file__).resolve().parents[1] / 'docs' / 'hooks.md'


def test_readme_harness_example_runs(tmp_path, monkeypatch, capsys):
    m = re.search(r'<!-- harness-example -->\s*```python\n(.*?)```', README.read_text(encoding='utf-8'),
                  re.S)
    assert m, 'docs/hooks.md lost its <!-- harness-example --> python block'
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TMPDIR', str(tmp_path))
    namespace: dict = {}
    if not BN_COUNTS_IN_PLACE:   # torch 1.8-1.10: resumed == uninterrupted but for the BN counters
        line = 'assert all(full.final[k].equal(part.final[k]) for k in full.final)'
        assert line in code
        code = code.replace(line, line.replace('for k in full.final',
                                               'for k in resume_comparable(full.final)'))
        namespace['resume_comparable'] = resume_comparable
    exec(compile(code, 'docs/hooks.md', 'exec'), namespace)
    out = capsys.readouterr().out
    assert "('OptimizerHook', 40), ('ExpMomentumEMAHook', 49), ('CheckpointHook', 50)" in out
    assert "method='after_train_epoch'" in out and 'iter=3, epoch=0' in out
    full, part = namespace['full'], namespace['part']
    assert sorted(full.checkpoints) == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    assert all(torch.equal(full.final[k], part.final[k]) for k in resume_comparable(full.final))
    # not vacuous: the EMA differs from the raw weights after training
    assert not torch.equal(full.final['fc.weight'], full.final['ema_fc_weight'])
