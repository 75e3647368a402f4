"""Live differential suite, runner level: compat hooks inside the REAL runners against the real
upstream hooks inside the same real runners (issue 3 part 2, issue 5 acceptance 1).

* the real mmcv 1.6 ``EpochBasedRunner`` / ``IterBasedRunner`` with the hooks named in
  ``custom_hooks`` (compat's via ``compat_ema.integrations.mmcv``: ``CompatEMAHook``,
  ``CompatBaseEMAHook``, ``CompatExpMomentumEMAHook``, ``CompatLinearMomentumEMAHook``)
  against mmcv's ``EMAHook`` and mmdet 2.28's hooks;
* the real mmengine 0.10.7 ``Runner`` with epoch- and iter-based loops, ``CompatEMAHook``
  (via ``compat_ema.integrations.mmengine_plugin``, averaged models from compat_ema) against
  mmengine's ``EMAHook``.

Every saved checkpoint file is compared key by key, tensors bitwise (only the timestamps, the
experiment name and mmengine's message hub, which holds timings, are skipped), then the final
model, the EMA state and what validation/test evaluated. Seeded random models and configs
(``COMPAT_EMA_RUNNER_CASES`` per runner family), plus named scenarios for the rows of
docs/runner-behaviour.md:
priority 49 vs NORMAL, every resume path, update_buffers, begin_iter/begin_epoch, val/test swaps.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from runner_kit import (ENGINE_SKIP, MMCV_SKIP, compare_work_dirs, diff, ema_hook_of, load,
                        make_batches, make_weights, rand_choice, real_runners, run_engine,
                        run_mmcv)

N_CASES = int(os.environ.get('COMPAT_EMA_RUNNER_CASES', '20'))

# (real name in mmcv HOOKS, compat name in mmcv HOOKS, argument names)
MMCV_KINDS = {
    'mmcv': ('EMAHook', 'CompatEMAHook', ('momentum', 'interval', 'warm_up')),
    'base': ('UpstreamBaseEMAHook', 'CompatBaseEMAHook', ('momentum', 'interval', 'skip_buffers')),
    'exp': ('ExpMomentumEMAHook', 'CompatExpMomentumEMAHook',
            ('momentum', 'interval', 'skip_buffers', 'total_iter')),
    'linear': ('LinearMomentumEMAHook', 'CompatLinearMomentumEMAHook',
               ('momentum', 'interval', 'skip_buffers', 'warm_up')),
}


def _mmcv_cfgs(kind, args, priority):
    real, compat, names = MMCV_KINDS[kind]
    kw = {k: v for k, v in args.items() if k in names}
    return dict(type=real, priority=priority, **kw), dict(type=compat, priority=priority, **kw)


def _assert_no_diff(diffs, what):
    assert not diffs, f'{what}: compat differs from upstream:\n' + '\n'.join(diffs[:20])


def _mmcv_pair(tmp_path: Path, tag: str, kind: str, args: dict, priority, **run_kw):
    """Run real and compat in the same real mmcv runner type; compare everything."""
    real_cfg, compat_cfg = _mmcv_cfgs(kind, args, priority)
    dirs, runners = {}, {}
    for side, cfg in (('real', real_cfg), ('compat', compat_cfg)):
        dirs[side] = tmp_path / f'{tag}_{side}'
        kw = dict(run_kw)
        if 'resume_from' in args:  # the hook-level resume_from points into each side's own dir
            cfg = dict(cfg, resume_from=str(tmp_path / f'{args["resume_from_dir"]}_{side}' /
                                            args['resume_from']))
        if kw.get('resume') is not None:
            kw['resume'] = str(tmp_path / f'{kw["resume"][0]}_{side}' / kw['resume'][1])
        runners[side] = run_mmcv(dirs[side], hook_cfgs=[cfg], **kw)
    _assert_no_diff(compare_work_dirs(dirs['real'], dirs['compat'], MMCV_SKIP), f'{tag} checkpoints')
    real_m, compat_m = runners['real'].model, runners['compat'].model
    real_m, compat_m = getattr(real_m, 'module', real_m), getattr(compat_m, 'module', compat_m)
    _assert_no_diff(diff(real_m.state_dict(), compat_m.state_dict(), 'final model'), tag)
    _assert_no_diff(diff(real_m.val_outputs, compat_m.val_outputs, 'val outputs'), tag)
    assert [type(h).__name__ for h in runners['real'].hooks] == \
        [type(h).__name__ for h in runners['compat'].hooks]
    return runners, dirs


def _random_mmcv_case(seed: int):
    rng = random.Random(seed)
    kind = rand_choice(rng, sorted(MMCV_KINDS))
    args = dict(momentum=rand_choice(rng, [0.0001, 0.002, 0.1, 0.5, 0.9]),
                interval=rand_choice(rng, [1, 1, 2, 3]),
                warm_up=rand_choice(rng, [1, 3, 100]),
                skip_buffers=rng.random() < 0.5,
                total_iter=rand_choice(rng, [2, 7, 2000]))
    by_epoch = rng.random() < 0.6
    run_kw = dict(weights=None, width=rand_choice(rng, [2, 3, 5]), bn=rng.random() < 0.8,
                  by_epoch=by_epoch, max_epochs=rng.randint(1, 3), max_iters=rng.randint(2, 7))
    n = rng.randint(2, 4)
    run_kw['batches'] = make_batches(n, seed)
    run_kw['weights'] = make_weights(run_kw['width'], run_kw['bn'], seed)
    if rng.random() < 0.5:
        run_kw['workflow'] = (('train', rng.randint(1, 2)), ('val', 1))
        run_kw['val_batches'] = make_batches(2, seed + 1)
    if not by_epoch:
        run_kw['ckpt_interval'] = rng.randint(1, 3)
    priority = rand_choice(rng, [49, 'NORMAL', 'LOWEST', 'HIGH'])
    return kind, args, priority, run_kw


@pytest.mark.parametrize('seed', range(N_CASES))
def test_mmcv_random_case(real_runners, tmp_path, seed):
    kind, args, priority, run_kw = _random_mmcv_case(seed)
    _mmcv_pair(tmp_path, f'case{seed}', kind, args, priority, **run_kw)


# --- named mmcv scenarios ---------------------------------------------------------------------
def _std(seed=3, width=3):
    return dict(weights=make_weights(width, True, seed), batches=make_batches(3, seed),
                width=width)


@pytest.mark.parametrize('kind', sorted(MMCV_KINDS))
def test_mmcv_priority_49_vs_normal(real_runners, tmp_path, kind):
    """docs/runner-behaviour.md#mmcv-emahook, #mmdet-checkpoint: at 49 epoch_N.pth holds EMA in
    the params, at NORMAL raw."""
    args = dict(momentum=0.3, interval=1, warm_up=2, skip_buffers=False, total_iter=5)
    saved = {}
    for priority in (49, 'NORMAL'):
        _, dirs = _mmcv_pair(tmp_path, f'p{priority}', kind, args, priority, max_epochs=2,
                             workflow=(('train', 1), ('val', 1)),
                             val_batches=make_batches(2, 9), **_std())
        saved[priority] = load(dirs['real'] / 'epoch_2.pth')['state_dict']
    # the two layouts are each other's swap (upstream's fact, which compat reproduced above)
    assert torch.equal(saved[49]['fc1.weight'], saved['NORMAL']['ema_fc1_weight'])
    assert torch.equal(saved['NORMAL']['fc1.weight'], saved[49]['ema_fc1_weight'])
    assert not torch.equal(saved[49]['fc1.weight'], saved['NORMAL']['fc1.weight'])


@pytest.mark.parametrize('kind,priority,path', [
    ('mmcv', 49, 'hook'), ('mmcv', 'NORMAL', 'hook'), ('mmcv', 49, 'runner'),
    ('exp', 49, 'hook'), ('exp', 'NORMAL', 'hook'), ('exp', 49, 'runner'),
    ('exp', 'NORMAL', 'runner'), ('base', 49, 'hook'),
])
def test_mmcv_resume_paths(real_runners, tmp_path, kind, priority, path):
    """docs/runner-behaviour.md#resume-matrix: hook-level resume_from vs runner.resume() before
    run, both priorities."""
    args = dict(momentum=0.25, interval=2, warm_up=3, skip_buffers=False, total_iter=4)
    std = _std(5)
    _mmcv_pair(tmp_path, 'first', kind, args, priority, max_epochs=1, **std)
    if path == 'hook':
        args2 = dict(args, resume_from='epoch_1.pth', resume_from_dir='first')
        _mmcv_pair(tmp_path, 'second', kind, args2, priority, max_epochs=2, **std)
    else:
        _mmcv_pair(tmp_path, 'second', kind, args, priority, max_epochs=2,
                   resume=('first', 'epoch_1.pth'), **std)


@pytest.mark.parametrize('kind', ['mmcv', 'exp'])
def test_mmcv_iter_runner_resume(real_runners, tmp_path, kind):
    """IterBasedRunner: no swap ever; runner.resume(iter_k.pth) continues the iteration count."""
    args = dict(momentum=0.2, interval=2, warm_up=2, skip_buffers=False, total_iter=3)
    std = _std(6)
    _mmcv_pair(tmp_path, 'a', kind, args, 49, by_epoch=False, max_iters=4, ckpt_interval=2, **std)
    _mmcv_pair(tmp_path, 'b', kind, args, 49, by_epoch=False, max_iters=7, ckpt_interval=2,
               resume=('a', 'iter_4.pth'), workflow=(('train', 2), ('val', 1)),
               val_batches=make_batches(2, 1), **std)


def test_mmcv_hook_instance_and_as_mmcv_hook(real_runners, tmp_path):
    """A compat hook instance converted in place is accepted by the real runner, same results."""
    import mmcv.runner as mr
    from compat_ema.integrations.mmcv import EMAHook, as_mmcv_hook
    from compat_ema.mmdet import ExpMomentumEMAHook as PlainExp
    hook = as_mmcv_hook(PlainExp(momentum=0.1))
    assert isinstance(hook, mr.Hook) and isinstance(hook, PlainExp)
    assert isinstance(EMAHook(), mr.Hook)
    std = _std(8)
    real = run_mmcv(tmp_path / 'real', hook_cfgs=[dict(type='ExpMomentumEMAHook', momentum=0.1)],
                    **std)
    compat = run_mmcv(tmp_path / 'compat', hook_cfgs=[hook], **std)
    _assert_no_diff(compare_work_dirs(tmp_path / 'real', tmp_path / 'compat', MMCV_SKIP), 'instance')
    _assert_no_diff(diff(real.model.state_dict(), compat.model.state_dict()), 'instance model')


# --- the real mmengine Runner -----------------------------------------------------------------
def _engine_pair(tmp_path: Path, tag: str, hook_kw: dict, **run_kw):
    """Run mmengine's EMAHook and compat's CompatEMAHook in the real Runner; compare everything."""
    runners, dirs = {}, {}
    for side, name in (('real', 'EMAHook'), ('compat', 'CompatEMAHook')):
        dirs[side] = tmp_path / f'{tag}_{side}'
        kw = dict(run_kw)
        for key in ('load_from', 'manual_resume'):
            if isinstance(kw.get(key), tuple):
                kw[key] = str(tmp_path / f'{kw[key][0]}_{side}' / kw[key][1])
        if kw.pop('same_dir_as', None):
            dirs[side] = tmp_path / f'{run_kw["same_dir_as"]}_{side}'
        runners[side] = run_engine(dirs[side], custom_hooks=[dict(type=name, **hook_kw)], **kw)
    _assert_no_diff(compare_work_dirs(dirs['real'], dirs['compat'], ENGINE_SKIP),
                    f'{tag} checkpoints')
    real, compat = runners['real'], runners['compat']
    _assert_no_diff(diff(real.model.state_dict(), compat.model.state_dict(), 'final model'), tag)
    _assert_no_diff(diff(ema_hook_of(real).ema_model.state_dict(),
                         ema_hook_of(compat).ema_model.state_dict(), 'ema model'), tag)
    _assert_no_diff(diff(real.metric.seen, compat.metric.seen, 'evaluated outputs'), tag)
    assert type(ema_hook_of(compat)).__module__ == 'compat_ema.integrations.mmengine_plugin'
    assert [type(h).__name__ for h in real.hooks] == [type(h).__name__ for h in compat.hooks]
    return runners, dirs


def _random_engine_case(seed: int):
    rng = random.Random(10_000 + seed)
    ema_type = rand_choice(rng, ['ExponentialMovingAverage', 'MomentumAnnealingEMA',
                                 'StochasticWeightAverage'])
    hook_kw = dict(ema_type=ema_type, update_buffers=rng.random() < 0.5,
                   interval=rand_choice(rng, [1, 1, 2, 3]),
                   priority=rand_choice(rng, [49, 'NORMAL', 'LOWEST']))
    if ema_type != 'StochasticWeightAverage':
        hook_kw['momentum'] = rand_choice(rng, [0.0002, 0.01, 0.3])
    if ema_type == 'MomentumAnnealingEMA':
        hook_kw['gamma'] = rand_choice(rng, [1, 5, 100])
    r = rng.random()
    if r < 0.2:
        hook_kw['begin_iter'] = rng.randint(1, 4)
    elif r < 0.35:
        hook_kw['begin_epoch'] = rng.randint(1, 2)
    width, bn = rand_choice(rng, [2, 3, 5]), rng.random() < 0.8
    by_epoch = 'begin_epoch' in hook_kw or rng.random() < 0.6
    run_kw = dict(weights=make_weights(width, bn, seed), batches=make_batches(rng.randint(2, 4), seed),
                  width=width, bn=bn, by_epoch=by_epoch, max_epochs=rng.randint(2, 3),
                  max_iters=rng.randint(4, 7), val_interval=rng.randint(1, 2))
    if rng.random() < 0.6:
        run_kw['val_batches'] = make_batches(2, seed + 1)
    if not by_epoch:
        run_kw['ckpt'] = dict(type='CheckpointHook', interval=rng.randint(1, 3), by_epoch=False)
    return hook_kw, run_kw


@pytest.mark.parametrize('seed', range(N_CASES))
def test_engine_random_case(real_runners, tmp_path, seed):
    hook_kw, run_kw = _random_engine_case(seed)
    _engine_pair(tmp_path, f'case{seed}', hook_kw, **run_kw)


_EMA = dict(ema_type='ExponentialMovingAverage', momentum=0.3)


@pytest.mark.parametrize('update_buffers', [False, True])
@pytest.mark.parametrize('by_epoch', [True, False])
def test_engine_update_buffers_and_val_swaps(real_runners, tmp_path, update_buffers, by_epoch):
    """docs/runner-behaviour.md#mmengine-emahook: val swaps (params, plus buffers with
    update_buffers); checkpoints state_dict = EMA."""
    runners, dirs = _engine_pair(
        tmp_path, 'ub', dict(_EMA, update_buffers=update_buffers), by_epoch=by_epoch,
        max_epochs=2, max_iters=5, val_interval=2, val_batches=make_batches(2, 4), **_std(11))
    hook = ema_hook_of(runners['compat'])
    # after train() the model holds the raw weights (no train-epoch swap in mmengine)
    assert not torch.equal(runners['compat'].model.fc1.weight, hook.ema_model.module.fc1.weight)


@pytest.mark.parametrize('begin', [dict(begin_iter=3), dict(begin_iter=1), dict(begin_epoch=2),
                                   dict(begin_epoch=1)])
def test_engine_begin_iter_epoch(real_runners, tmp_path, begin):
    by_epoch = 'begin_epoch' in begin
    _engine_pair(tmp_path, 'begin', dict(_EMA, **begin), by_epoch=by_epoch, max_epochs=3,
                 max_iters=6, **_std(12))


@pytest.mark.parametrize('by_epoch', [True, False])
@pytest.mark.parametrize('path', ['auto', 'load_from+resume', 'load_from', 'manual'])
def test_engine_resume_paths(real_runners, tmp_path, by_epoch, path):
    """docs/runner-behaviour.md#mmengine-resume/#mmengine-emahook: resume=True (auto and with
    load_from), load_from only, runner.resume() by hand."""
    std = _std(13)
    hook_kw = dict(ema_type='MomentumAnnealingEMA', momentum=0.01, gamma=4, interval=2)
    ckpt = None if by_epoch else dict(type='CheckpointHook', interval=2, by_epoch=False)
    _engine_pair(tmp_path, 'first', hook_kw, by_epoch=by_epoch, max_epochs=1, max_iters=2,
                 ckpt=ckpt, **std)
    name = 'epoch_1.pth' if by_epoch else 'iter_2.pth'
    kw = dict(by_epoch=by_epoch, max_epochs=2, max_iters=5, ckpt=ckpt,
              val_batches=make_batches(2, 3), **std)
    if path == 'auto':
        kw.update(resume=True, same_dir_as='first')
    elif path == 'load_from+resume':
        kw.update(resume=True, load_from=('first', name))
    elif path == 'load_from':
        kw.update(load_from=('first', name))
    else:
        kw.update(manual_resume=('first', name))
    _engine_pair(tmp_path, 'second', hook_kw, **kw)


def test_engine_train_then_test_and_standalone_test(real_runners, tmp_path):
    """docs/runner-behaviour.md#mmengine-emahook gotchas: test() after train() rebuilds the EMA
    (evaluates raw); a fresh test() with
    load_from of an EMA checkpoint evaluates the EMA weights."""
    std = _std(14)
    runners, _ = _engine_pair(tmp_path, 'tt', _EMA, max_epochs=2, test_batches=make_batches(2, 5),
                              then_test=True, **std)
    model = runners['compat'].model
    assert torch.equal(ema_hook_of(runners['compat']).ema_model.module.fc1.weight,
                       model.fc1.weight)  # rebuilt from the raw weights
    _engine_pair(tmp_path, 'standalone', _EMA, train=False, test_batches=make_batches(2, 5),
                 load_from=('tt', 'epoch_2.pth'), **std)


@pytest.mark.parametrize('priority', [49, 'NORMAL', 'LOWEST'])
@pytest.mark.parametrize('by_epoch', [True, False])
def test_engine_priorities(real_runners, tmp_path, priority, by_epoch):
    """docs/runner-behaviour.md#mmengine-hooks: LOWEST runs after CheckpointHook (VERY_LOW): the
    checkpoint is written before that
    iteration's EMA update; 49 and NORMAL run before it."""
    ckpt = None if by_epoch else dict(type='CheckpointHook', interval=2, by_epoch=False)
    _, dirs = _engine_pair(tmp_path, 'prio', dict(_EMA, priority=priority), by_epoch=by_epoch,
                           max_epochs=2, max_iters=4, ckpt=ckpt, **_std(15))
    name = 'epoch_2.pth' if by_epoch else 'iter_4.pth'
    steps = int(load(dirs['real'] / name)['ema_state_dict']['steps'])
    assert steps == (6 if by_epoch else 4) - (1 if priority == 'LOWEST' and not by_epoch else 0)


