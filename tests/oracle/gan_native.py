"""The real mmedit 0.16.1 / mmagic 1.2.0 / mmgen 0.7.3 ``ExponentialMovingAverageHook`` files, and a torch-only
harness of random generators shared by the differential tests, ``reference/gen_gan.py`` and the
default-env golden replay (``tests/test_gan_golden.py``).

The two upstream files are extracted from the wheels by ``extract_native.py``
(``pip download --no-deps mmedit==0.16.1 mmagic==1.2.0``) into
``$COMPAT_EMA_NATIVE_DIR`` and executed by path, once per process: mmedit's
imports the real mmcv 1.6.0 (torchvision stubbed as in ``upstream.py``) and
registers into mmcv's ``HOOKS``; mmagic's imports only mmengine 0.10.7 and
registers into mmengine's ``HOOKS``. Importing this module needs only torch.
"""
from __future__ import annotations

import copy
import random
import types
from functools import lru_cache
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn as nn

# tests/oracle/native.py and upstream.py: where the extracted files are, how they are executed,
# and the state snapshots (torch and the standard library only at import)
from native import candidates, exec_with_shim, full_state, load_full_state
from upstream import load_file

MMEDIT_FILE = 'mmedit/core/hooks/ema.py'
MMAGIC_FILE = 'mmagic/engine/hooks/ema.py'
MMGEN_FILE = 'mmgen/core/hooks/ema_hook.py'
DTYPES = {'float32': torch.float32, 'float64': torch.float64}


# ---------------------------------------------------------------------------------------------
# the upstream files
# ---------------------------------------------------------------------------------------------
def native_dir() -> Path:
    """The directory holding both extracted files, or a RuntimeError saying how to get them."""
    for d in candidates():
        if (d / MMEDIT_FILE).is_file() and (d / MMAGIC_FILE).is_file():
            return d
    raise RuntimeError(f'mmedit/mmagic ema.py not found in {[str(c) for c in candidates()]}: run '
                       '`pip download --no-deps --only-binary=:all: -d W mmedit==0.16.1 '
                       'mmagic==1.2.0 && python tests/oracle/extract_native.py W DIR` and set '
                       'COMPAT_EMA_NATIVE_DIR=DIR (tox -e oracle does this)')


@lru_cache(maxsize=None)
def mmedit_cls():
    """The real mmedit 0.16.1 ``ExponentialMovingAverageHook`` (on the real mmcv 1.6.0)."""
    import upstream  # tests/oracle/upstream.py: the torchvision stub and mmcv.runner
    upstream.mmcv_hooks()
    return load_file('native_mmedit_ema', native_dir() / MMEDIT_FILE).ExponentialMovingAverageHook


@lru_cache(maxsize=None)
def mmagic_average_module():
    """The real mmagic 1.2.0 ``models/base_models/average_model.py`` (``ExponentialMovingAverage``,
    ``RampUpEMA``: what ``BaseGAN(ema_config=...)`` builds), its ``mmagic.registry`` served by a
    temporary shim (a child of mmengine's ``MODELS``)."""
    from mmengine.registry import MODELS, Registry
    path = native_dir() / 'mmagic/models/base_models/average_model.py'
    if not path.is_file():
        raise RuntimeError(f'{path} is missing: re-run extract_native.py')
    registry = Registry('model', parent=MODELS, scope='native_mmagic_models')
    pkg = types.ModuleType('mmagic')
    pkg.__path__ = []
    reg = types.ModuleType('mmagic.registry')
    reg.MODELS = registry
    return exec_with_shim('native_mmagic_average_model', path,
                          {'mmagic': pkg, 'mmagic.registry': reg})


