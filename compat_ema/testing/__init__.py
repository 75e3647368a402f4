"""Test EMA setups without OpenMMLab: fake runners that call hooks as the real ones do.

Public API (see each module's docstring for the upstream behaviour it carries):

* :mod:`compat_ema.testing.mmcv_runner`: ``EpochBasedRunner``, ``IterBasedRunner``
  (mmcv 1.6), ``OptimizerHook``, ``CheckpointHook``, ``IterTimerHook``, ``MMDataParallel``;
* :mod:`compat_ema.testing.mmengine_runner`: ``Runner`` (mmengine 0.10.7) with
  its loops and default hooks;
* :mod:`compat_ema.testing.trace`: ``Trace``, ``TraceEntry``, ``MMCVRecorder``,
  ``MMEngineRecorder``, ``hexf``, ``tensor_digest``;
* :mod:`compat_ema.testing.scenario`: ``run_scenario``, ``ScenarioResult``,
  ``run_spec``, ``summarize``;
* :mod:`compat_ema.testing.equivalence`: ``check_resume``, ``resume_matrix``;
* :mod:`compat_ema.testing.models`: ``TinyModel``, ``make_loader``;
* :mod:`compat_ema.testing.golden`, :mod:`compat_ema.testing.portable`,
  :mod:`compat_ema.testing.replay`, :mod:`compat_ema.testing.environment`,
  :mod:`compat_ema.testing.tolerance`: golden files, checks per kernel class, recorded EMA
  runs (``EMAReplay``), environment fingerprints (docs/golden-tests.md).
* :mod:`compat_ema.testing.gan`: ``TinyRestorer`` (``generator`` + ``generator_ema``, for the
  mmedit/mmagic hooks).
"""
import importlib
from typing import Any, Dict

#: public name -> submodule that defines it; imported on first access (PEP 562), so loading
#: the pytest plugin (``compat_ema.testing.pytest_plugin``) does not import the runner fakes.
_EXPORTS: Dict[str, str] = {
    **dict.fromkeys(['CheckpointHook', 'EMASetupWarning', 'EpochBasedRunner', 'IterBasedRunner',
                     'MMDataParallel', 'OptimizerHook'], 'mmcv_runner'),
    'Runner': 'mmengine_runner',
    **dict.fromkeys(['ListLoader', 'TinyModel', 'make_loader', 'make_samples'], 'models'),
    'TinyRestorer': 'gan',
    **dict.fromkeys(['ResumeReport', 'check_resume', 'expected_difference', 'resume_matrix'],
                    'equivalence'),
    **dict.fromkeys(['ScenarioResult', 'run_scenario', 'run_spec', 'single_thread', 'summarize'],
                    'scenario'),
    **dict.fromkeys(['MMCVRecorder', 'MMEngineRecorder', 'Trace', 'TraceEntry', 'hexf',
                     'tensor_digest'], 'trace'),
    **dict.fromkeys(['GoldenFileError', 'GoldenMismatch', 'Trajectory', 'assert_matches',
                     'assert_matches_golden', 'compare_state_dicts', 'compare_trajectories',
                     'load_golden', 'save_golden', 'tolerance_for'], 'golden'),
    'check_golden': 'portable',
    'EMAReplay': 'replay',
    **dict.fromkeys(['fingerprint', 'kernel_class'], 'environment'),
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (the lazily exported names)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{module}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