def test_engine_resume_without_ema_state_dict(real_runners, tmp_path):
    """docs/runner-behaviour.md#mmengine-emahook: resuming a checkpoint written without EMAHook
    warns and seeds the EMA from
    state_dict, steps restarting at 0."""
    std = _std(16)
    for side in ('real', 'compat'):
        run_engine(tmp_path / f'plain_{side}', custom_hooks=[], max_epochs=1, **std)
    runners, _ = _engine_pair(tmp_path, 'resumed', dict(_EMA, interval=2), max_epochs=2,
                              resume=True, load_from=('plain', 'epoch_1.pth'), **std)
    assert int(ema_hook_of(runners['compat']).ema_model.steps) == 3  # 0 at resume, 3 updates


@pytest.mark.parametrize('kind', ['mmcv', 'exp'])
def test_mmcv_wrapped_model(real_runners, tmp_path, kind):
    """The model inside mmcv's MMDataParallel: the hooks unwrap it as upstream's do."""
    args = dict(momentum=0.3, interval=1, warm_up=2, skip_buffers=False, total_iter=5)
    runners, _ = _mmcv_pair(tmp_path, 'wrapped', kind, args, 49, wrap=True,
                            workflow=(('train', 1), ('val', 1)), val_batches=make_batches(2, 2),
                            **_std(17))
    assert any(k.startswith('ema_') for k in runners['compat'].model.module.state_dict())