@lru_cache(maxsize=None)
def mmgen_cls():
    """The real mmgen 0.7.3 ``ExponentialMovingAverageHook`` (on the real mmcv 1.6.0).

    Both mmedit's and mmgen's files register the name into mmcv's ``HOOKS``; mmgen's is
    executed with a private child registry in place of ``HOOKS`` so they can live together."""
    import upstream
    mmcv_runner = upstream.mmcv_hooks()
    path = native_dir() / MMGEN_FILE
    if not path.is_file():
        raise RuntimeError(f'{path} is missing: extract_native.py extracts it from the mmgen '
                           '0.7.3 sdist (tox -e oracle does this)')
    from mmcv.utils import Registry
    private = Registry('hook', parent=mmcv_runner.HOOKS, scope='native_mmgen')
    saved = mmcv_runner.HOOKS
    mmcv_runner.HOOKS = private
    try:
        module = load_file('native_mmgen_ema', path)
    finally:
        mmcv_runner.HOOKS = saved
    return module.ExponentialMovingAverageHook


@lru_cache(maxsize=None)
def mmagic_cls():
    """The real mmagic 1.2.0 ``ExponentialMovingAverageHook`` (on the real mmengine 0.10.7)."""
    import mmengine.runner  # noqa: F401  (the file imports Runner from it)
    return load_file('native_mmagic_ema', native_dir() / MMAGIC_FILE).ExponentialMovingAverageHook


