"""Read a legacy OpenMMLab Python config *without executing it*.

Reproduces what mmcv 1.x ``Config.fromfile`` computes for the subset of
Python that configs use, by walking the ``ast``:

* module-level assignments, in order, with values built from literals,
  ``dict(...)`` calls, lists/tuples, names defined earlier in the same file,
  arithmetic on numbers and strings, ``-x``/``not x`` and subscripts;
* ``_base_`` (a path or a list of paths, relative to the file) loaded
  recursively; bases must not share keys (mmcv's "Duplicate key is not
  allowed among bases"); the file's own keys are merged into the bases' dicts
  recursively, ``_delete_=True`` replaces instead of merging, and every other
  value (lists included) replaces the base value, as mmcv's
  ``Config._merge_a_into_b`` does;
* names starting with ``__``, imports and functions are not config keys.

Anything else (comprehensions, function calls other than ``dict``, ``if``
blocks, ``{{_base_.x}}`` substitutions) does not stop the parse: the names
it assigns hold an :class:`Unevaluated` marker (inside a list or a dict, just
that element or value does), and only a caller that needs such a value gets
an error naming the file and line.

Every dict built from a ``dict(...)`` call or a ``{...}`` literal is recorded
with its :class:`Origin` (file and AST node), so that a migration can edit
the source text of exactly that entry.
"""
from __future__ import annotations

import ast
import operator
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from .configtypes import ConfigError, LoadedConfig, Origin, SourceFile, Unevaluated
from .configrefs import _PREDEFINED_RE, BaseRef, _has_ref, _load_data_config, _substitute, \
    predefined_values

__all__ = ['ConfigError', 'Unevaluated', 'Origin', 'SourceFile', 'LoadedConfig',
           'load_config', 'parse_source', 'eval_expression']


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}


class _Unsupported(Exception):
    def __init__(self, node: ast.AST, reason: str):
        super().__init__(reason)
        self.node = node
        self.reason = reason


def eval_expression(node: ast.expr, names: Dict[str, Any], src: Optional[SourceFile] = None) -> Any:
    """Evaluate a config expression node; raise ``ConfigError`` for what is not supported.

    Values of names that are :class:`Unevaluated` propagate as errors.
    """
    try:
        return _eval(node, names, src)
    except _Unsupported as exc:
        path = src.path if src else '<expr>'
        raise ConfigError(f'{path}:{getattr(exc.node, "lineno", "?")}: {exc.reason}') from None


def _eval(node: ast.expr, names: Dict[str, Any], src: Optional[SourceFile]) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str) and src is not None and '{{' in node.value:
            values = predefined_values(os.path.abspath(src.path))
            return _PREDEFINED_RE.sub(lambda m: values[m.group(1)].replace('\\', '/'), node.value)
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise _Unsupported(node, f'name {node.id!r} is not defined earlier in this file')
        value = names[node.id]
        if isinstance(value, Unevaluated):
            raise _Unsupported(node, f'{node.id!r} is not a plain value ({value.reason}, '
                                     f'line {value.lineno})')
        return value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                items.extend(_eval(elt.value, names, src))
            else:
                items.append(_eval_item(elt, names, src))
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Set):
        ref = _base_ref(node, src)
        if ref is not None:
            return ref
        return {_eval(e, names, src) for e in node.elts}
    if isinstance(node, ast.Dict):
        out: Dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                other = _eval(v, names, src)
                if not isinstance(other, dict):
                    raise _Unsupported(v, '** of a non-dict')
                out.update(other)
            else:
                out[_eval(k, names, src)] = _eval_item(v, names, src)
        return _record(out, node, src)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == 'dict' and 'dict' not in names:
            out = {}
            if len(node.args) > 1:
                raise _Unsupported(node, 'dict() with more than one positional argument')
            if node.args:
                first = _eval(node.args[0], names, src)
                out.update(dict(first))
            for kw in node.keywords:
                if kw.arg is None:
                    other = _eval(kw.value, names, src)
                    if not isinstance(other, dict):
                        raise _Unsupported(kw.value, '** of a non-dict')
                    out.update(other)
                else:
                    out[kw.arg] = _eval_item(kw.value, names, src)
            return _record(out, node, src)
        if isinstance(node.func, ast.Name) and node.func.id in ('list', 'tuple') \
                and node.func.id not in names and len(node.args) <= 1 and not node.keywords:
            seq = _eval(node.args[0], names, src) if node.args else []
            return list(seq) if node.func.id == 'list' else tuple(seq)
        raise _Unsupported(node, f'call to {ast.dump(node.func)[:60]} (only dict(...) is read)')
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _no_ref(_eval(node.left, names, src), node, 'an expression')
        right = _no_ref(_eval(node.right, names, src), node, 'an expression')
        try:
            return _BINOPS[type(node.op)](left, right)
        except Exception as exc:  # noqa: BLE001 - report any arithmetic failure
            raise _Unsupported(node, f'cannot compute {type(node.op).__name__}: {exc}') from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_no_ref(_eval(node.operand, names, src), node,  # type: ignore[operator]
                                             'an expression'))
    if isinstance(node, ast.Subscript):
        base = _no_ref(_eval(node.value, names, src), node, 'a subscript')
        index = node.slice
        if sys.version_info < (3, 9) and isinstance(index, ast.Index):  # pragma: no cover
            index = index.value  # type: ignore[attr-defined]
        key = _eval(index, names, src)
        try:
            return base[key]
        except Exception as exc:  # noqa: BLE001
            raise _Unsupported(node, f'cannot subscript: {exc!r}') from None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and v.format_spec is None and v.conversion == -1:
                parts.append(str(_no_ref(_eval(v.value, names, src), node, 'an f-string')))
            else:
                raise _Unsupported(node, 'f-string with a conversion or format spec')
        return ''.join(parts)
    raise _Unsupported(node, f'{type(node).__name__} expressions are not read by the parser')


