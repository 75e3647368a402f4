"""Every ```python block of MIGRATION.md, README.md and docs/ runs (default env), and every
```bash block marked ``<!-- shell -->``.

Blocks run in document order, in one namespace per document (so a block can
use names an earlier block defined), in a scratch directory holding
``epoch_12.pth``: a checkpoint of mmdet 2.x ``ExpMomentumEMAHook`` at priority
49 written by compat_ema's fake mmcv runner (the file the checkpoint examples
name). Blocks that need the real mmcv / mmdet / mmengine (marked
``<!-- migration: NAME -->`` or starting with ``# oracle``, or importing those
packages) run in tests/oracle/test_migration_doc_oracle.py instead; this file
checks that each of them is marked. A block preceded by ``<!-- NAME -->``
whose NAME a test file under tests/ quotes (``'NAME'``) is run by that test
(which extracts it by its marker) and skipped here. A fragment of a larger
program (``<!-- NAME -->`` with NAME in :data:`PRELUDES`) runs alone in a
subprocess after the prelude that gives it its context.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the documents whose code blocks run: MIGRATION.md, README.md and every docs/ page with code
DOCS = ('MIGRATION.md', 'README.md') + tuple(
    str(p.relative_to(ROOT)) for p in sorted((ROOT / 'docs').glob('*.md'))
    if re.search(r'```python|<!-- shell -->', p.read_text(encoding='utf-8')))
_SHELL = re.compile(r'^<!--\s*shell\s*-->\s*\n```bash\n(.*?)^```', re.S | re.M)
_FENCE = re.compile(r'^```python[^\n]*\n(.*?)^```', re.S | re.M)
_REAL = re.compile(r'^\s*(?:from|import)\s+(?:mmcv|mmengine|mmdet)\b', re.M)


class Block(NamedTuple):
    doc: str
    line: int
    code: str
    marker: str  # '' | 'migration: NAME' | 'oracle'
    comment: str = ''  # NAME of a preceding <!-- NAME --> (any)

    @property
    def tested_by(self) -> str:
        """A test file (other than the doc tests) that extracts this block by its marker."""
        if not self.comment or self.marker:
            return ''
        return _quoting_test(self.comment)

    @property
    def needs_oracle(self) -> bool:
        return bool(self.marker) or bool(_REAL.search(self.code))

    @property
    def where(self) -> str:
        return f'{self.doc}:{self.line}'


def python_blocks(doc: str) -> List[Block]:
    """The ```python blocks of ``doc`` (relative to the repository root), in order."""
    text = (ROOT / doc).read_text(encoding='utf-8')
    out = []
    for m in _FENCE.finditer(text):
        line = text.count('\n', 0, m.start()) + 1
        before = text[:m.start()].rstrip().rsplit('\n', 1)[-1].strip()
        code = m.group(1)
        marker = ''
        mm = re.match(r'<!--\s*(migration:\s*[\w-]+)\s*-->', before)
        if mm:
            marker = mm.group(1)
        elif code.lstrip().startswith('# oracle'):
            marker = 'oracle'
        cm = re.match(r'<!--\s*([\w.:-]+)\s*-->', before)
        out.append(Block(doc, line + 1, code, marker, cm.group(1) if cm else ''))
    return out


def _quoting_test(name: str) -> str:
    own = {'test_migration_doc.py', 'test_migration_doc_oracle.py'}
    for path in sorted((ROOT / 'tests').rglob('*.py')):
        if path.name in own:
            continue
        text = path.read_text(encoding='utf-8', errors='replace')
        if f"'{name}'" in text or f'"{name}"' in text or f'<!-- {name} -->' in text:
            return str(path.relative_to(ROOT))
    return ''


#: blocks that are fragments of a larger program: ``<!-- NAME -->`` -> the code that provides
#: their context. They run alone, in a subprocess (after the prelude), not in the shared namespace.
PRELUDES = {
    # README "Sharded training (FSDP2)": a 1-rank gloo group, a model with .blocks, a momentum
    'fsdp-example': """\
import os, socket
import torch
import torch.nn as nn
import torch.distributed as dist
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
dist.init_process_group('gloo', rank=0, world_size=1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


torch.manual_seed(0)
model = Net()
momentum = 2e-4
""",
}


def make_epoch_12(directory: Path) -> Path:
    """``epoch_12.pth``: mmdet 2.x ExpMomentumEMAHook(momentum=0.0001, priority=49), 12 epochs."""
    import shutil
    from compat_ema.testing import run_scenario
    work = directory / '_epoch_12_run'
    run_scenario('mmcv', 'epoch', hooks=[dict(type='ExpMomentumEMAHook', momentum=0.0001,
                                              priority=49)],
                 max_epochs=12, checkpoint=dict(interval=12), recorders=(), work_dir=str(work))
    dst = directory / 'epoch_12.pth'
    shutil.copyfile(work / 'epoch_12.pth', dst)
    shutil.rmtree(work)
    return dst


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp('docs')
    make_epoch_12(d)
    return d


def run_blocks(blocks: List[Block], directory: Path) -> None:
    """exec each block in one namespace, cwd = ``directory``; errors name the block."""
    ns = {'__name__': 'doc_example'}
    old = os.getcwd()
    os.chdir(directory)
    try:
        for b in blocks:
            try:
                exec(compile(b.code, b.where, 'exec'), ns)
            except Exception as exc:  # noqa: BLE001 - re-raised with the block's location
                raise AssertionError(f'the python block at {b.where} fails: '
                                     f'{type(exc).__name__}: {exc}') from exc
    finally:
        os.chdir(old)


@pytest.mark.parametrize('doc', DOCS)
def test_doc_python_blocks_run(doc, scratch, capsys):
    blocks = [b for b in python_blocks(doc)
              if not b.needs_oracle and not b.tested_by and b.comment not in PRELUDES]
    if doc not in ('MIGRATION.md', 'README.md') and not blocks:
        return  # a docs/ page whose code runs elsewhere (its shell blocks, a marker test)
    assert blocks, f'{doc} has no python block this test can run'
    directory = scratch / doc.replace('/', '_').replace('.', '_')
    directory.mkdir()
    os.link(scratch / 'epoch_12.pth', directory / 'epoch_12.pth')
    run_blocks(blocks, directory)


def shell_blocks(doc: str) -> List[Block]:
    """The ```bash blocks of ``doc`` preceded by ``<!-- shell -->``: run as written."""
    text = (ROOT / doc).read_text(encoding='utf-8')
    return [Block(doc, text.count('\n', 0, m.start()) + 2, m.group(1), '', 'shell')
            for m in _SHELL.finditer(text)]


def test_readme_has_shell_blocks():
    assert len(shell_blocks('README.md')) >= 2


@pytest.mark.parametrize('doc', DOCS)
def test_doc_shell_blocks_run(doc, scratch):
    """Each marked shell block, with bash -e, in a scratch directory holding epoch_12.pth, with
    this interpreter's ``compat-ema`` first on PATH. Its commands must exit 0."""
    import subprocess
    import sys
    bin_dir = os.path.dirname(sys.executable)
    for b in shell_blocks(doc):
        directory = scratch / f'{doc.replace("/", "_").replace(".", "_")}_sh{b.line}'
        directory.mkdir()
        os.link(scratch / 'epoch_12.pth', directory / 'epoch_12.pth')
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get('PATH', ''))
        proc = subprocess.run(['bash', '-e', '-c', b.code], cwd=directory, capture_output=True,
                              text=True, timeout=600, env=env)
        assert proc.returncode == 0, (f'the shell block at {b.where} fails '
                                      f'(exit {proc.returncode}):\n{proc.stderr[-3000:]}')


