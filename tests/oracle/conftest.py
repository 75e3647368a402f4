"""Everything under tests/oracle/ runs against the real upstream: marked ``oracle``."""
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if '/tests/oracle/' in str(item.fspath).replace('\\', '/'):
            item.add_marker(pytest.mark.oracle)
