"""``compat-ema doctor`` reads Python configs without executing them, with ``_base_`` merged."""
from __future__ import annotations

from compat_ema.cli import main as cli_main
from compat_ema.doctor import diagnose, load_config


def test_python_config_is_parsed_not_executed(tmp_path):
    marker = tmp_path / 'ran'
    (tmp_path / 'base.py').write_text(
        "custom_hooks = [dict(type='ExpMomentumEMAHook', momentum=0.0001, priority=49)]\n")
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("_base_ = './base.py'\n"
                   f"open({str(marker)!r}, 'w').write('x')\n"
                   "resume_from = 'work_dirs/latest.pth'\n")
    loaded = load_config(str(cfg))
    assert not marker.exists()
    assert loaded['resume_from'] == 'work_dirs/latest.pth'
    assert loaded['custom_hooks'][0]['type'] == 'ExpMomentumEMAHook'
    # runner-level resume_from without the hook's own resume_from loses the EMA history
    # (docs/runner-behaviour.md#resume-matrix)
    assert any(f.ref.startswith('resume-matrix') and f.severity == 'warning' for f in diagnose(loaded)), \
        diagnose(loaded)
    assert cli_main(['doctor', str(cfg)]) == 1
    assert not marker.exists()
