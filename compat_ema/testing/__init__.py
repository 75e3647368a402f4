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
* :mod:`compat_ema.testing.models`: ``TinyModel``, ``make_loader``.
"""
from .mmcv_runner import (CheckpointHook, EMASetupWarning, EpochBasedRunner, IterBasedRunner,
                          MMDataParallel, OptimizerHook)
from .mmengine_runner import Runner
from .models import ListLoader, TinyModel, make_loader, make_samples
from .equivalence import ResumeReport, check_resume, expected_difference, resume_matrix
from .scenario import ScenarioResult, run_scenario, run_spec, single_thread, summarize
from .trace import MMCVRecorder, MMEngineRecorder, Trace, TraceEntry, hexf, tensor_digest

__all__ = [
    # harness (compat_ema.testing.*; owned by the harness issue)
    'EpochBasedRunner', 'IterBasedRunner', 'OptimizerHook', 'CheckpointHook', 'MMDataParallel',
    'EMASetupWarning', 'Runner', 'TinyModel', 'ListLoader', 'make_loader', 'make_samples',
    'ScenarioResult', 'run_scenario', 'run_spec', 'single_thread', 'summarize', 'Trace', 'TraceEntry',
    'ResumeReport', 'check_resume', 'expected_difference', 'resume_matrix',
    'MMCVRecorder', 'MMEngineRecorder', 'hexf', 'tensor_digest',
    # golden.py / pytest_plugin.py names are exported below by their owner
]

# golden files (compat_ema.testing.golden; the ema_golden fixture is in pytest_plugin)
from .golden import (GoldenFileError, GoldenMismatch, Trajectory, assert_matches,  # noqa: E402
                     assert_matches_golden, compare_state_dicts, compare_trajectories,
                     load_golden, save_golden, tolerance_for)

__all__ += ['Trajectory', 'save_golden', 'load_golden', 'compare_state_dicts',
            'compare_trajectories', 'assert_matches', 'assert_matches_golden', 'tolerance_for',
            'GoldenFileError', 'GoldenMismatch']
