"""Side-by-side timing of the EMA update and swap: real upstream vs compat_ema (fast and faithful).

Run from the repository root::

    # CPU, with the real mmcv 1.6.0 / mmdet 2.28.2 / mmengine 0.10.7 next to compat_ema
    .tox/oracle/bin/python benchmarks/bench_ema.py
    # any env (upstream columns become n/a when it is not importable)
    python benchmarks/bench_ema.py --repeat 30 --models resnet50,small2000
    # the lead's GPU run
    python benchmarks/bench_ema.py --device cuda

Models are built synthetically from parameter shapes (no torchvision):

* ``resnet50``: the 161 parameter tensors of torchvision's ResNet-50 (25,557,032
  floats) plus the 53 BatchNorm layers' running stats;
* ``small2000``: 2000 tensors of 1024 floats (1000 modules with weight and bias);
* ``vit_s16``: ViT-S/16-shaped transformer (12 blocks, width 384, 152 tensors).

For each model, one process, all variants measured round-robin (so machine
noise hits every column alike), median of ``--repeat`` calls:

* ``floor``: one in-place ``add_`` over a flat tensor as large as all the
  parameters together (2 reads + 1 write, no per-tensor overhead);
* updates: mmcv ``EMAHook.after_train_iter``, mmdet ``ExpMomentumEMAHook.after_train_iter``,
  mmengine ``ExponentialMovingAverage.update_parameters``;
* swaps: ``_swap_ema_parameters`` of mmcv ``EMAHook``, mmdet ``ExpMomentumEMAHook`` (whole
  state dict, BN buffers included) and mmengine ``EMAHook``, each after two updates (as
  in training, where evaluation follows training iterations).

``--load N`` starts N busy processes (a Python spin loop each) for the whole run: the
loaded rows, as in training, where data loading and other jobs hold cores. The load
average (``/proc/loadavg``) is printed next to each table.

``--components`` prints instead the fast path's component table: each component
switched off alone (the rest on), compat fast only, against everything on, interleaved
in one run; the ratio is ``off / on`` (> 1: the component gains that much there).

``--memory`` adds the extra memory of each implementation, measured in a fresh
subprocess per (work, implementation): the EMA state created by ``before_run``
(or the averaged model) and the peak transient memory of 3 updates and 2 swaps
(peak RSS on CPU, ``max_memory_allocated`` on CUDA).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'oracle'))

from compat_ema.core import batching, flat, kernels, structure, swap  # noqa: E402


# ----------------------------------------------------------------------------- models

class Layer(nn.Module):
    """A leaf with the given parameters (and BatchNorm-style buffers when ``bn``)."""

    def __init__(self, shapes: Dict[str, Tuple[int, ...]], device, bn: bool = False):
        super().__init__()
        for name, shape in shapes.items():
            t = torch.empty(shape, device=device)
            t.normal_(0, 0.02)
            self.register_parameter(name, nn.Parameter(t))
        if bn:
            n = shapes['weight'][0]
            self.register_buffer('running_mean', torch.zeros(n, device=device))
            self.register_buffer('running_var', torch.ones(n, device=device))
            self.register_buffer('num_batches_tracked', torch.tensor(0, device=device))


def resnet50(device) -> nn.Module:
    """ResNet-50's parameter tensors (161, 25.56M floats) and BN buffers, in torchvision's order."""
    root = nn.Module()
    layers = [('conv1', Layer({'weight': (64, 3, 7, 7)}, device)),
              ('bn1', Layer({'weight': (64,), 'bias': (64,)}, device, bn=True))]
    inp = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 1):
        for b in range(blocks):
            pre = f'layer{stage}_{b}'
            layers += [(f'{pre}_conv1', Layer({'weight': (planes, inp, 1, 1)}, device)),
                       (f'{pre}_bn1', Layer({'weight': (planes,), 'bias': (planes,)}, device, True)),
                       (f'{pre}_conv2', Layer({'weight': (planes, planes, 3, 3)}, device)),
                       (f'{pre}_bn2', Layer({'weight': (planes,), 'bias': (planes,)}, device, True)),
                       (f'{pre}_conv3', Layer({'weight': (planes * 4, planes, 1, 1)}, device)),
                       (f'{pre}_bn3', Layer({'weight': (planes * 4,), 'bias': (planes * 4,)},
                                            device, True))]
            if b == 0:
                layers += [(f'{pre}_down', Layer({'weight': (planes * 4, inp, 1, 1)}, device)),
                           (f'{pre}_downbn', Layer({'weight': (planes * 4,), 'bias': (planes * 4,)},
                                                   device, True))]
            inp = planes * 4
    layers.append(('fc', Layer({'weight': (1000, 2048), 'bias': (1000,)}, device)))
    for name, layer in layers:
        root.add_module(name, layer)
    return root


def small2000(device) -> nn.Module:
    """2000 tensors x 1024 floats: 1000 leaves with a weight and a bias each."""
    root = nn.Module()
    for i in range(1000):
        root.add_module(f'l{i}', Layer({'weight': (1024,), 'bias': (1024,)}, device))
    return root


def vit_s16(device) -> nn.Module:
    """ViT-S/16-shaped: patch embedding, 12 blocks of width 384 (MLP 1536), head of 1000."""
    d, h = 384, 1536
    root = nn.Module()
    root.add_module('embed', Layer({'cls_token': (1, 1, d), 'pos_embed': (1, 197, d),
                                    'weight': (d, 3, 16, 16), 'bias': (d,)}, device))
    for i in range(12):
        root.add_module(f'block{i}', Layer({
            'norm1_weight': (d,), 'norm1_bias': (d,), 'qkv_weight': (3 * d, d), 'qkv_bias': (3 * d,),
            'proj_weight': (d, d), 'proj_bias': (d,), 'norm2_weight': (d,), 'norm2_bias': (d,),
            'fc1_weight': (h, d), 'fc1_bias': (h,), 'fc2_weight': (d, h), 'fc2_bias': (d,)}, device))
    root.add_module('head', Layer({'norm_weight': (d,), 'norm_bias': (d,), 'weight': (1000, d),
                                   'bias': (1000,)}, device))
    return root


MODELS = {'resnet50': resnet50, 'small2000': small2000, 'vit_s16': vit_s16}


# ----------------------------------------------------------------------------- implementations

class Runner:
    """The runner attributes the hooks read."""

    def __init__(self, model):
        self.model = model
        self.iter = 1000
        self.epoch = 0
        self.max_iters = 10**9
        self.max_epochs = 10**6
        self._resume = False


def load_upstream():
    """``(mmcv.runner, mmdet ema module, (mmengine.hooks, mmengine.model))`` or None."""
    try:
        import upstream
        if not upstream.available():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return upstream.mmcv_hooks(), upstream.mmdet_ema(), upstream.mmengine_mods()
    except Exception:  # noqa: BLE001 - any import failure means "not in the oracle env"
        return None


def compat_classes():
    from compat_ema.mmcv import EMAHook as MmcvEMA
    from compat_ema.mmdet.core.hook.ema import ExpMomentumEMAHook
    from compat_ema.mmengine import EMAHook as EngineHook
    from compat_ema.mmengine.model.averaged_model import ExponentialMovingAverage
    return {'mmcv': MmcvEMA, 'mmdet': ExpMomentumEMAHook, 'mmengine_hook': EngineHook,
            'mmengine_ema': ExponentialMovingAverage}


def upstream_classes(up):
    mmcv_runner, mmdet_ema, (eng_hooks, eng_model) = up
    return {'mmcv': mmcv_runner.EMAHook, 'mmdet': mmdet_ema.ExpMomentumEMAHook,
            'mmengine_hook': eng_hooks.EMAHook, 'mmengine_ema': eng_model.ExponentialMovingAverage}


WORKS = ['mmcv update', 'mmdet Exp update', 'mmengine EMA update', 'mmcv swap', 'mmdet swap',
         'mmengine swap']


def make_work(work: str, classes, model: nn.Module) -> Callable[[], None]:
    """Set up ``work`` on ``model`` with ``classes``; return the call to time."""
    runner = Runner(model)
    if work == 'mmcv update':
        hook = classes['mmcv'](momentum=0.0002)
        hook.before_run(runner)
        return lambda: hook.after_train_iter(runner)
    if work == 'mmdet Exp update':
        hook = classes['mmdet'](momentum=0.0002)
        hook.before_run(runner)
        return lambda: hook.after_train_iter(runner)
    if work == 'mmengine EMA update':
        ema = classes['mmengine_ema'](model, momentum=0.0002)
        ema.update_parameters(model)  # the first call copies; time the averaging calls
        return lambda: ema.update_parameters(model)
    # swaps are timed as they happen in training: after updates (two here)
    if work in ('mmcv swap', 'mmdet swap'):
        hook = classes[work.split()[0]](momentum=0.0002)
        hook.before_run(runner)
        for _ in range(2):
            hook.after_train_iter(runner)
        return hook._swap_ema_parameters
    if work == 'mmengine swap':
        hook = classes['mmengine_hook'](momentum=0.0002)
        hook.before_run(runner)
        hook.before_train(runner)
        for _ in range(2):
            hook.after_train_iter(runner, batch_idx=0)
        return hook._swap_ema_parameters
    raise KeyError(work)


def with_fast(fn: Callable[[], None], fast: bool) -> Callable[[], None]:
    def call():
        before = kernels.fast_path_enabled()
        kernels.set_fast_path(fast)
        try:
            fn()
        finally:
            kernels.set_fast_path(before)
    return call


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_round_robin(calls: Dict[str, Callable[[], None]], repeat: int, device: str,
                     warmup: int = 2) -> Dict[str, float]:
    """Median milliseconds per call, the calls interleaved in each round."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: Dict[str, List[float]] = {k: [] for k in calls}
    for _ in range(repeat):
        for name, fn in calls.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def measure_model(model_name: str, device: str, repeat: int, works: List[str], up) -> dict:
    torch.manual_seed(0)
    impls = [('compat fast', compat_classes(), True), ('compat faithful', compat_classes(), False)]
    if up is not None:
        impls.insert(0, ('upstream', upstream_classes(up), None))
    base = MODELS[model_name](device)
    n_params = sum(p.numel() for p in base.parameters())
    n_tensors = len(list(base.parameters()))
    flat_a = torch.randn(n_params, device=device)
    flat_b = torch.randn(n_params, device=device)
    floor = time_round_robin({'floor': lambda: flat_a.add_(flat_b)}, repeat, device)['floor']
    # what reading the sources alone costs when they are separate tensors: one ``cat`` of
    # every parameter into a flat buffer (a lower bound of any update that reads them all)
    srcs = [p.detach().reshape(-1) for p in base.parameters()]
    gather = time_round_robin({'gather': lambda: torch.cat(srcs, out=flat_b)}, repeat, device)['gather']
    rows = {}
    for work in works:
        # the floor runs in the same round-robin as the implementations, so each row's
        # compat/floor ratio compares calls made under the same cache and load conditions
        calls = {'floor': lambda: flat_a.add_(flat_b)}
        for label, classes, fast in impls:
            model = MODELS[model_name](device)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                fn = make_work(work, classes, model)
            calls[label] = fn if fast is None else with_fast(fn, fast)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            rows[work] = time_round_robin(calls, repeat, device)
        del calls
    return dict(model=model_name, tensors=n_tensors, params=n_params, floor_ms=floor, gather_ms=gather, rows=rows)


