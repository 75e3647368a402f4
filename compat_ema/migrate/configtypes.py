"""The value types of the config reader (:mod:`compat_ema.migrate.configparse`): errors,
unevaluated values, origins, parsed source files and loaded configs.

Their own module so that :mod:`~compat_ema.migrate.configparse` and
:mod:`~compat_ema.migrate.configrefs` share them without importing each other.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ['ConfigError', 'Unevaluated', 'Origin', 'SourceFile', 'LoadedConfig']


class ConfigError(ValueError):
    """A config file that cannot be read, with the file and line in the message."""


@dataclass(frozen=True)
class Unevaluated:
    """Placeholder for a value the parser does not compute (and why)."""

    path: str
    lineno: int
    reason: str

    def describe(self) -> str:
        return f'{self.path}:{self.lineno}: {self.reason}'

    def __repr__(self) -> str:
        return f'<unevaluated {self.describe()}>'


@dataclass
class Origin:
    """Where a dict value was written: its file and the ``ast`` node of the literal."""

    source: 'SourceFile'
    node: ast.expr


@dataclass
class SourceFile:
    """One parsed config file: its text, tree, and module-level values in order."""

    path: str
    text: str
    tree: ast.Module
    values: Dict[str, Any] = field(default_factory=dict)
    #: name -> the Assign statement that last set it
    assigns: Dict[str, ast.stmt] = field(default_factory=dict)
    #: the ``_base_`` assignment, if any
    base_node: Optional[ast.Assign] = None
    #: id(dict) -> Origin, for every dict literal/call evaluated in this file
    origins: Dict[int, Origin] = field(default_factory=dict)
    #: keep evaluated dicts alive so that ids stay unique
    _keep: List[Any] = field(default_factory=list, repr=False)

    @property
    def line_offsets(self) -> List[int]:
        """Byte offset of the start of each line (1-based index -> [lineno-1])."""
        data = self.text.encode('utf-8')
        offs = [0]
        for i, b in enumerate(data):
            if b == 0x0A:
                offs.append(i + 1)
        return offs


@dataclass
class LoadedConfig:
    """A config after ``_base_`` merging: the merged dict and every file that took part."""

    path: str
    cfg: Dict[str, Any]
    #: the input file first, then its bases depth-first
    files: List[SourceFile]

    @property
    def main(self) -> SourceFile:
        return self.files[0]

    def origin_of(self, value: Any) -> Optional[Origin]:
        """The :class:`Origin` of a dict value of this config, if it was written as a literal."""
        for src in self.files:
            origin = src.origins.get(id(value))
            if origin is not None:
                return origin
        return None

    def owner_of(self, key: str) -> Optional[SourceFile]:
        """The file whose assignment of top-level ``key`` wins (the input file first)."""
        for src in self.files:
            if key in src.values and key != '_base_':
                return src
        return None