# ---------------------------------------------------------------------------------------------
# random generators
# ---------------------------------------------------------------------------------------------
class Generator(nn.Module):
    """Conv -> [BatchNorm2d] -> ReLU -> frozen conv (+ extra buffers).

    ``spec``: c (channels), k (kernel), bn, frozen (the second conv's
    parameters have ``requires_grad=False``), float_buffer (a persistent float
    ``gain``), int_buffer (a long ``counter`` starting above 2**24, where
    float32 stops holding every integer), nonpersistent (a float ``scale``
    missing from state_dict), dtype.
    """

    def __init__(self, spec: dict) -> None:
        super().__init__()
        c, k = spec['c'], spec['k']
        self.conv1 = nn.Conv2d(c, c, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(c) if spec['bn'] else nn.Identity()
        self.conv2 = nn.Conv2d(c, c, 1)
        if spec['frozen']:
            self.conv2.requires_grad_(False)
        if spec['float_buffer']:
            self.register_buffer('gain', torch.ones(c))
        if spec['int_buffer']:
            self.register_buffer('counter', torch.full((2,), 2 ** 24 + 1, dtype=torch.long))
        if spec['nonpersistent']:
            self.register_buffer('scale', torch.ones(c), persistent=False)

    def forward(self, x):
        z = torch.relu(self.bn(self.conv1(x)))
        if hasattr(self, 'gain'):
            z = z * self.gain.view(1, -1, 1, 1)
        return self.conv2(z)


class Pair(nn.Module):
    """``generator`` (+ ``generator_ema`` when ``spec['has_ema']``; + ``aux``/``aux_ema``)."""

    def __init__(self, spec: dict, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = Generator(spec)
            if spec['has_ema']:
                self.generator_ema = Generator(spec)
            if spec['aux']:
                self.aux = nn.Linear(spec['c'], 2)
                self.aux_ema = nn.Linear(spec['c'], 2)
        self.to(DTYPES[spec['dtype']])


def module_keys(spec: dict):
    return ('generator_ema', 'aux_ema') if spec['aux'] else spec.get('keys', 'generator_ema')


def random_spec(rng: random.Random) -> dict:
    return dict(c=rng.randint(1, 3), k=rng.choice([1, 3]), bn=rng.random() < 0.7,
                frozen=rng.random() < 0.5, float_buffer=rng.random() < 0.5,
                int_buffer=rng.random() < 0.4, nonpersistent=rng.random() < 0.3,
                has_ema=rng.random() < 0.7, aux=rng.random() < 0.2,
                keys=rng.choice(['generator_ema', ('generator_ema',)]),
                dtype=rng.choice(sorted(DTYPES)))


def random_hook_kw(rng: random.Random, family: str) -> dict:
    """Random ``interval`` (-1 included), ``start_iter`` and ``interp_cfg`` for ``family``."""
    kw = {}
    if rng.random() < 0.85:
        kw['interval'] = rng.choice([-1, 0, 1, 1, 2, 3])
    if rng.random() < 0.6:
        kw['start_iter'] = rng.randint(0, 5)
    cfg = {}
    if rng.random() < 0.8:
        cfg['momentum'] = rng.choice([0.999, 0.9, 0.5, 0.6, 0.001, rng.uniform(0.01, 0.99)])
        if family != 'mmagic' and rng.random() < 0.1:
            cfg['momentum'] = 1.25  # never checked by mmedit
    if rng.random() < 0.5:
        cfg['momentum_nontrainable'] = (rng.choice([1.0, 0.5, rng.uniform(0.01, 1.0)])
                                        if family == 'mmagic'
                                        else rng.choice([0.0, 0.5, rng.random()]))
    if cfg or rng.random() < 0.3:
        kw['interp_cfg'] = cfg
    if family == 'mmgen' and rng.random() < 0.5:
        kw['momentum_policy'] = 'rampup'
        if rng.random() < 0.8:
            kw['momentum_cfg'] = dict(ema_kimg=rng.choice([10, 0.01, 0.002]),
                                      ema_rampup=rng.choice([0.05, None, 0.5]),
                                      batch_size=rng.choice([1, 4, 32]))
    return kw


def make_pair(spec: dict, seed: int) -> Pair:
    return Pair(spec, seed)


@torch.no_grad()
def train_states(spec: dict, seed: int, n: int) -> List[dict]:
    """``n + 1`` generator states: the initial one, then after each seeded "training step"
    (parameter deltas, frozen ones included, a train-mode forward for BN, buffer changes)."""
    model = make_pair(spec, seed).generator
    dtype = DTYPES[spec['dtype']]
    g = torch.Generator().manual_seed(seed + 1000)
    states = [full_state(model)]
    for _ in range(n):
        for p in model.parameters():
            p.add_((torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1).to(dtype))
        model.train()
        model(torch.randn(2, spec['c'], 3, 3, generator=g, dtype=torch.float64).to(dtype))
        if hasattr(model, 'gain'):
            model.gain.mul_(1 + 0.1 * float(torch.rand(1, generator=g)))
        if hasattr(model, 'counter'):
            model.counter.add_(int(torch.randint(1, 4, (1,), generator=g)))
        if hasattr(model, 'scale'):
            model.scale.mul_(1.5)
        states.append(full_state(model))
    return states


def _ema_snapshot(model: Pair) -> dict:
    out = {}
    for name, child in model.named_children():
        if name.endswith('_ema'):
            out.update({f'{name}.{k}': v for k, v in full_state(child).items()})
    return out


def drive(case: dict, make_hook: Callable, family: str, src: List[dict],
          aux: Optional[List[dict]] = None, device: str = 'cpu', ema_init: Optional[dict] = None):
    """Run ``case`` through a hook built by ``make_hook(**case['kw'])``; ``(labels, snapshots)``.

    ``family``: 'mmedit' (``after_train_iter(runner)``) or 'mmagic'
    (``after_train_iter(runner, batch_idx)``). ``src``: the generator state
    to load before each call (``src[0]`` before ``before_run``). ``ema_init``: a recorded
    'init' snapshot whose ``<name>_ema.*`` entries are loaded into the model's EMA modules
    first (so a replay does not depend on how this CPU draws the initial weights).
    """
    spec = case['spec']
    model = make_pair(spec, case['seed']).to(device)
    load_full_state(model.generator, src[0])
    if aux is not None:
        load_full_state(model.aux, aux[0])
    for name, child in model.named_children():
        prefix = name + '.'
        if ema_init is not None and name.endswith('_ema'):
            load_full_state(child, {k[len(prefix):]: v for k, v in ema_init.items()
                                    if k.startswith(prefix)})
    hook = make_hook(**case['kw'])
    runner = types.SimpleNamespace(model=model, iter=0)
    hook.before_run(runner)
    def fed(t):
        out = {'src.' + k: v for k, v in src[t].items()}
        if aux is not None:
            out.update({'aux.' + k: v for k, v in aux[t].items()})
        return out
    labels, snaps = ['init'], [{**_ema_snapshot(model), **fed(0)}]
    for t in range(1, len(src)):
        load_full_state(model.generator, src[t])
        if aux is not None:
            load_full_state(model.aux, aux[t])
        runner.iter = t - 1
        if family in ('mmedit', 'mmgen'):
            hook.after_train_iter(runner)
        else:
            hook.after_train_iter(runner, t - 1)
        labels.append(f'iter {t - 1}')
        snaps.append({**_ema_snapshot(model), **fed(t)})
    return labels, snaps


def aux_states(spec: dict, seed: int, n: int) -> Optional[List[dict]]:
    if not spec['aux']:
        return None
    model = make_pair(spec, seed).aux
    g = torch.Generator().manual_seed(seed + 2000)
    out = [full_state(model)]
    with torch.no_grad():
        for _ in range(n):
            for p in model.parameters():
                p.add_((torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1).to(p.dtype))
            out.append(full_state(model))
    return out


def golden_cases() -> list:
    """The recorded scenarios: each family's real-config use, defaults and quirks."""
    out = []

    def spec(**over):
        base = dict(c=2, k=3, bn=True, frozen=True, float_buffer=True, int_buffer=True,
                    nonpersistent=True, has_ema=True, aux=False, keys='generator_ema',
                    dtype='float32')
        base.update(over)
        return base

    def add(family, name, kw, n=8, **over):
        out.append(dict(name=f'{family}_{name}', family=family, seed=300 + len(out), n=n,
                        spec=spec(**over), kw=kw))
    for family, m in (('mmedit', 0.999), ('mmagic', 0.001)):
        add(family, 'realesrgan', dict(module_keys='generator_ema', interval=1,
                                       interp_cfg=dict(momentum=m)))
        add(family, 'realbasicvsr_f64', dict(module_keys=('generator_ema',), interval=1,
                                             interp_cfg=dict(momentum=m)), dtype='float64')
        add(family, 'defaults', dict(module_keys='generator_ema'), has_ema=False)
        add(family, 'start_interval', dict(module_keys='generator_ema', interval=2, start_iter=3,
                                           interp_cfg=dict(momentum=0.75 if family == 'mmedit'
                                                           else 0.25,
                                                           momentum_nontrainable=0.5)), n=10)
        add(family, 'two_keys', dict(module_keys=('generator_ema', 'aux_ema'), interval=3,
                                     start_iter=1, interp_cfg=dict(momentum=0.6)), aux=True,
            bn=False, frozen=False)
    add('mmgen', 'fixed', dict(module_keys='generator_ema', interval=1, start_iter=2,
                               interp_cfg=dict(momentum=0.999)))
    add('mmgen', 'stylegan_rampup', dict(module_keys=('generator_ema',), interval=1,
                                         momentum_policy='rampup',
                                         momentum_cfg=dict(ema_kimg=0.01, ema_rampup=0.05,
                                                           batch_size=4)), n=10)
    add('mmgen', 'rampup_f64_interval', dict(module_keys='generator_ema', interval=2,
                                             momentum_policy='rampup',
                                             interp_cfg=dict(momentum_nontrainable=0.25)),
        dtype='float64')
    return out


def source(case: dict):
    """``(src, aux)`` states of a golden case."""
    return (train_states(case['spec'], case['seed'], case['n']),
            aux_states(case['spec'], case['seed'], case['n']))


def states_from_snapshots(labels: list, snaps: list, prefix: str = 'src.') -> list:
    return [{k[len(prefix):]: v for k, v in snap.items() if k.startswith(prefix)}
            for snap in snaps]


_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bitwise_diff(a: dict, b: dict) -> list:
    """Keys whose dtype, shape or bits differ (and keys present in one only)."""
    bad = sorted(set(a) ^ set(b))
    for k in a:
        if k in b:
            x, y = a[k].reshape(-1).contiguous(), b[k].reshape(-1).contiguous()
            if x.dtype != y.dtype or x.shape != y.shape:
                bad.append(k)
            elif x.is_floating_point():
                if not torch.equal(x.view(_BITS[x.element_size()]), y.view(_BITS[y.element_size()])):
                    bad.append(k)
            elif not torch.equal(x, y):
                bad.append(k)
    return bad


def clone(obj):
    return copy.deepcopy(obj)
