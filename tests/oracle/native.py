"""Load the real mmdet 3.3.0 and mmyolo 0.6.0 ``ExpMomentumEMA`` files (oracle env only).

The two upstream files are executed directly (they are extracted from the
wheels by ``extract_native.py``; the packages are not installed, mmdet 2.28.2
owns the name ``mmdet`` here). Their imports are served by a temporary
``sys.modules`` shim, removed again after each file has run:

* ``mmdet.registry`` / ``mmyolo.registry``: ``MODELS`` is a real mmengine
  ``Registry`` child of mmengine's ``MODELS`` (scopes ``native_mmdet3`` and
  ``native_mmyolo``), so ``register_module()`` works as upstream;
* ``mmdet.models.layers`` (for mmyolo): exposes the real mmdet 3.3.0 class;
* ``mmengine.model`` is the real mmengine 0.10.7.

Where the files are: ``$COMPAT_EMA_NATIVE_DIR`` (set by the oracle tox env to
``{envdir}/native``), else ``<sys.prefix>/native``, else ``/work/.native``.
``native_available()`` says whether they are found; ``native_dir()`` raises a
RuntimeError naming what to run when they are not.
"""
from __future__ import annotations

import os
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

from upstream import load_file  # tests/oracle/upstream.py (standard library only at import)

MMDET3_FILE = 'mmdet/models/layers/ema.py'
MMYOLO_FILE = 'mmyolo/models/layers/ema.py'
_MISSING = object()


def candidates():
    """Where the extracted upstream files may be, in order (see the module docstring)."""
    env = os.environ.get('COMPAT_EMA_NATIVE_DIR')
    if env:
        return [Path(env)]
    return [Path(sys.prefix) / 'native', Path('/work/.native')]


def _find_dir() -> Optional[Path]:
    for d in candidates():
        if (d / MMDET3_FILE).is_file() and (d / MMYOLO_FILE).is_file():
            return d
    return None


def native_available() -> bool:
    """True when both upstream files are found and the real mmengine 0.10.7 imports."""
    if _find_dir() is None:
        return False
    try:
        import mmengine
    except ImportError:
        return False
    return mmengine.__version__ == '0.10.7'


def native_dir() -> Path:
    """The directory holding the two extracted files, or a RuntimeError saying how to get them."""
    found = _find_dir()
    if found is None:
        raise RuntimeError(
            f'the mmdet 3.3.0 / mmyolo 0.6.0 ema.py files were not found in '
            f'{[str(c) for c in candidates()]}: run `pip download --no-deps -d WHEELS '
            f'mmdet==3.3.0 mmyolo==0.6.0 && python tests/oracle/extract_native.py WHEELS DIR` '
            f'and set COMPAT_EMA_NATIVE_DIR=DIR (tox -e oracle does this)')
    return found


