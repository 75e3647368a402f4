"""One registry per kind (HOOKS, MODELS), one scope per upstream generation.

Reproduces how users name EMA hooks and averaged models in OpenMMLab configs:
``dict(type='EMAHook', momentum=..., priority=49)``,
``dict(type='EMAHook', ema_type='MomentumAnnealingEMA')``, scoped names such as
``'mmdet.ExpMomentumEMAHook'``. The scopes form a tree like mmengine's
registries: ``mmdet``, ``mmedit`` and ``mmgen`` are children of ``mmcv`` (mmdet 2.x builds its hooks from
mmcv's ``HOOKS``, so ``'mmdet.EMAHook'`` is mmcv's ``EMAHook``), ``mmdet3``,
``mmyolo`` and ``mmagic`` are children of ``mmengine``. An unscoped name is looked up in the
scope given to :meth:`Registry.build` (or set with :func:`default_scope`), then
its parents; with no scope at all it must be unambiguous across scopes, and
``EMAHook`` (mmcv and mmengine both have one) is not.

Usage::

    from compat_ema.registry import HOOKS, MODELS
    hook = HOOKS.build(dict(type='EMAHook', momentum=1e-3, priority=49), scope='mmcv')
    MODELS.register_module(scope='mmengine')(MyAveragedModel)   # usable as ema_type
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type, Union

__all__ = ['Registry', 'HOOKS', 'MODELS', 'default_scope', 'current_scope', 'in_subtree',
           'build_hook', 'SCOPES']

#: scope name -> (parent scope, module whose import registers that scope's names)
SCOPES: Dict[str, Tuple[Optional[str], str]] = {
    'mmcv': (None, 'compat_ema.mmcv'),
    'mmdet': ('mmcv', 'compat_ema.mmdet'),
    'mmedit': ('mmcv', 'compat_ema.mmedit'),
    'mmgen': ('mmcv', 'compat_ema.mmgen'),
    'mmengine': (None, 'compat_ema.mmengine'),
    'mmdet3': ('mmengine', 'compat_ema.mmdet3'),
    'mmyolo': ('mmengine', 'compat_ema.mmyolo'),
    'mmagic': ('mmengine', 'compat_ema.mmagic'),
    'legacy': ('mmengine', 'compat_ema.legacy'),
}

_DEFAULT_SCOPE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    'compat_ema_default_scope', default=None)


@contextlib.contextmanager
def default_scope(scope: Optional[str]) -> Iterator[None]:
    """Resolve unscoped names in ``scope`` inside the block (mmengine's ``DefaultScope``)."""
    if scope is not None and scope not in SCOPES:
        raise KeyError(f'unknown scope {scope!r}; known scopes: {sorted(SCOPES)}')
    token = _DEFAULT_SCOPE.set(scope)
    try:
        yield
    finally:
        _DEFAULT_SCOPE.reset(token)


def current_scope() -> Optional[str]:
    """The scope set by the innermost :func:`default_scope` block, or None."""
    return _DEFAULT_SCOPE.get()


def in_subtree(scope: Optional[str], ancestor: str) -> bool:
    """Whether ``scope`` is ``ancestor`` or one of its descendants in :data:`SCOPES`."""
    while scope is not None:
        if scope == ancestor:
            return True
        scope = SCOPES[scope][0] if scope in SCOPES else None
    return False


class Registry:
    """A scoped name -> class mapping with ``build(cfg)``.

    The root registry holds one child per scope; classes live in the children.
    """

    def __init__(self, name: str, scope: Optional[str] = None,
                 parent: Optional['Registry'] = None, pop_priority: bool = False):
        self.name = name
        self.scope = scope
        self.parent = parent
        self.pop_priority = pop_priority
        self._module_dict: Dict[str, Type] = {}
        self.children: Dict[str, Registry] = {}
        self._imported = False

    # -- structure -------------------------------------------------------
    @property
    def root(self) -> 'Registry':
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def get_scope(self, scope: str) -> 'Registry':
        """The child registry of ``scope``."""
        root = self.root
        if scope not in root.children:
            raise KeyError(f'unknown scope {scope!r} in the {self.name} registry; '
                           f'known scopes: {sorted(root.children)}')
        return root.children[scope]

    def _import_all(self) -> None:
        root = self.root
        if root._imported:
            return
        root._imported = True
        for _, module in SCOPES.values():
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a scope whose package is not built here
                if exc.name != module:
                    raise

    # -- registration ----------------------------------------------------
    def register_module(self, name: Optional[Union[str, List[str]]] = None, force: bool = False,
                        module: Optional[Type] = None, scope: Optional[str] = None) -> Any:
        """Register a class, as a decorator or directly (``module=``).

        On the root registry, ``scope`` names the child to register into.
        Re-registering a taken name raises KeyError unless ``force=True``.
        """
        target = self
        if scope is not None:
            target = self.get_scope(scope)
        elif self.scope is None:
            raise ValueError(f'register into a scope of the {self.name} registry: '
                             f'pass scope=, one of {sorted(self.children)}')

        def _register(cls: Type) -> Type:
            names = [cls.__name__] if name is None else ([name] if isinstance(name, str) else list(name))
            for key in names:
                if not force and key in target._module_dict and target._module_dict[key] is not cls:
                    raise KeyError(f'{key} is already registered in the {self.name} registry '
                                   f'of scope {target.scope!r} (as {target._module_dict[key]!r})')
                target._module_dict[key] = cls
            return cls

        if module is not None:
            return _register(module)
        return _register

    # -- lookup ----------------------------------------------------------
    def _lookup_chain(self, key: str) -> Optional[Type]:
        node: Optional[Registry] = self
        while node is not None:
            if key in node._module_dict:
                return node._module_dict[key]
            node = node.parent if node.parent is not None and node.parent.scope is not None else None
        return None

    def known_names(self) -> List[str]:
        """Every registered name, scoped (``'mmdet.ExpMomentumEMAHook'``)."""
        self._import_all()
        out: List[str] = []
        for scope, child in sorted(self.root.children.items()):
            out.extend(f'{scope}.{k}' for k in sorted(child._module_dict))
        return out

    def get(self, key: str, scope: Optional[str] = None) -> Type:
        """Resolve a (possibly scoped) name to a class, or raise KeyError listing known names."""
        self._import_all()
        scope = scope or _DEFAULT_SCOPE.get() or self.scope
        if '.' in key:
            scope_name, _, short = key.partition('.')
            if scope_name in self.root.children:
                found = self.root.children[scope_name]._lookup_chain(short)
                if found is not None:
                    return found
                self._unknown(key)
        if scope is not None:
            found = self.get_scope(scope)._lookup_chain(key)
            if found is not None:
                return found
            self._unknown(key, scope)
        hits = [(s, c._module_dict[key]) for s, c in sorted(self.root.children.items())
                if key in c._module_dict]
        distinct = {id(cls) for _, cls in hits}
        if len(distinct) == 1:
            return hits[0][1]
        if hits:
            raise KeyError(f'{key!r} is ambiguous in the {self.name} registry: it exists in scopes '
                           f'{[s for s, _ in hits]}; write it scoped (e.g. {hits[0][0] + "." + key!r}) '
                           f'or pass scope=')
        self._unknown(key)
        raise AssertionError('unreachable')  # pragma: no cover

    def _unknown(self, key: str, scope: Optional[str] = None) -> None:
        where = f' (scope {scope!r})' if scope else ''
        raise KeyError(f'{key!r} is not in the {self.name} registry{where}. '
                       f'Known names: {", ".join(self.known_names())}')

    # -- building --------------------------------------------------------
    def build(self, cfg: Dict[str, Any], default_args: Optional[Dict[str, Any]] = None,
              scope: Optional[str] = None) -> Any:
        """Build an object from ``cfg`` (a dict with ``type``), like mmcv's ``build_from_cfg``.

        For hooks, a ``priority`` key is taken out of the arguments and set on
        the built hook as ``hook.priority``, as the runners' ``register_hook``
        do.
        """
        if not isinstance(cfg, dict):
            raise TypeError(f'cfg must be a dict, but got {type(cfg).__name__}')
        if 'type' not in cfg and not (default_args and 'type' in default_args):
            raise KeyError(f'`cfg` or `default_args` must contain the key "type", but got {cfg}')
        args = dict(cfg)
        for k, v in (default_args or {}).items():
            args.setdefault(k, v)
        obj_type = args.pop('type')
        priority = args.pop('priority', None) if self.pop_priority else None
        if isinstance(obj_type, str):
            obj_cls = self.get(obj_type, scope=scope)
        elif isinstance(obj_type, type):
            obj_cls = obj_type
        else:
            raise TypeError(f'type must be a str or a class, but got {type(obj_type).__name__}')
        try:
            obj = obj_cls(**args)
        except TypeError as exc:
            raise TypeError(f'{obj_cls.__name__}: {exc}') from exc
        if priority is not None:
            obj.priority = priority
        return obj

    def __contains__(self, key: str) -> bool:
        try:
            self.get(key)
        except KeyError:
            return False
        return True

    def __repr__(self) -> str:
        return f'Registry(name={self.name!r}, scope={self.scope!r}, items={sorted(self._module_dict)})'


def _make_root(name: str, pop_priority: bool) -> Registry:
    root = Registry(name, pop_priority=pop_priority)
    for scope in SCOPES:  # parents are listed before children
        parent_scope = SCOPES[scope][0]
        parent = root.children[parent_scope] if parent_scope else root
        child = Registry(name, scope=scope, parent=parent, pop_priority=pop_priority)
        root.children[scope] = child
    return root


HOOKS = _make_root('hook', pop_priority=True)
MODELS = _make_root('model', pop_priority=False)


def build_hook(cfg: Dict[str, Any], scope: Optional[str] = None) -> Any:
    """``HOOKS.build(cfg, scope=scope)``: a hook with its ``priority`` attribute set."""
    return HOOKS.build(cfg, scope=scope)
