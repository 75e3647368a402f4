"""The package's layout rules, checked on the source (no import needed).

* the harness (``compat_ema.testing``) is imported only by itself and by the CLI side
  (``compat_ema.cli``, ``compat_ema.commands``, ``compat_ema.demo``, ``compat_ema.demo_showcase``,
  ``compat_ema.doctor``), at module level or lazily inside a function;
* no import cycle between modules (module-level imports, ``TYPE_CHECKING`` ones included;
  imports inside functions are lazy by design and left out);
* no module over 500 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

PKG = Path(__file__).resolve().parents[1] / 'compat_ema'
MAX_LINES = 500
CLI_SIDE = ('compat_ema.cli', 'compat_ema.commands', 'compat_ema.demo', 'compat_ema.demo_showcase',
            'compat_ema.doctor')


def _modules() -> Dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob('*.py')):
        parts = list(path.relative_to(PKG.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        out['.'.join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == '__init__.py'


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.')
    if not _is_package(module):
        base.pop()
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, nested: bool) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` for each import of ``module``; function bodies only when
    ``nested``. An imported name that is a submodule counts as that submodule."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import) and (nested or not in_function):
                for alias in child.names:
                    yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom) and (nested or not in_function):
                target = _resolve(module, child)
                for alias in child.names:
                    sub = f'{target}.{alias.name}'
                    yield (sub if sub in MODULES else target), child.lineno
            else:
                yield from walk(child, func)

    yield from walk(tree, False)


def _internal(name: str) -> str:
    """The compat_ema module ``name`` refers to (its longest known prefix), or ''."""
    while name and name not in MODULES:
        name = name.rpartition('.')[0]
    return name


def test_only_the_harness_and_the_cli_side_import_the_harness():
    offenders = []
    for module in MODULES:
        if module == 'compat_ema.testing' or module.startswith('compat_ema.testing.'):
            continue
        if any(module == side or module.startswith(side + '.') for side in CLI_SIDE):
            continue
        for target, line in _imports(module, nested=True):
            if target == 'compat_ema.testing' or target.startswith('compat_ema.testing.'):
                offenders.append(f'{MODULES[module].relative_to(PKG.parent)}:{line} imports {target}')
    assert not offenders, '\n'.join(offenders)


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-loop."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def import_graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for module in MODULES:
        targets = {_internal(t) for t, _ in _imports(module, nested=False)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    assert _cycles({'a': {'b'}, 'b': set()}) == []


def test_the_import_scanner_sees_relative_lazy_and_type_checking_imports():
    graph = import_graph()
    assert 'compat_ema.core.pairs' in graph['compat_ema.core.kernels']  # from .pairs import ...
    assert 'compat_ema.core.flat' in graph['compat_ema.core.pairs']
    lazy = {t for t, _ in _imports('compat_ema.migrate.native_gap', nested=True)}
    assert 'compat_ema.mmcv.runner.checkpoint' in lazy  # imported inside a function


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