# ----------------------------------------------------------------------------- load

_BUSY: List[subprocess.Popen] = []


def start_load(n: int) -> None:
    """Start ``n`` busy processes (one Python spin loop each), stopped when this one exits."""
    for _ in range(n):
        _BUSY.append(subprocess.Popen([sys.executable, '-c', 'while True: pass']))
    atexit.register(stop_load)
    time.sleep(0.5)


def stop_load() -> None:
    while _BUSY:
        proc = _BUSY.pop()
        proc.kill()
        proc.wait()


def loadavg() -> str:
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return 'n/a'


# ----------------------------------------------------------------------------- components

#: component -> settings that switch it off: (module, attribute, value); applied while the
#: work is set up and around every call, restored after.
COMPONENTS = {
    'flat buffer': [(flat, 'FLAT_MAX_NUMEL', 0)],
    'grain-size chunks': [(batching, 'GRAIN_SIZE', 1 << 62)],
    'cache-sized batches': [(batching, 'BATCH_BYTES', 1 << 62)],
    'storage exchange': [(kernels, 'set_exchange_swap', False)],
    'exchange memo': [(swap, 'EXCHANGE_MEMO', False)],
    'walk snapshots': [(structure, 'ENABLED', False)],
}


@contextlib.contextmanager
def switched(settings):
    saved = []
    for mod, attr, value in settings:
        if attr == 'set_exchange_swap':
            saved.append((mod, attr, kernels.exchange_swap_enabled()))
            kernels.set_exchange_swap(value)
        else:
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, value)
    try:
        yield
    finally:
        for mod, attr, value in reversed(saved):
            if attr == 'set_exchange_swap':
                kernels.set_exchange_swap(value)
            else:
                setattr(mod, attr, value)


