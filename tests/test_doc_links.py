"""Every reference a user or maintainer follows resolves inside the repository.

Checked in README.md, MIGRATION.md, docs/, benchmarks/RESULTS.md, the text of every module under
compat_ema/ (docstrings and messages) and the CLI's help:

* markdown links ``[text](target)`` to a file of the repository, with their ``#anchor`` (a
  heading's GitHub slug or an ``<a id="...">``);
* paths written in the text (``docs/x.md#anchor``, ``tests/test_x.py::test_name``,
  ``compat_ema/...py``, ``reference/...``, ``benchmarks/...``, ``MIGRATION.md``);
* dotted names ``compat_ema.a.b`` (importable module, then attributes);
* section references ``MIGRATION.md, "Title"`` (a heading of that title);
* no citation of the internal notes the project was built from (their names are spelled in pieces
  below so that this file does not trip its own check), nor of their old section labels (a
  letter, a dot and a number), anywhere in the shipped text or the tests.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]

_INTERNAL = re.compile('|'.join(['RUNNER' + '_SPEC', 'UPSTREAM' + '_NOTES', 'ORACLE' + r'\.md',
                                 'shared' + '/spec', 'shared' + '/seeds', r'\.\./' + 'shared']),
                       re.I)
_OLD_LABEL = re.compile(r'(?<![\w.])[ABC]\.(?:1[01]|[1-9])(?![\w.])')
_MD_LINK = re.compile(r'\]\(([^)\s]+)\)')
_PATH = re.compile(r'(?<![\w/.-])((?:docs|tests|compat_ema|benchmarks|reference)/[\w./-]*\w'
                   r'|MIGRATION\.md|README\.md)(\*)?(#[\w-]+)?(::\w+)?')
#: not references: the golden files' format tag; ``test_x`` is the placeholder for a user's test,
#: ``test_ema_golden`` the user's test file (and its golden folder) in docs/golden-tests.md
NOT_REFERENCES = {'compat_ema.golden'}
_PLACEHOLDER = re.compile(r'(?:^|/)(?:test_x|test_ema_golden)(?:\.py)?(?:$|/|::)')
_DOTTED = re.compile(r'(?<![\w./-])(compat_ema(?:\.\w+)+)')
_SECTION = re.compile(r'((?:docs/)?[\w-]+\.md)[,:]?\s*\(?"([^"]{3,100})"')


def markdown_docs() -> List[Path]:
    docs = [ROOT / 'README.md', ROOT / 'MIGRATION.md', ROOT / 'benchmarks' / 'RESULTS.md']
    docs += sorted((ROOT / 'docs').rglob('*.md'))
    return [d for d in docs if d.exists()]


def python_sources() -> List[Path]:
    return sorted((ROOT / 'compat_ema').rglob('*.py'))


def cli_help() -> str:
    import os
    from unittest import mock
    from compat_ema.cli import build_parser
    with mock.patch.dict(os.environ, COLUMNS='400'):  # argparse wraps at hyphens otherwise
        return _cli_help(build_parser())


def _cli_help(parser) -> str:
    texts = [parser.format_help()]
    for action in parser._actions:
        for sub in getattr(action, 'choices', None) or {}:
            if hasattr(action.choices[sub], 'format_help'):
                texts.append(action.choices[sub].format_help())
    return '\n'.join(texts)


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = re.sub(r'<[^>]+>', '', heading).strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


_ANCHORS: Dict[Path, Set[str]] = {}


def anchors(doc: Path) -> Set[str]:
    if doc not in _ANCHORS:
        text = doc.read_text(encoding='utf-8')
        text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)  # no headings in code
        found: Set[str] = set(re.findall(r'<a id="([\w-]+)"', text))
        seen: Dict[str, int] = {}
        for h in re.findall(r'^#{1,6}\s+(.*?)\s*$', text, re.M):
            s = slug(h)
            n = seen.get(s, 0)
            found.add(s if n == 0 else f'{s}-{n}')
            seen[s] = n + 1
        _ANCHORS[doc] = found
    return _ANCHORS[doc]


def headings(doc: Path) -> Set[str]:
    text = doc.read_text(encoding='utf-8')
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return {re.sub(r'\s+', ' ', h.replace('`', '')).strip()
            for h in re.findall(r'^#{1,6}\s+(.*?)\s*$', text, re.M)}


def _defines(path: Path, name: str) -> bool:
    text = path.read_text(encoding='utf-8', errors='replace')
    return re.search(rf'^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=',
                     text, re.M) is not None


def check_target(base: Path, target: str, anchor: str = '', member: str = '') -> str:
    """'' when ``target`` (relative to ``base``) exists with its anchor/member, else the reason."""
    path = (base / target).resolve() if target else None
    if path is None or not path.exists():
        return f'{target}: no such file or directory in the repository'
    try:
        path.relative_to(ROOT)
    except ValueError:
        return f'{target}: outside the repository'
    if anchor:
        if path.suffix != '.md':
            return f'{target}#{anchor}: anchors only exist in markdown files'
        if anchor not in anchors(path):
            return f'{target}#{anchor}: no such anchor (heading or <a id>)'
    if member:
        if path.suffix != '.py' or not _defines(path, member):
            return f'{target}::{member}: {member} is not defined there'
    return ''


def check_dotted(name: str) -> str:
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        rel = Path(*parts[:i])
        src = ROOT / rel.with_suffix('.py')
        if not src.exists():
            src = ROOT / rel / '__init__.py'
        if not src.exists():
            continue
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:  # an integration module without its framework: read its source
            rest = parts[i:]
            text = src.read_text(encoding='utf-8')
            if rest and not re.search(rf'\b{re.escape(rest[0])}\b', text):
                return f'{name}: {".".join(parts[:i])} has no {rest[0]!r}'
            return ''
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return f'{name}: {".".join(parts[:i])} has no {attr!r}'
            obj = getattr(obj, attr)
        return ''
    return f'{name}: not importable'


def references(text: str, base: Path, markdown: bool) -> Iterator[Tuple[str, str]]:
    """(reference as written, problem or '') for every reference in ``text``."""
    flat = re.sub(r'\s+', ' ', text)
    if markdown:
        for m in _MD_LINK.finditer(text):
            link = m.group(1)
            if re.match(r'[a-z]+:', link):
                continue  # http:, https:, mailto:
            target, _, anchor = link.partition('#')
            where = base / target if target else None
            if where is None:  # same-document anchor
                yield link, '' if anchor in anchors(base_doc[0]) else f'#{anchor}: no such anchor'
                continue
            yield link, check_target(base, target, anchor)
    if markdown:
        text = _MD_LINK.sub('](link)', text)
    for m in _PATH.finditer(text):
        target, anchor, member = m.group(1), (m.group(3) or '')[1:], (m.group(4) or '')[2:]
        if _PLACEHOLDER.search(target):
            continue
        if m.group(2):  # a glob: prefix*
            hit = sorted(ROOT.glob(target + '*'))
            yield m.group(0), '' if hit else f'{target}*: matches no file'
            continue
        yield m.group(0), check_target(ROOT, target, anchor, member)
    for m in _DOTTED.finditer(text):
        if m.group(1) in NOT_REFERENCES:
            continue
        yield m.group(1), check_dotted(m.group(1))
    for m in _SECTION.finditer(flat):
        doc, title = m.group(1), re.sub(r'\s+', ' ', m.group(2).replace('`', '')).strip()
        path = ROOT / doc
        if not path.exists():
            yield m.group(0), f'{doc}: no such document'
        elif not any(h.startswith(title) for h in headings(path)):
            yield m.group(0), f'{doc} has no section titled "{title}"'


base_doc: List[Path] = [ROOT]


def problems_in(path: Path, text: str, markdown: bool) -> List[str]:
    base_doc[0] = path
    rel = path.relative_to(ROOT) if path.is_absolute() else path
    out = []
    for ref, problem in references(text, path.parent, markdown):
        if problem:
            out.append(f'{rel}: {ref!r}: {problem}')
    return out


@pytest.mark.parametrize('doc', markdown_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_references_resolve(doc):
    problems = problems_in(doc, doc.read_text(encoding='utf-8'), markdown=True)
    assert not problems, '\n'.join(problems)


def test_module_docstrings_and_messages_references_resolve():
    problems = []
    for src in python_sources():
        problems += problems_in(src, src.read_text(encoding='utf-8'), markdown=False)
    assert not problems, '\n'.join(problems)


def test_cli_help_references_resolve():
    problems = problems_in(ROOT / 'compat_ema' / 'cli.py', cli_help(), markdown=False)
    assert not problems, '\n'.join(problems)


def _shipped_and_test_files() -> Iterator[Path]:
    yield from markdown_docs()
    for top in ('compat_ema', 'tests', 'reference', 'benchmarks', '.ci'):
        for p in sorted((ROOT / top).rglob('*')):
            if p.is_file() and p.suffix in ('.py', '.md', '.txt', '.sh', '.json', '') \
                    and p.stat().st_size < 2_000_000:
                yield p
    for name in ('pyproject.toml', 'tox.ini'):
        yield ROOT / name


def test_no_citation_of_internal_notes():
    found = []
    for path in _shipped_and_test_files():
        text = path.read_text(encoding='utf-8', errors='replace')
        for m in _INTERNAL.finditer(text):
            line = text.count('\n', 0, m.start()) + 1
            found.append(f'{path.relative_to(ROOT)}:{line}: {m.group(0)}')
        if path.suffix in ('.py', '.md') and 'reference' not in path.parts[-3:-1]:
            for m in _OLD_LABEL.finditer(text):
                line = text.count('\n', 0, m.start()) + 1
                found.append(f'{path.relative_to(ROOT)}:{line}: old section label {m.group(0)!r} '
                             '(link docs/runner-behaviour.md#... instead)')
    assert not found, 'references to documents that do not ship:\n' + '\n'.join(found)


def test_the_checker_catches_what_it_should(tmp_path):
    """The checks above can fail: a broken link, anchor, member, section and dotted name."""
    doc = ROOT / 'README.md'
    bad = ('[x](docs/nope.md) [y](docs/runner-behaviour.md#nope) '
           'tests/test_core.py::test_nope compat_ema.core.nope '
           'MIGRATION.md, "No such section"')
    problems = problems_in(doc, bad, markdown=True)
    assert len(problems) == 5, problems
    good = ('[x](docs/runner-behaviour.md#resume-matrix) tests/test_core.py::test_wrappers '
            'compat_ema.core.kernels MIGRATION.md, "Tolerance policy"')
    assert problems_in(doc, good, markdown=True) == []
    label = 'B' + '.6'
    assert _INTERNAL.search('see ' + 'RUNNER' + '_SPEC ' + label)
    assert _OLD_LABEL.search(f'({label})') and not _OLD_LABEL.search('torch 2.6.0')
