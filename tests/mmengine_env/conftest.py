"""Everything under tests/mmengine_env/ needs mmengine 0.10.7 WITHOUT mmcv 1.x (``tox -e mmengine``):
marked ``mmengine_env``, so the default and oracle suites leave it out. Collected elsewhere (a
plain ``pytest`` in a venv without mmengine) the tests skip; in an env with mmcv 1.x
``test_this_environment_has_no_mmcv_1x`` fails instead, so a wrong env cannot pass quietly."""
import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason='needs mmengine 0.10.7 without mmcv 1.x (run: tox -e mmengine)')
    has_mmengine = importlib.util.find_spec('mmengine') is not None
    for item in items:
        if '/tests/mmengine_env/' in str(item.fspath).replace('\\', '/'):
            item.add_marker(pytest.mark.mmengine_env)
            if not has_mmengine:
                item.add_marker(skip)