def within(fn: Callable[[], None], settings) -> Callable[[], None]:
    def call():
        with switched(settings):
            fn()
    return call


COMPONENT_WORKS = ['mmcv update', 'mmdet Exp update', 'mmengine EMA update', 'mmcv swap',
                   'mmengine swap']


def measure_components(model_name: str, repeat: int, works: List[str]) -> dict:
    """``{work: {variant: median ms}}``: 'all on' and '<component> off' for each component."""
    torch.manual_seed(0)
    rows = {}
    for work in works:
        calls = {}
        for label, settings in [('all on', [])] + [(f'{c} off', s) for c, s in COMPONENTS.items()]:
            model = MODELS[model_name]('cpu')
            with warnings.catch_warnings(), switched(settings):
                warnings.simplefilter('ignore')
                fn = make_work(work, compat_classes(), model)
            calls[label] = within(with_fast(fn, True), settings)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            rows[work] = time_round_robin(calls, repeat, 'cpu')
        del calls
    return dict(model=model_name, rows=rows)


def report_components(res: dict, meta: dict) -> str:
    names = list(COMPONENTS)
    lines = [f"### {res['model']}: compat fast, each component off alone (off / all on; > 1: it gains)",
             f"(threads {meta['threads']}, {meta['load']}, load average {res.get('loadavg', 'n/a')})", '',
             '| work | all on ms | ' + ' | '.join(names) + ' |',
             '|---|---|' + '---|' * len(names)]
    for work, row in res['rows'].items():
        on = row['all on']
        lines.append(f'| {work} | {on:.3f} | ' + ' | '.join(
            fmt_ratio(row[f'{c} off'], on) for c in names) + ' |')
    lines.append('')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- memory