def _package(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so submodule imports resolve through sys.modules
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def exec_with_shim(module_name: str, path: Path, shim: Dict[str, types.ModuleType]):
    """:func:`upstream.load_file` with the modules of ``shim`` in ``sys.modules`` while the file
    runs (what was there before is put back, what was not is removed)."""
    saved = {k: sys.modules.get(k, _MISSING) for k in shim}
    sys.modules.update(shim)
    try:
        module = load_file(module_name, path)
    finally:
        for k, v in saved.items():
            if v is _MISSING:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def _registry(scope: str):
    from mmengine.registry import MODELS, Registry
    return Registry('model', parent=MODELS, scope=scope)


@lru_cache(maxsize=None)
def mmdet3_module():
    """The executed mmdet 3.3.0 ``mmdet/models/layers/ema.py`` (module ``native_mmdet3_ema``)."""
    registry = _registry('native_mmdet3')
    shim = {'mmdet': _package('mmdet'),
            'mmdet.registry': _package('mmdet.registry', MODELS=registry)}
    module = exec_with_shim('native_mmdet3_ema', native_dir() / MMDET3_FILE, shim)
    module.REGISTRY = registry
    return module


@lru_cache(maxsize=None)
def mmyolo_module():
    """The executed mmyolo 0.6.0 ``mmyolo/models/layers/ema.py`` (module ``native_mmyolo_ema``)."""
    base = mmdet3_module().ExpMomentumEMA
    registry = _registry('native_mmyolo')
    shim = {'mmdet': _package('mmdet'),
            'mmdet.models': _package('mmdet.models'),
            'mmdet.models.layers': _package('mmdet.models.layers', ExpMomentumEMA=base),
            'mmyolo': _package('mmyolo'),
            'mmyolo.registry': _package('mmyolo.registry', MODELS=registry)}
    module = exec_with_shim('native_mmyolo_ema', native_dir() / MMYOLO_FILE, shim)
    module.REGISTRY = registry
    return module


def mmdet3_cls():
    """The real mmdet 3.3.0 ``ExpMomentumEMA`` class."""
    return mmdet3_module().ExpMomentumEMA


def mmyolo_cls():
    """The real mmyolo 0.6.0 ``ExpMomentumEMA`` class."""
    return mmyolo_module().ExpMomentumEMA


# --------------------------------------------------------------------------------------------
# A torch-only harness shared by the differential tests, reference/gen_native.py and the
# default-env golden replay: random small models and a seeded "training" of them.
# --------------------------------------------------------------------------------------------
import copy  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

DTYPES = {'float32': torch.float32, 'float64': torch.float64, 'bfloat16': torch.bfloat16}


class Net(nn.Module):
    """Linear -> [BatchNorm1d] -> ReLU -> Linear (+ a tied Linear), optional extra buffers.

    ``spec`` keys: d, h, o (sizes), bias, bn, bn_affine, tied (a second head
    sharing ``fc2.weight``: state_dict lists it twice), int_buffer (a long
    ``counter``), nonpersistent (a float ``scale`` buffer missing from state_dict).
    """

    def __init__(self, spec: dict) -> None:
        super().__init__()
        d, h, o = spec['d'], spec['h'], spec['o']
        self.fc1 = nn.Linear(d, h, bias=spec['bias'])
        self.bn = nn.BatchNorm1d(h, affine=spec['bn_affine']) if spec['bn'] else nn.Identity()
        self.fc2 = nn.Linear(h, o)
        self.tied = spec['tied']
        if self.tied:
            self.fc3 = nn.Linear(h, o, bias=False)
            self.fc3.weight = self.fc2.weight
        if spec['int_buffer']:
            self.register_buffer('counter', torch.zeros(2, dtype=torch.long))
        if spec['nonpersistent']:
            self.register_buffer('scale', torch.ones(h), persistent=False)

    def forward(self, x):
        z = torch.relu(self.bn(self.fc1(x)))
        if hasattr(self, 'scale'):
            z = z * self.scale
        y = self.fc2(z)
        return y + self.fc3(z) if self.tied else y


def random_spec(rng: random.Random) -> dict:
    """A random model spec (see :class:`Net`) plus its dtype name."""
    return dict(d=rng.randint(1, 5), h=rng.randint(2, 6), o=rng.randint(1, 4),
                bias=rng.random() < 0.8, bn=rng.random() < 0.6, bn_affine=rng.random() < 0.7,
                tied=rng.random() < 0.2, int_buffer=rng.random() < 0.4,
                nonpersistent=rng.random() < 0.3,
                dtype=rng.choice(sorted(DTYPES)))


def build_model(spec: dict, seed: int) -> Net:
    """The model of ``spec`` with weights drawn from ``seed`` (independent of the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Net(spec)
    return model.to(DTYPES[spec['dtype']])


def make_steps(spec: dict, model: nn.Module, seed: int, n: int, scale: float = 0.1) -> list:
    """``n`` training steps: per-parameter deltas, a BN input batch, buffer changes."""
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[spec['dtype']]
    steps = []
    for _ in range(n):
        deltas = {name: (torch.randn(p.shape, generator=g, dtype=torch.float64) * scale).to(dtype)
                  for name, p in model.named_parameters()}
        x = torch.randn(4, spec['d'], generator=g, dtype=torch.float64).to(dtype)
        k = int(torch.randint(1, 4, (1,), generator=g))
        s = float(1 + 0.1 * torch.rand(1, generator=g, dtype=torch.float64))
        steps.append(dict(deltas=deltas, x=x, k=k, s=s))
    return steps


@torch.no_grad()
def apply_step(model: nn.Module, step: dict) -> None:
    """One "training iteration": add the deltas, a train-mode forward (BN stats), buffer bumps."""
    params = dict(model.named_parameters())
    for name, delta in step['deltas'].items():
        params[name].add_(delta)
    model.train()
    model(step['x'])
    if hasattr(model, 'counter'):
        model.counter.add_(step['k'])
    if hasattr(model, 'scale'):
        model.scale.mul_(step['s'])


def full_state(module: nn.Module) -> dict:
    """state_dict plus non-persistent buffers (under ``<name>#np``), detached clones."""
    out = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    persistent = set(module.state_dict())
    for name, b in module.named_buffers():
        if name not in persistent:
            out[name + '#np'] = b.detach().cpu().clone()
    return out


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor reinterpreted as integers of the same width (for bitwise comparison)."""
    t = t.detach().contiguous().reshape(-1)
    if t.is_floating_point():
        return t.view(_BITS[t.element_size()])
    return t


def bitwise_diff(a: dict, b: dict) -> list:
    """Keys whose dtype, shape or bits differ (and keys present in one only)."""
    bad = [k for k in set(a) ^ set(b)]
    for k in a:
        if k in b:
            x, y = a[k], b[k]
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(bits(x), bits(y)):
                bad.append(k)
    if list(a) != list(b) and not bad:
        bad.append('<key order>')
    return bad


def clone_model(model: nn.Module) -> nn.Module:
    """A deepcopy (two sources trained identically stay bitwise equal)."""
    return copy.deepcopy(model)


# --------------------------------------------------------------------------------------------
# Golden scenarios (reference/gen_native.py records them from the real classes; the default-env
# test tests/test_native_golden.py replays them with compat_ema). Sources are *loaded* from the
# recorded states at every step, so a replay depends on no RNG and no BatchNorm kernel.
# --------------------------------------------------------------------------------------------
def _spec(dtype='float32', **over) -> dict:
    base = dict(d=3, h=4, o=2, bias=True, bn=True, bn_affine=True, tied=False, int_buffer=False,
                nonpersistent=False, dtype=dtype)
    base.update(over)
    return base


def golden_cases() -> list:
    """The recorded scenarios: for each target, defaults, YOLOX-style, quirks, dtypes, hooks."""
    out = []
    for target in ('mmdet3', 'mmyolo'):
        def add(name, **case):
            case.setdefault('seed', 100 + len(out))
            case.setdefault('n', 8)
            case.setdefault('kw', {})
            case.setdefault('driver', 'direct')
            out.append(dict(name=f'{target}_{name}', target=target, **case))
        add('defaults', spec=_spec())
        add('yolox_native', spec=_spec(int_buffer=True),
            kw=dict(momentum=0.0001, update_buffers=True))
        add('fast_anneal_buffers', spec=_spec('float64', int_buffer=True, nonpersistent=True),
            kw=dict(momentum=0.1, gamma=3, interval=2))
        add('bfloat16_tied', spec=_spec('bfloat16', tied=True),
            kw=dict(momentum=0.05, gamma=10, update_buffers=True), n=10)
        add('bfloat16', spec=_spec('bfloat16', int_buffer=True), kw=dict(momentum=0.3, gamma=2))
        add('other_model', spec=_spec(), kw=dict(momentum=0.2, gamma=5), driver='other')
        add('hook_load_from', spec=_spec(int_buffer=True), n=10,
            kw=dict(momentum=0.01, gamma=4, update_buffers=True), driver='hook',
            begin_iter=2, events={'3': 'val', '5': 'load_from'})
        add('hook_resume', spec=_spec(nonpersistent=True), n=10,
            kw=dict(momentum=0.02, gamma=6), driver='hook', begin_iter=0,
            events={'2': 'val', '4': 'resume'})
    return out


@torch.no_grad()
def load_full_state(model: nn.Module, state: dict) -> None:
    """Copy a :func:`full_state` dict into ``model`` in place (tensor objects are kept)."""
    tensors = dict(model.state_dict(keep_vars=True))
    for name, b in model.named_buffers():
        tensors.setdefault(name, b)
    for key, value in state.items():
        tensors[key[:-3] if key.endswith('#np') else key].copy_(value)


def source_states(case: dict, which: str = 'src') -> list:
    """``n + 1`` source states (initial, then after each step) from the seeded training."""
    seed = case['seed'] + (1 if which == 'arg' else 0)
    model = build_model(case['spec'], seed)
    states = [full_state(model)]
    for step in make_steps(case['spec'], model, seed, case['n']):
        apply_step(model, step)
        states.append(full_state(model))
    return states


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def drive(case: dict, make_ema, make_hook, src: list, arg: list = None, device: str = 'cpu'):
    """Run ``case`` with the given factories; returns ``(labels, snapshots)``.

    ``make_ema(model, **kw)`` builds the averaged model (drivers 'direct' and
    'other'); ``make_hook(**kw)`` builds an mmengine-style ``EMAHook``
    (driver 'hook'). ``src``/``arg``: the source states per step (``arg`` is
    the other model passed to ``update_parameters`` by driver 'other').
    ``device``: where the models live (snapshots are CPU copies).
    """
    labels, snaps = [], []
    model = build_model(case['spec'], case['seed']).to(device)
    load_full_state(model, src[0])
    if case['driver'] in ('direct', 'other'):
        other = None
        if case['driver'] == 'other':
            other = build_model(case['spec'], case['seed'] + 1).to(device)
            load_full_state(other, arg[0])
        ema = make_ema(model, **case['kw'])
        labels.append('init')
        snaps.append({**_prefixed('ema.', full_state(ema)), **_prefixed('src.', src[0]),
                      **(_prefixed('arg.', arg[0]) if other is not None else {})})
        for t in range(1, case['n'] + 1):
            load_full_state(model, src[t])
            snap = _prefixed('src.', src[t])
            if other is not None:
                load_full_state(other, arg[t])
                snap.update(_prefixed('arg.', arg[t]))
            ema.update_parameters(model if other is None else other)
            labels.append(f'iter {t - 1}')
            snaps.append({**_prefixed('ema.', full_state(ema)), **snap})
        return labels, snaps
    import types
    hook_kw = dict(case['kw'], begin_iter=case['begin_iter'])
    hook = make_hook(**hook_kw)
    runner = types.SimpleNamespace(model=model, iter=0, epoch=0, max_iters=case['n'],
                                   max_epochs=1, _resume=False)
    hook.before_run(runner)
    hook.before_train(runner)
    labels.append('init')
    snaps.append({**_prefixed('ema.', full_state(hook.ema_model)), **_prefixed('src.', src[0])})
    for t in range(1, case['n'] + 1):
        runner.iter = t - 1
        load_full_state(runner.model, src[t])
        hook.after_train_iter(runner, t - 1)
        labels.append(f'iter {t - 1}')
        snaps.append({**_prefixed('ema.', full_state(hook.ema_model)),
                      **_prefixed('src.', src[t])})
        event = case.get('events', {}).get(str(t - 1))
        if event == 'val':
            hook.before_val_epoch(runner)
            labels.append(f'val swap {t - 1}')
            snaps.append(_prefixed('swapped.', full_state(runner.model)))
            hook.after_val_epoch(runner)
        elif event in ('load_from', 'resume'):
            ck = {'meta': {'iter': t}, 'state_dict': runner.model.state_dict()}
            hook.before_save_checkpoint(runner, ck)
            ck = copy.deepcopy(ck)
            labels.append(f'checkpoint {t - 1}')
            snaps.append({**_prefixed('ckpt.state_dict.', _cpu(ck['state_dict'])),
                          **_prefixed('ckpt.ema_state_dict.', _cpu(ck['ema_state_dict']))})
            runner.model = build_model(case['spec'], case['seed'] + 7).to(device)
            runner._resume = event == 'resume'
            hook = make_hook(**hook_kw)
            hook.before_run(runner)
            hook.after_load_checkpoint(runner, ck)
            runner.model.load_state_dict(ck['state_dict'])
            labels.append(f'{event} {t - 1}')
            snaps.append(_prefixed('ema.', full_state(hook.ema_model)))
    return labels, snaps


def states_from_snapshots(labels: list, snaps: list, prefix: str) -> list:
    """The per-step source states recorded under ``prefix`` ('src.' or 'arg.') in a golden file."""
    out = []
    for label, snap in zip(labels, snaps):
        if label == 'init' or label.startswith('iter '):
            out.append({k[len(prefix):]: v for k, v in snap.items() if k.startswith(prefix)})
    return out
