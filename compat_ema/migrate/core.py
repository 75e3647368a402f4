"""``compat-ema migrate``: rewrite the EMA parts of a legacy config for mmengine.

:func:`migrate_config` reads the config without executing it
(:mod:`~compat_ema.migrate.configparse`), finds every EMA hook in
``custom_hooks``, maps each legacy one (:mod:`~compat_ema.migrate.mapping`) and
edits the input file's text at the entries' positions; everything else stays
as written. What it cannot place by editing is appended in one marked block at
the end of the file:

* ``custom_imports`` naming the plugin (``--exact``), or the plugin appended
  to an existing ``imports`` list in place;
* ``load_from = <the hook's resume_from>`` and ``resume = True`` when the hook
  had a ``resume_from`` (mmengine resumes through the runner, EMA included);
* ``custom_hooks = [...]`` in full when the list comes from a ``_base_`` file
  (mmcv and mmengine both replace lists when merging).

mmedit 0.x's ``ExponentialMovingAverageHook`` is mapped by :mod:`~compat_ema.migrate.gan`
(to mmagic 1.x's hook, whose ``momentum`` is flipped).

Unknown keys on an EMA entry raise :class:`~compat_ema.migrate.hookspec.UnknownKeysError`;
an EMA-like hook of an unknown type raises :class:`UnsupportedHooks` (listing
them) unless ``keep_unknown`` leaves them as written. The result is checked by
re-parsing the new text.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..core.atomic import write_new
from .configparse import BaseRef, ConfigError, LoadedConfig, SourceFile, Unevaluated, load_config, \
    parse_source
from .gan import GanSpec, classify_gan, map_gan_exact, map_gan_native
from .hookspec import HookSpec, classify, config_generation, is_ema_like
from .mapping import PLUGIN, MappedEntry, map_exact, map_native
from .rewrite import Edit, UneditableEntry, append_to_list_edit, apply_edits, entry_edits, render

__all__ = ['Migration', 'UnsupportedHooks', 'migrate_config', 'default_output', 'find_ema_hooks',
           'DEFAULT_ITERS']

#: run length assumed for --native reports when the config does not say
DEFAULT_ITERS = 10000


class UnsupportedHooks(ValueError):
    """EMA-like hooks this tool does not understand (reported, never silently dropped)."""


@dataclass
class Migration:
    """The outcome of :func:`migrate_config`."""

    source: str
    mode: str
    text: str
    mapped: List[MappedEntry] = field(default_factory=list)
    specs: List[HookSpec] = field(default_factory=list)
    unknown: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    iters: int = DEFAULT_ITERS
    iters_from: str = 'default'
    out: str = ''

    @property
    def changed(self) -> bool:
        return bool(self.mapped)


def default_output(path: str, mode: str) -> str:
    """``dir/name_exact.py`` / ``dir/name_native.py`` next to the input."""
    stem, _ = os.path.splitext(path)
    return f'{stem}_{mode}.py'


def _walk_dicts(value: Any, where: str):
    if isinstance(value, dict):
        yield where, value
        for k, v in value.items():
            yield from _walk_dicts(v, f'{where}.{k}')
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk_dicts(v, f'{where}[{i}]')


def find_ema_hooks(loaded: LoadedConfig, generation: Optional[str] = None
                   ) -> Tuple[List[Tuple[int, Dict, HookSpec]], List[str], List[str]]:
    """``(recognised, unknown, elsewhere)`` EMA hooks of a loaded config.

    recognised: (index in custom_hooks, entry, spec); unknown: descriptions of
    EMA-like entries of unknown types; elsewhere: EMA-like dicts outside
    ``custom_hooks`` (not hooks the runner builds; reported).
    """
    cfg = loaded.cfg
    gen = generation or config_generation(cfg) or 'mmcv'
    hooks = _hooks_list(cfg)
    found, unknown = [], []
    for i, entry in enumerate(hooks):
        spec = classify(entry, gen) or classify_gan(entry, gen)
        if spec is not None:
            found.append((i, entry, spec))
        elif isinstance(entry, dict) and (is_ema_like(entry.get('type')) or 'ema_type' in entry):
            unknown.append(f'custom_hooks[{i}]: {render(entry)}')
        elif not isinstance(entry, dict):
            unknown.append(f'custom_hooks[{i}]: {entry!r} is not a dict (hook objects cannot be '
                           'migrated from a config file)')
    elsewhere = []
    for key, value in cfg.items():
        if key == 'custom_hooks':
            continue
        for where, d in _walk_dicts(value, key):
            if is_ema_like(d.get('type')) and where.count('.') + where.count('[') <= 2:
                elsewhere.append(f'{where}: {render(d)}')
    return found, unknown, elsewhere


def _hooks_list(cfg: Dict[str, Any]) -> List[Any]:
    hooks = cfg.get('custom_hooks', [])
    if isinstance(hooks, Unevaluated):
        raise ConfigError(f'custom_hooks cannot be read: {hooks.describe()}')
    if isinstance(hooks, dict):
        hooks = [hooks]
    if not isinstance(hooks, (list, tuple)):
        raise ConfigError(f'custom_hooks must be a list of dicts, got {type(hooks).__name__}')
    return list(hooks)


def _run_length(cfg: Dict[str, Any]) -> Tuple[Optional[int], str]:
    runner = cfg.get('runner')
    if isinstance(runner, dict) and isinstance(runner.get('max_iters'), int):
        return runner['max_iters'], 'runner.max_iters'
    train_cfg = cfg.get('train_cfg')
    if isinstance(train_cfg, dict) and isinstance(train_cfg.get('max_iters'), int):
        return train_cfg['max_iters'], 'train_cfg.max_iters'
    if isinstance(cfg.get('total_iters'), int):  # mmedit 0.x
        return cfg['total_iters'], 'total_iters'
    return None, ''


def migrate_config(path: str, mode: str = 'exact', out: Optional[str] = None,
                   iters: Optional[int] = None, keep_unknown: bool = False,
                   generation: Optional[str] = None, legacy_swap: bool = False) -> Migration:
    """Migrate the legacy config at ``path`` (``mode`` 'exact' or 'native'); nothing is written.

    ``out`` is where the result will live (relative ``_base_`` paths are
    rewritten for it); ``iters`` the run length for the native choice;
    ``legacy_swap`` (exact only) writes ``LegacyEMAHook`` instead of ``EMAHook``.
    """
    if mode not in ('exact', 'native'):
        raise ValueError(f"mode must be 'exact' or 'native', got {mode!r}")
    if legacy_swap and mode != 'exact':
        raise ValueError('--legacy-swap needs --exact (LegacyEMAHook is compat_ema\'s, not '
                         "mmengine's)")
    loaded = load_config(path)
    main = loaded.main
    out = os.path.abspath(out or default_output(loaded.path, mode))
    n_iters, iters_from = (iters, '--iters') if iters else _run_length(loaded.cfg)
    if not n_iters:
        n_iters, iters_from = DEFAULT_ITERS, 'the default; pass --iters for your run length'
    mig = Migration(source=loaded.path, mode=mode, text=main.text, iters=n_iters,
                    iters_from=iters_from, out=out)
    found, unknown, elsewhere = find_ema_hooks(loaded, generation)
    mig.unknown = unknown
    if unknown and not keep_unknown:
        raise UnsupportedHooks(
            'EMA-like hook(s) this tool does not understand, nothing written: '
            + '; '.join(' '.join(u.split()) for u in unknown)
            + ' (migrate them by hand, or pass --keep-unknown to leave them as written)')
    for item in unknown:
        mig.notes.append(f'left as written (not understood): {item}')
    for item in elsewhere:
        mig.notes.append(f'EMA-like dict outside custom_hooks, left as written: {item}')

    edits: List[Edit] = []
    footer: List[str] = []
    need_full_list = False
    hooks_list = _hooks_list(loaded.cfg)
    new_entries: Dict[int, Dict[str, Any]] = {}
    for index, entry, spec in found:
        mig.specs.append(spec)
        if not spec.is_legacy:
            mig.notes.append(f'custom_hooks[{index}] is already an mmengine EMAHook '
                             f'({spec.describe()}); left as written')
            continue
        if isinstance(spec, GanSpec):  # mmedit 0.x -> mmagic 1.x (the momentum flip)
            mapped = map_gan_exact(spec) if mode == 'exact' else map_gan_native(spec)
        else:
            mapped = (map_exact(spec, legacy_swap) if mode == 'exact'
                      else map_native(spec, n_iters))
        mig.mapped.append(mapped)
        new_entries[index] = mapped.new_entry()
        origin = loaded.origin_of(entry)
        if origin is None or origin.source is not main:
            need_full_list = True
            continue
        try:
            edits.extend(entry_edits(main, origin.node, mapped.new_type, mapped.insert,
                                     mapped.drop, mapped.rename, mapped.revalue))
        except UneditableEntry as exc:
            mig.notes.append(f'custom_hooks[{index}]: {exc}; the whole list is rewritten instead')
            need_full_list = True

    if need_full_list:
        edits = []  # the full list replaces in-place edits
        full = [new_entries.get(i, e) for i, e in enumerate(hooks_list)]
        for i, e in enumerate(full):
            if _has_unevaluated(e):
                raise ConfigError(f'custom_hooks[{i}] holds values the parser cannot read, and '
                                  'the list must be rewritten (it comes from a _base_ file): '
                                  f'run migrate on {loaded.owner_of("custom_hooks").path} instead')  # type: ignore[union-attr]
        owner = loaded.owner_of('custom_hooks')
        where = 'from ' + os.path.basename(owner.path) if owner is not main else 'rewritten'  # type: ignore[union-attr]
        footer.append(f'# custom_hooks ({where}) with the EMA entries migrated')
        footer.append(f'custom_hooks = {render(full)}')

    if mig.mapped:
        edits_imp, foot_imp = _custom_imports(loaded, mode == 'exact', mig.notes)
        edits.extend(edits_imp)
        footer.extend(foot_imp)

    resumes = {repr(m.resume_from): m for m in mig.mapped if m.has_resume_from}
    for m in mig.mapped:
        if m.has_resume_from and m.resume_from is None:
            mig.notes.append('resume_from=None on the hook dropped: mmengine resumes through the '
                             'runner (resume=True, load_from=...), EMA state included')
    real = {k: m for k, m in resumes.items() if m.resume_from is not None}
    if len(real) > 1:
        raise ConfigError(f'EMA hooks resume from different checkpoints: {sorted(real)}')
    if real:
        (value,) = [m.resume_from for m in real.values()]
        if isinstance(value, Unevaluated):
            raise ConfigError(f'the hook\'s resume_from cannot be read: {value.describe()}')
        footer.append("# the EMA hook's resume_from: mmengine resumes through the runner")
        footer.append(f'load_from = {render(value)}')
        footer.append('resume = True')
        mig.notes.append(
            f'resume_from={value!r} moved from the hook to the runner: load_from={value!r}, '
            'resume=True. A legacy checkpoint keeps its EMA in ema_* keys, which mmengine does '
            'not read: convert it first (compat-ema convert IN OUT --to mmengine), or the EMA '
            'restarts from the loaded weights')
    if mig.mapped and config_generation(loaded.cfg) == 'mmcv':
        legacy_keys = sorted({'runner', 'optimizer_config', 'lr_config', 'checkpoint_config',
                              'log_config', 'workflow', 'data', 'evaluation'} & set(loaded.cfg))
        mig.notes.append('only the EMA hooks were migrated; the rest is still mmcv 1.x style '
                         f'({", ".join(legacy_keys)}): migrate it with your codebase\'s own '
                         'guide (mmengine: train_cfg, optim_wrapper, param_scheduler, '
                         'default_hooks, ...)')
    if isinstance(loaded.cfg.get('resume_from'), str):
        mig.notes.append('the runner-level resume_from is not read by mmengine (left as written); '
                         'set load_from and resume=True')

    from .configparse import _PREDEFINED_RE
    if _PREDEFINED_RE.search(main.text):
        mig.notes.append('the config uses {{ fileDirname }}-style variables: in the migrated '
                         'file they name the new file (mmengine substitutes them too)')
    edits.extend(_rebase_edits(main, out))
    data = apply_edits(main.text.encode('utf-8'), edits)
    text = data.decode('utf-8')
    if footer:
        nl = '\r\n' if '\r\n' in main.text else '\n'
        if not text.endswith('\n'):
            text += nl
        text += nl.join(['', f'# ---- added by compat-ema migrate --{mode} ----'] + footer + [''])
    mig.text = text
    if mig.mapped:
        _verify(mig, new_entries, hooks_list, main, need_full_list)
    return mig


def _has_unevaluated(value: Any) -> bool:
    if isinstance(value, Unevaluated):
        return True
    if isinstance(value, dict):
        return any(_has_unevaluated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_unevaluated(v) for v in value)
    return False


#: modules a legacy config may import that need mmcv 1.x: a migrated config must not import them
LEGACY_ONLY_IMPORTS = ('compat_ema.integrations.mmcv',)


def _custom_imports(loaded: LoadedConfig, add_plugin: bool, notes: List[str]
                    ) -> Tuple[List[Edit], List[str]]:
    """Edits/footer lines that make ``custom_imports`` import the plugin (``add_plugin``) and
    not the modules that need mmcv 1.x (:data:`LEGACY_ONLY_IMPORTS`): the migrated config must
    load where only mmengine is installed."""
    import ast
    current = loaded.cfg.get('custom_imports')
    if current is None:
        if not add_plugin:
            return [], []
        return [], [f'custom_imports = dict(imports=[{PLUGIN!r}], allow_failed_imports=False)']
    if isinstance(current, Unevaluated) or not isinstance(current, dict) \
            or isinstance(current.get('imports', []), Unevaluated):
        raise ConfigError(f'custom_imports cannot be read ({current!r}); '
                          + (f'add {PLUGIN!r} and ' if add_plugin else '')
                          + f'remove {LEGACY_ONLY_IMPORTS[0]!r} by hand')
    imports = current.get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    dropped = [i for i in imports if i in LEGACY_ONLY_IMPORTS]
    new_imports = [i for i in imports if i not in LEGACY_ONLY_IMPORTS]
    if add_plugin and PLUGIN not in new_imports:
        new_imports.append(PLUGIN)
    for name in dropped:
        notes.append(f'custom_imports: {name!r} removed (it needs mmcv 1.x, which an mmengine '
                     'install does not have)' + (f'; {PLUGIN!r} registers the migrated types'
                                                 if add_plugin else ''))
    if new_imports == imports:
        return [], []
    origin = loaded.origin_of(current)
    if origin is not None and origin.source is loaded.main:
        node = origin.node
        value_node = None
        if isinstance(node, ast.Call):
            value_node = next((kw.value for kw in node.keywords if kw.arg == 'imports'), None)
        elif isinstance(node, ast.Dict):
            value_node = next((v for k, v in zip(node.keys, node.values)
                               if isinstance(k, ast.Constant) and k.value == 'imports'), None)
        if isinstance(value_node, (ast.List, ast.Tuple)):
            if not dropped:
                return [append_to_list_edit(loaded.main, value_node, PLUGIN)], []
            from .rewrite import node_span
            s, e = node_span(loaded.main, value_node)
            return [Edit(s, e, '[' + ', '.join(repr(i) for i in new_imports) + ']')], []
    new = dict(current)
    new['imports'] = new_imports
    return [], [f'custom_imports = {render(new)}']


def _rebase_edits(main: SourceFile, out: str) -> List[Edit]:
    """Rewrite relative ``_base_`` paths so they resolve from ``out``'s directory."""
    import ast
    from .rewrite import node_span
    src_dir = os.path.dirname(os.path.abspath(main.path))
    out_dir = os.path.dirname(os.path.abspath(out))
    if main.base_node is None or os.path.realpath(src_dir) == os.path.realpath(out_dir):
        return []
    edits = []
    value = main.base_node.value
    nodes = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    for n in nodes:
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and not os.path.isabs(n.value):
            target = os.path.normpath(os.path.join(src_dir, n.value))
            rel = os.path.relpath(target, out_dir).replace(os.sep, '/')
            s, e = node_span(main, n)
            edits.append(Edit(s, e, repr(rel)))
    return edits