def _base_ref(node: ast.Set, src: Optional[SourceFile]) -> Optional[BaseRef]:
    """``{{_base_.a.b}}`` parses as a set holding a set holding ``_base_.a.b``."""
    if len(node.elts) != 1 or not isinstance(node.elts[0], ast.Set) or len(node.elts[0].elts) != 1:
        return None
    inner = node.elts[0].elts[0]
    parts = []
    while isinstance(inner, ast.Attribute):
        parts.append(inner.attr)
        inner = inner.value
    if not (isinstance(inner, ast.Name) and inner.id == '_base_') or not parts:
        return None
    return BaseRef(src.path if src else '<expr>', node.lineno, '.'.join(reversed(parts)))


def _no_ref(value: Any, node: ast.expr, what: str) -> Any:
    if isinstance(value, BaseRef):
        raise _Unsupported(node, f'{value!r} inside {what}: mmcv 1.x substitutes {{{{_base_.x}}}} '
                                 'only as a whole value (its placeholder string would be used '
                                 'here); write the value')
    return value


def _eval_item(node: ast.expr, names: Dict[str, Any], src: Optional[SourceFile]) -> Any:
    """An element of a list or a value of a dict: unreadable ones become :class:`Unevaluated`,
    so one unreadable value does not hide the rest of the container."""
    try:
        return _eval(node, names, src)
    except _Unsupported as exc:
        return Unevaluated(src.path if src else '<expr>',
                           getattr(exc.node, 'lineno', getattr(node, 'lineno', 0)), exc.reason)


def _record(value: dict, node: ast.expr, src: Optional[SourceFile]) -> dict:
    if src is not None:
        src.origins[id(value)] = Origin(src, node)
        src._keep.append(value)
    return value


def _assigned_names(stmt: ast.stmt) -> List[str]:
    names = []
    for sub in ast.walk(stmt):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.append(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            for alias in sub.names:
                names.append((alias.asname or alias.name).split('.')[0])
    return names


def parse_source(text: str, path: str = '<config>') -> SourceFile:
    """Parse one config file's text into a :class:`SourceFile` (no base merging)."""
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise ConfigError(f'{path}:{exc.lineno}: not valid Python: {exc.msg}') from None
    src = SourceFile(path=path, text=text, tree=tree)
    names = src.values
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            try:
                value = _eval(stmt.value, names, src)
            except _Unsupported as exc:
                value = Unevaluated(path, getattr(exc.node, 'lineno', stmt.lineno), exc.reason)
            for target in stmt.targets:
                names[target.id] = value  # type: ignore[attr-defined]
                src.assigns[target.id] = stmt  # type: ignore[attr-defined]
                if target.id == '_base_':  # type: ignore[attr-defined]
                    src.base_node = stmt
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            try:
                value = _eval(stmt.value, names, src)
            except _Unsupported as exc:
                value = Unevaluated(path, stmt.lineno, exc.reason)
            names[stmt.target.id] = value
            src.assigns[stmt.target.id] = stmt
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) \
                and type(stmt.op) in _BINOPS:
            name = stmt.target.id
            try:
                value = _BINOPS[type(stmt.op)](_eval(ast.Name(name, ast.Load()), names, src),
                                               _eval(stmt.value, names, src))
            except (_Unsupported, Exception) as exc:  # noqa: BLE001
                value = Unevaluated(path, stmt.lineno, getattr(exc, 'reason', str(exc)))
            names[name] = value
            src.assigns[name] = stmt
        elif isinstance(stmt, (ast.Expr, ast.Pass)):
            continue
        else:
            for name in _assigned_names(stmt):
                names[name] = Unevaluated(path, stmt.lineno,
                                          f'set by a {type(stmt).__name__} statement')
                src.assigns[name] = stmt
    return src


