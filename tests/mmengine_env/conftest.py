"""Everything under tests/mmengine_env/ needs mmengine 0.10.7 WITHOUT mmcv 1.x (``tox -e mmengine``):
marked ``mmengine_env``, so the default and oracle suites leave it out."""
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if '/tests/mmengine_env/' in str(item.fspath).replace('\\', '/'):
            item.add_marker(pytest.mark.mmengine_env)