def _verify(mig: Migration, new_entries: Dict[int, Dict[str, Any]], old_list: List[Any],
            main: SourceFile, full_list: bool) -> None:
    """Re-parse the new text: custom_hooks must be the expected list."""
    try:
        again = parse_source(mig.text, main.path)
    except ConfigError as exc:  # pragma: no cover - an editor bug
        raise AssertionError(f'migrated text does not parse: {exc}') from None
    hooks = again.values.get('custom_hooks')
    if hooks is None and not full_list:
        return  # the list lives in a base file and was not touched
    expected = [new_entries.get(i, e) for i, e in enumerate(old_list)]
    if isinstance(hooks, dict):
        hooks = [hooks]
    if not _same(list(hooks or []), expected):
        raise AssertionError(f'migration self-check failed: custom_hooks reads back as {hooks!r}, '
                             f'expected {expected!r}')


def _same(a: Any, b: Any) -> bool:
    """Equality where two unreadable values match (their line numbers may have moved), and a
    ``{{_base_.x}}`` kept in the new text matches the value it stands for."""
    if isinstance(a, BaseRef):
        return True
    if isinstance(a, Unevaluated) or isinstance(b, Unevaluated):
        return isinstance(a, Unevaluated) and isinstance(b, Unevaluated)
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def write_migration(mig: Migration, out: str, force: bool = False) -> str:
    """Write ``mig.text`` to ``out`` atomically; never the input, never over a file without ``force``."""
    if os.path.dirname(os.path.abspath(out)) != os.path.dirname(mig.out):
        raise ValueError(f'this migration was computed for {mig.out} (relative _base_ paths '
                         f'resolve from there); call migrate_config(..., out={out!r})')
    data = mig.text.encode('utf-8')
    write_new(out, lambda f: f.write(data), inputs=[mig.source], force=force)
    return out
