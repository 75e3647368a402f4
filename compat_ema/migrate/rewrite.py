"""Edit a config's source text at AST node positions, so the rest survives as written.

Edits are ``(start, end, text)`` on the UTF-8 bytes of the file (``ast``
column offsets count bytes); :func:`apply_edits` applies them back to front.
:func:`entry_edits` turns a :class:`~compat_ema.migrate.mapping.MappedEntry`
into edits on the ``dict(...)`` call or ``{...}`` literal it came from:
replace the ``type`` value, insert keys after it (on their own line when the
entry is written one key per line), rename/revalue/drop keys. Comments and
formatting elsewhere in the entry are untouched.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .configparse import SourceFile

__all__ = ['Edit', 'apply_edits', 'render', 'entry_edits', 'node_span', 'UneditableEntry',
           'append_to_list_edit']


class UneditableEntry(ValueError):
    """An entry written in a form the editor does not change in place (``**kw``, positionals)."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


def apply_edits(data: bytes, edits: Sequence[Edit]) -> bytes:
    """Apply non-overlapping edits (insertions at equal offsets keep their order)."""
    ordered = sorted(enumerate(edits), key=lambda p: (p[1].start, p[1].end, p[0]), reverse=True)
    last_start = None
    for _, e in ordered:
        if last_start is not None and e.end > last_start:
            raise ValueError(f'overlapping edits at byte {e.start}..{e.end}')
        data = data[:e.start] + e.text.encode('utf-8') + data[e.end:]
        last_start = e.start
    return data


def render(value: Any, indent: int = 0) -> str:
    """Python source for a config value: dicts as ``dict(...)`` where keys allow it."""
    pad = ' ' * indent
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            inner = ', '.join(f'{k}={render(v, indent + 4)}' for k, v in value.items())
            return f'dict({inner})'
        inner = ', '.join(f'{render(k)}: {render(v, indent + 4)}' for k, v in value.items())
        return '{' + inner + '}'
    if isinstance(value, list):
        if not value:
            return '[]'
        inner = (',\n' + pad + '    ').join(render(v, indent + 4) for v in value)
        return '[\n' + pad + '    ' + inner + ',\n' + pad + ']'
    if isinstance(value, tuple):
        return '(' + ', '.join(render(v, indent) for v in value) + (',)' if len(value) == 1 else ')')
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    raise ValueError(f'cannot write {value!r} ({type(value).__name__}) into a config')


def node_span(src: SourceFile, node: ast.AST) -> Tuple[int, int]:
    """Byte offsets of ``node`` in ``src``."""
    offs = src.line_offsets
    return (offs[node.lineno - 1] + node.col_offset,  # type: ignore[attr-defined]
            offs[node.end_lineno - 1] + node.end_col_offset)  # type: ignore[attr-defined]


@dataclass
class _Item:
    key: str
    start: int       # start of the whole item (key)
    key_end: int     # end of the key text
    value_start: int
    end: int         # end of the value
    line: int        # line of the item start


def _items(src: SourceFile, node: ast.expr) -> List[_Item]:
    data = src.text.encode('utf-8')
    offs = src.line_offsets
    items: List[_Item] = []
    if isinstance(node, ast.Call):
        if node.args:
            raise UneditableEntry('dict(...) with positional arguments')
        for kw in node.keywords:
            if kw.arg is None:
                raise UneditableEntry('dict(...) with **kwargs')
            vs, ve = node_span(src, kw.value)
            if getattr(kw, 'lineno', None) is not None:
                ks = offs[kw.lineno - 1] + kw.col_offset
            else:  # python 3.8: search back from the value for "arg ="
                head = data[:vs].decode('utf-8', 'replace')
                m = list(re.finditer(re.escape(kw.arg) + r'\s*=[\s(]*$', head))  # 3.8: a parenthesized value starts inside its parentheses
                ks = len(head[:m[-1].start()].encode('utf-8'))
            line = data[:ks].count(b'\n') + 1
            items.append(_Item(kw.arg, ks, ks + len(kw.arg.encode()), vs, ve, line))
    elif isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if k is None or not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                raise UneditableEntry('{...} with a non-string key or ** expansion')
            ks, ke = node_span(src, k)
            vs, ve = node_span(src, v)
            items.append(_Item(k.value, ks, ke, vs, ve, k.lineno))
    else:
        raise UneditableEntry(f'{type(node).__name__} is not a dict literal or dict(...) call')
    return items


def _indent_of(src: SourceFile, item: _Item) -> Optional[str]:
    """The whitespace before ``item`` when it starts its line, else None."""
    data = src.text.encode('utf-8')
    line_start = src.line_offsets[item.line - 1]
    before = data[line_start:item.start].decode('utf-8')
    return before if before.strip() == '' else None


def entry_edits(src: SourceFile, node: ast.expr, new_type: str, insert: Dict[str, Any],
                drop: Sequence[str], rename: Dict[str, str], revalue: Dict[str, Any]) -> List[Edit]:
    """Edits turning the entry at ``node`` into the migrated entry (the file's line endings kept)."""
    nl = '\r\n' if '\r\n' in src.text else '\n'
    is_call = isinstance(node, ast.Call)
    items = _items(src, node)
    by_key = {it.key: i for i, it in enumerate(items)}
    if 'type' not in by_key:
        raise UneditableEntry('entry without a literal type key')
    edits: List[Edit] = []

    def kv(key: str, value: Any) -> str:
        return f'{key}={render(value)}' if is_call else f'{key!r}: {render(value)}'

    t = items[by_key['type']]
    edits.append(Edit(t.value_start, t.end, repr(new_type)))
    if insert:
        nxt = items[by_key['type'] + 1] if by_key['type'] + 1 < len(items) else None
        indent = _indent_of(src, t)
        one_per_line = indent is not None and (nxt is None or nxt.line != t.line)
        if one_per_line:
            text = ''.join(f',{nl}{indent}{kv(k, v)}' for k, v in insert.items())
        else:
            text = ''.join(f', {kv(k, v)}' for k, v in insert.items())
        edits.append(Edit(t.end, t.end, text))
    for i, it in enumerate(items):
        if it.key in drop:
            if i + 1 < len(items):
                edits.append(Edit(it.start, items[i + 1].start, ''))
            elif i > 0:
                edits.append(Edit(items[i - 1].end, it.end, ''))
            else:  # pragma: no cover - type is always kept
                raise UneditableEntry('cannot drop the only key')
            continue
        new_key = rename.get(it.key, it.key)
        if new_key != it.key:
            edits.append(Edit(it.start, it.key_end, new_key if is_call else repr(new_key)))
        if new_key in revalue and it.key != 'type':
            edits.append(Edit(it.value_start, it.end, render(revalue[new_key])))
    return edits


def append_to_list_edit(src: SourceFile, node: ast.expr, value: Any) -> Edit:
    """An edit appending ``value`` to the list/tuple literal at ``node``."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise UneditableEntry('not a list literal')
    if not node.elts:
        s, e = node_span(src, node)
        return Edit(s, e, '[' + render(value) + ']')
    _, last_end = node_span(src, node.elts[-1])
    return Edit(last_end, last_end, ', ' + render(value))