@pytest.mark.parametrize('doc', DOCS)
def test_doc_fragments_run_with_their_prelude(doc, tmp_path):
    import subprocess
    import sys
    for b in python_blocks(doc):
        if b.comment not in PRELUDES:
            continue
        if b.comment == 'fsdp-example':
            try:
                import torch.distributed.fsdp as fsdp
            except Exception as exc:  # torch 1.13 on Python 3.11: ValueError (a dataclass default)
                pytest.skip(f'{b.where}: torch.distributed.fsdp does not import here ({exc!r:.80})')
            if not hasattr(fsdp, 'fully_shard'):
                pytest.skip(f'{b.where} needs FSDP2 (torch.distributed.fsdp.fully_shard)')
        script = tmp_path / f'{b.comment}.py'
        script.write_text(PRELUDES[b.comment] + '\n# --- ' + b.where + '\n' + b.code +
                          '\nimport torch.distributed as dist\n'
                          'if dist.is_initialized():\n    dist.destroy_process_group()\n')
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f'the python block at {b.where} fails:\n{proc.stderr[-3000:]}'


@pytest.mark.parametrize('doc', DOCS)
def test_blocks_needing_the_real_frameworks_are_marked(doc):
    """An unmarked block importing mmcv/mmengine/mmdet would silently never run."""
    for b in python_blocks(doc):
        if _REAL.search(b.code):
            assert b.marker, (f'{b.where} imports mmcv/mmengine/mmdet: mark it with '
                              '<!-- migration: NAME --> or a first line "# oracle"')


def test_block_extraction():
    sample = ('x\n<!-- migration: setup -->\n```python\nimport mmengine\n```\n'
              '```python\n# oracle\ny = 1\n```\n```python\nz = 2\n```\n```bash\nls\n```\n')
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / 'X.md'
        p.write_text(sample)
        global ROOT
        old, ROOT = ROOT, Path(d)
        try:
            blocks = python_blocks('X.md')
        finally:
            ROOT = old
    assert [(b.marker, b.needs_oracle, b.code) for b in blocks] == [
        ('migration: setup', True, 'import mmengine\n'), ('oracle', True, '# oracle\ny = 1\n'),
        ('', False, 'z = 2\n')]
    assert [b.line for b in blocks] == [4, 7, 11]