def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _peak_rss_bytes() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmHWM in /proc/self/status')


def memory_child(model_name: str, work: str, impl: str, device: str) -> dict:
    """In a fresh process: bytes of EMA state and peak transient bytes of 3 updates + 2 swaps."""
    up = load_upstream() if impl == 'upstream' else None
    if impl == 'upstream' and up is None:
        return {}
    classes = upstream_classes(up) if impl == 'upstream' else compat_classes()
    kernels.set_fast_path(impl == 'compat fast')
    model = MODELS[model_name](device)
    tracked = sum(p.numel() * p.element_size() for p in model.parameters())
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fn = make_work(work, classes, model)
        if device == 'cuda':
            torch.cuda.synchronize()
            state = torch.cuda.memory_allocated() - base
            torch.cuda.reset_peak_memory_stats()
            steady = torch.cuda.memory_allocated()
        else:
            state = _rss_bytes() - base
            _reset_peak_rss()
            steady = _rss_bytes()
        for _ in range(3):
            fn()
        if device == 'cuda':
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - steady
        else:
            peak = _peak_rss_bytes() - steady
    return dict(state_bytes=state, transient_bytes=max(peak, 0), param_bytes=tracked)


MEMORY_WORKS = {'mmcv update': 'mmcv update', 'mmcv swap': 'mmcv swap',
                'mmengine EMA update': 'mmengine EMA update', 'mmengine swap': 'mmengine swap'}


