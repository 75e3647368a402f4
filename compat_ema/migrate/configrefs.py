"""mmcv 1.x ``Config`` substitutions for the config reader (no execution).

* ``{{_base_.a.b}}`` (:class:`BaseRef`): mmcv's ``_pre_substitute_base_vars``
  turns each into a placeholder string before running the file and
  ``_substitute_base_vars`` puts back the merged bases' ``a.b`` wherever a
  *whole value* is that string (a top-level value, a dict value, a list or
  tuple element). Inside an expression mmcv computes with the placeholder
  string; the reader refuses that instead.
* ``{{ fileDirname }}`` and the other predefined variables: replaced in the
  text before parsing (mmcv's ``_substitute_predefined_vars``); the reader
  replaces them in string constants.
* ``.json`` / ``.yaml`` base files, read as data.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from .configtypes import ConfigError, LoadedConfig, SourceFile, Unevaluated

@dataclass(frozen=True)
class BaseRef:
    """``{{_base_.a.b}}`` in a config: mmcv 1.x ``Config`` replaces it with the merged bases'
    ``a.b`` (a deep copy) when it is a whole value: a top-level value, a dict value or a list /
    tuple element. :func:`load_config` substitutes it the same way."""

    path: str
    lineno: int
    dotted: str

    def __repr__(self) -> str:
        return f'{{{{_base_.{self.dotted}}}}}'


#: mmcv 1.x ``Config._substitute_predefined_vars``: replaced in the file's text before parsing
PREDEFINED = ('fileDirname', 'fileBasename', 'fileBasenameNoExtension', 'fileExtname')
_PREDEFINED_RE = re.compile(r'\{\{\s*(' + '|'.join(PREDEFINED) + r')\s*\}\}')


def predefined_values(path: str) -> Dict[str, str]:
    """The values mmcv gives the predefined variables for the config file at ``path``."""
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    return {'fileDirname': os.path.dirname(path), 'fileBasename': base,
            'fileBasenameNoExtension': stem, 'fileExtname': ext}


def _lookup(cfg: Dict[str, Any], ref: BaseRef) -> Any:
    value: Any = cfg
    for part in ref.dotted.split('.'):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f'{ref.path}:{ref.lineno}: {ref!r}: the _base_ files define no '
                              f'{ref.dotted!r} (mmcv 1.x raises KeyError)')
        value = value[part]
    if isinstance(value, Unevaluated):
        raise ConfigError(f'{ref.path}:{ref.lineno}: {ref!r} names a value the reader cannot '
                          f'compute ({value.describe()})')
    return copy.deepcopy(value)


def _substitute(value: Any, base_cfg: Dict[str, Any], src: 'SourceFile') -> Any:
    """mmcv's ``Config._substitute_base_vars``: whole-value ``{{_base_.x}}`` -> the bases' x.
    Containers are rebuilt only where they hold a reference, so dict origins stay valid."""
    if isinstance(value, BaseRef):
        return _lookup(base_cfg, value)
    if isinstance(value, dict):
        if not _has_ref(value):
            return value
        new = {k: _substitute(v, base_cfg, src) for k, v in value.items()}
        origin = src.origins.get(id(value))
        if origin is not None:   # the literal is still where it was written
            src.origins[id(new)] = origin
            src._keep.append(new)
        return new
    if isinstance(value, (list, tuple)) and _has_ref(value):
        items = [_substitute(v, base_cfg, src) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _has_ref(value: Any) -> bool:
    if isinstance(value, BaseRef):
        return True
    if isinstance(value, dict):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_ref(v) for v in value)
    return False


def _load_data_config(path: str, stack: Tuple[str, ...]) -> 'LoadedConfig':
    """A ``.json`` / ``.yaml`` / ``.yml`` *base* file, read as data (mmcv 1.x reads them with
    its file handlers; they cannot hold ``_base_`` substitutions or code)."""
    with open(path, encoding='utf-8') as fh:
        text = fh.read()
    text = _PREDEFINED_RE.sub(lambda m: predefined_values(path)[m.group(1)].replace('\\', '/'),
                              text)
    if path.endswith('.json'):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f'{path}: not valid JSON: {exc}') from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigError(f'{path}: a YAML config needs PyYAML (pip install pyyaml), which '
                              'compat_ema does not depend on') from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f'{path}: not valid YAML: {str(exc).splitlines()[0]}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: the top level must be a mapping, got {type(data).__name__}')
    if '_base_' in data:
        raise ConfigError(f'{path}: _base_ inside a .json/.yaml base file is not read; '
                          'write the chain in the .py config')
    src = SourceFile(path=path, text=text, tree=ast.Module(body=[], type_ignores=[]),
                     values=dict(data))
    return LoadedConfig(path=path, cfg=dict(data), files=[src])
