"""Every ```python block of MIGRATION.md, README.md and docs/, in document order, with the real
frameworks.

The default-env test (tests/test_migration_doc.py) runs the blocks that need
only compat_ema; here all of them run, in one namespace per document, with the
real mmcv 1.6 / mmdet 2.28 / mmengine 0.10.7 importable (runner_kit.prepare's
patches: no sleeps in the runner loops, mmengine checkpoints loadable on
torch 2.13), in a scratch directory holding ``epoch_12.pth``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from runner_kit import prepare

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_migration_doc import (DOCS, PRELUDES, make_epoch_12, python_blocks,  # noqa: E402
                                run_blocks)


@pytest.mark.parametrize('doc', DOCS)
def test_every_block_runs_with_the_real_frameworks(doc, tmp_path, monkeypatch):
    threads = prepare(monkeypatch)
    try:
        # the rest: their own tests, or (fragments) tests/test_migration_doc.py with a prelude
        blocks = [b for b in python_blocks(doc) if not b.tested_by and b.comment not in PRELUDES]
        if not blocks and doc.startswith('docs/'):
            return  # a docs/ page whose code runs elsewhere (a marker test, a prelude)
        assert blocks
        make_epoch_12(tmp_path)
        run_blocks(blocks, tmp_path)
    finally:
        torch.set_num_threads(threads)