def measure_memory(model_name: str, device: str, impls: List[str]) -> dict:
    out = {}
    for work in MEMORY_WORKS:
        for impl in impls:
            cmd = [sys.executable, os.path.abspath(__file__), '--memory-child',
                   json.dumps([model_name, work, impl, device])]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            try:
                out[f'{work}|{impl}'] = json.loads(res.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                out[f'{work}|{impl}'] = {'error': res.stderr[-500:]}
    return out


# ----------------------------------------------------------------------------- report

def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return 'n/a'
    return f'{a / b:.2f}x'


def report(results: List[dict], meta: dict) -> str:
    lines = [f"machine: {meta['machine']}; torch {meta['torch']}; device {meta['device']}; "
             f"threads {meta['threads']}; {meta['load']}; median of {meta['repeat']}; {meta['date']}", '']
    for res in results:
        lines.append(f"### {res['model']} ({res['tensors']} tensors, {res['params']:,} floats; "
                     f"load average {res.get('loadavg', 'n/a')})")
        lines.append('')
        lines.append(f"floor (one flat in-place add_ over as many elements, 2 reads + 1 write), "
                     f"alone: {res['floor_ms']:.3f} ms; in each row it runs in the same round-robin")
        if 'gather_ms' in res:
            lines.append('')
            lines.append(f"gather (one `cat` of every parameter into a flat buffer: reading the "
                         f"sources alone), alone: {res['gather_ms']:.3f} ms = "
                         f"{fmt_ratio(res['gather_ms'], res['floor_ms'])} the floor")
        lines.append('')
        lines.append('| work | upstream ms | compat fast ms | compat faithful ms | floor ms | '
                     'upstream/compat fast | compat fast/floor |')
        lines.append('|---|---|---|---|---|---|---|')
        for work, row in res['rows'].items():
            upv = row.get('upstream')
            fast = row['compat fast']
            floor = row.get('floor', res['floor_ms'])
            lines.append(f"| {work} | {'n/a' if upv is None else f'{upv:.3f}'} | {fast:.3f} | "
                         f"{row['compat faithful']:.3f} | {floor:.3f} | {fmt_ratio(upv, fast)} | "
                         f"{fmt_ratio(fast, floor)} |")
        mem = res.get('memory')
        if mem:
            lines.append('')
            lines.append('| memory (MiB) | impl | EMA state | peak transient (3 calls) | tracked params |')
            lines.append('|---|---|---|---|---|')
            for key, m in mem.items():
                work, impl = key.split('|')
                if 'state_bytes' in m:
                    lines.append(f"| {work} | {impl} | {m['state_bytes'] / 2**20:.1f} | "
                                 f"{m['transient_bytes'] / 2**20:.1f} | {m['param_bytes'] / 2**20:.1f} |")
        lines.append('')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeat', type=int, default=30, help='timed calls per variant (median)')
    parser.add_argument('--models', default=','.join(MODELS), help=f'comma list of {list(MODELS)}')
    parser.add_argument('--works', default=','.join(WORKS), help='comma list of ' + ', '.join(WORKS))
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--memory', action='store_true', help='also measure extra memory (subprocesses)')
    parser.add_argument('--json', default=None, help='write the raw results here')
    parser.add_argument('--load', type=int, default=0, metavar='N',
                        help='start N busy processes for the run (the loaded rows)')
    parser.add_argument('--components', action='store_true',
                        help="the fast path's component on/off table instead (compat fast only)")
    parser.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(*json.loads(args.memory_child))))
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device available')
    up = load_upstream()
    works = [w.strip() for w in args.works.split(',') if w.strip()]
    unknown = [w for w in works if w not in WORKS]
    if unknown:
        parser.error(f'unknown works {unknown}; known: {WORKS}')
    dev_name = torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or 'cpu'
    meta = dict(machine=f'{platform.node()} {dev_name} ({os.cpu_count()} cpus)', torch=torch.__version__,
                device=args.device, threads=torch.get_num_threads(), repeat=args.repeat,
                date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                upstream=up is not None,
                load=f'{args.load} busy processes' if args.load else 'no added load')
    if args.load:
        start_load(args.load)
    if args.components:
        out = []
        cworks = [w for w in works if w in COMPONENT_WORKS] if args.works != ','.join(WORKS) \
            else COMPONENT_WORKS
        for name in [m.strip() for m in args.models.split(',') if m.strip()]:
            before = loadavg()
            res = measure_components(name, args.repeat, cworks)
            res['loadavg'] = f'{before} -> {loadavg()}'
            out.append(res)
            print(report_components(res, meta), flush=True)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(dict(meta=meta, components=out), f, indent=1)
        stop_load()
        return 0
    results = []
    for name in [m.strip() for m in args.models.split(',') if m.strip()]:
        if name not in MODELS:
            parser.error(f'unknown model {name!r}; known: {list(MODELS)}')
        before = loadavg()
        res = measure_model(name, args.device, args.repeat, works, up)
        res['loadavg'] = f'{before} -> {loadavg()}'
        if args.memory:
            impls = (['upstream'] if up is not None else []) + ['compat fast', 'compat faithful']
            res['memory'] = measure_memory(name, args.device, impls)
        results.append(res)
        print(report([res], meta), flush=True)
    if up is None:
        print('(upstream not importable here: run with .tox/oracle/bin/python for the upstream column)')
    if args.json:
        with open(args.json + '.tmp', 'w') as f:
            json.dump(dict(meta=meta, results=results), f, indent=1)
        os.replace(args.json + '.tmp', args.json)
    stop_load()
    return 0


if __name__ == '__main__':
    sys.exit(main())
