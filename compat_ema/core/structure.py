"""A cheap proof that a module tree still holds the very tensors it held before.

Upstream mmengine walks ``model.named_parameters()`` and both models'
``buffers()`` on every ``update_parameters`` call (and the hook walks
``parameters()`` on every swap). Those generator walks build name strings and
memo sets for every module; on a model of 1000 small layers they cost more than
the arithmetic. :class:`ModuleSnapshot` records, for every module of the tree,
its ``_parameters``, ``_buffers`` and ``_modules`` dicts (the dict objects, their
keys and the identity of every value). If none of them changed, the walk would
yield exactly the same names and objects in the same order, so a cached result
of the walk can be reused; any registration, replacement, deletion or
re-parenting changes one of those dicts and sends the caller back to the walk.

Used only for module classes that do not override the walk (``named_modules``,
``_named_members``, ``named_parameters``, ``named_buffers``, ``parameters``,
``buffers``); for anything else :meth:`ModuleSnapshot.take` returns None.
Tensor *contents* and ``param.data = ...`` are not structure: callers read
tensors through the objects, so those changes are seen anyway.
"""
from __future__ import annotations

from itertools import chain
from operator import attrgetter, is_
from typing import Dict, List, Optional

import torch.nn as nn

__all__ = ['ModuleSnapshot']

_WALKS = ('named_modules', '_named_members', 'named_parameters', 'named_buffers',
          'parameters', 'buffers', 'modules', 'children', 'named_children')
_PLAIN_WALK: Dict[type, bool] = {}


def _plain_walk(cls: type) -> bool:
    """``cls`` inherits every tree walk from ``nn.Module`` unchanged."""
    ok = _PLAIN_WALK.get(cls)
    if ok is None:
        ok = _PLAIN_WALK[cls] = all(getattr(cls, name, None) is getattr(nn.Module, name)
                                    for name in _WALKS)
    return ok


#: Take snapshots at all (a switch for the component table of ``benchmarks/bench_ema.py``;
#: off, every user of a snapshot walks the module trees on every call, as upstream).
ENABLED = True

_PARAMS = attrgetter('_parameters')
_BUFFERS = attrgetter('_buffers')
_MODULES = attrgetter('_modules')


class ModuleSnapshot:
    """The ``_parameters``/``_buffers``/``_modules`` dicts of every module under ``root``.

    Holds references to the recorded values, so their ``id`` cannot be reused
    while the snapshot lives. Every check is a C-level ``map`` over all modules
    or all dicts at once (a per-module Python loop costs as much as the walk).
    """

    __slots__ = ('root', '_modules', '_types', '_dicts', '_lens', '_keys', '_ids', '_values')

    def __init__(self, root: nn.Module, modules: List[nn.Module]):
        self.root = root
        self._modules = modules
        self._types = tuple(map(type, modules))
        self._dicts = tuple(chain.from_iterable(zip(map(_PARAMS, modules), map(_BUFFERS, modules),
                                                    map(_MODULES, modules))))
        self._lens = tuple(map(len, self._dicts))
        self._keys = tuple(chain.from_iterable(self._dicts))
        self._values = tuple(chain.from_iterable(map(dict.values, self._dicts)))
        self._ids = tuple(map(id, self._values))

    @classmethod
    def take(cls, root: nn.Module) -> Optional['ModuleSnapshot']:
        """Snapshot ``root``'s tree, or None if some module class overrides a walk."""
        if not ENABLED:
            return None
        modules = list(root.modules())
        if not all(_plain_walk(type(m)) for m in modules):
            return None
        return cls(root, modules)

    def unchanged(self) -> bool:
        """Every module still has the same class, dict objects, and every dict the same
        length, keys (in order) and values (by identity)."""
        modules = self._modules
        dicts = tuple(chain.from_iterable(zip(map(_PARAMS, modules), map(_BUFFERS, modules),
                                              map(_MODULES, modules))))
        return (tuple(map(type, modules)) == self._types
                and len(dicts) == len(self._dicts) and all(map(is_, dicts, self._dicts))
                and tuple(map(len, dicts)) == self._lens
                and tuple(chain.from_iterable(dicts)) == self._keys
                and tuple(map(id, chain.from_iterable(map(dict.values, dicts)))) == self._ids)