def _is_config_key(name: str, value: Any) -> bool:
    if name.startswith('__'):
        return False
    if isinstance(value, Unevaluated) and ('Import' in value.reason or 'Def' in value.reason):
        return False
    return True


def _merge_into(child: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Any]:
    """mmcv's ``Config._merge_a_into_b``: dicts merge unless ``_delete_``, the rest replaces."""
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and k in out and '_delete_' in v:
            delete = v['_delete_']
            v = {kk: vv for kk, vv in v.items() if kk != '_delete_'}
            if delete:
                out[k] = v
                continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_into(v, out[k])
            continue
        if isinstance(v, dict) and k in out:
            raise ConfigError(f'{k}: a dict cannot be merged into the base value '
                              f'{out[k]!r} (mmcv 1.x raises TypeError here; set _delete_=True)')
        out[k] = v
    return out


#: mmcv 1.x ``Config`` refuses these top-level names (``RESERVED_KEYS``)
RESERVED_KEYS = ('filename', 'text', 'pretty_text')


def load_config(path: str, _stack: Tuple[str, ...] = ()) -> LoadedConfig:
    """Parse ``path`` and its ``_base_`` files, as mmcv 1.x ``Config.fromfile`` merges them."""
    path = os.path.abspath(path)
    if path in _stack:
        raise ConfigError(f'{path}: _base_ cycle: {" -> ".join(_stack + (path,))}')
    if not os.path.isfile(path):
        where = f' (a _base_ of {_stack[-1]})' if _stack else ''
        raise ConfigError(f'{path}: no such config file{where}')
    ext = os.path.splitext(path)[1]
    if ext in ('.json', '.yaml', '.yml') and _stack:
        return _load_data_config(path, _stack)
    if ext in ('.json', '.yaml', '.yml'):
        raise ConfigError(f'{path}: a {ext} config as the input: migrate edits Python source '
                          f'in place; {ext} files are read only as _base_ files of a .py config')
    if ext != '.py':
        raise ConfigError(f'{path}: only Python configs (.py) are read (and .json/.yaml bases)')
    with open(path, encoding='utf-8-sig', newline='') as fh:  # keep CRLF: edits are byte-exact
        text = fh.read()
    src = parse_source(text, path)
    files = [src]
    base_cfg: Dict[str, Any] = {}
    if '_base_' in src.values:
        bases = src.values['_base_']
        if isinstance(bases, Unevaluated):
            raise ConfigError(f'{path}:{bases.lineno}: _base_ must be a string or a list of '
                              f'strings ({bases.reason})')
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f'{path}: _base_ must be a string or a list of strings, '
                              f'got {bases!r}')
        for rel in bases:
            if '{{' in rel:
                raise ConfigError(f'{path}: _base_ entry {rel!r} uses a substitution; '
                                  'not supported')
            base = load_config(os.path.join(os.path.dirname(path), rel), _stack + (path,))
            dup = set(base.cfg) & set(base_cfg)
            if dup:
                raise ConfigError(f'{path}: duplicate key {sorted(dup)} among bases '
                                  '(mmcv refuses this too)')
            base_cfg.update(base.cfg)
            files.extend(base.files)
    own = {k: v for k, v in src.values.items() if k != '_base_' and _is_config_key(k, v)}
    reserved = sorted(set(own) & set(RESERVED_KEYS))
    if reserved:
        raise ConfigError(f'{path}: {reserved} are reserved names in mmcv 1.x configs '
                          '(Config raises KeyError)')
    own.pop('_deprecation_', None)   # mmcv warns and drops it
    if any(_has_ref(v) for v in own.values()):
        if not base_cfg:
            raise ConfigError(f'{path}: {{{{_base_.x}}}} used without a _base_ file')
        own = {k: _substitute(v, base_cfg, src) for k, v in own.items()}
        src.values.update(own)
    try:
        cfg = _merge_into(own, base_cfg)
    except ConfigError as exc:
        raise ConfigError(f'{path}: {exc}') from None
    return LoadedConfig(path=path, cfg=cfg, files=files)
