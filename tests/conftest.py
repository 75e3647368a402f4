"""Shared test setup: the ``oracle`` and ``gpu`` markers skip cleanly where unavailable."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'oracle'))

if not hasattr(torch.testing, 'assert_close'):   # torch 1.8 (assert_close arrived in 1.9)
    def _assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=False,
                      check_dtype=True, msg=None):
        """The part of ``torch.testing.assert_close`` the tests use, on torch 1.8."""
        if check_dtype:
            assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype, msg)
        torch.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                                      equal_nan=equal_nan, msg=msg or '')

    torch.testing.assert_close = _assert_close


def _oracle_available() -> bool:
    try:
        import upstream
    except ImportError:
        return False
    return upstream.available()


ORACLE = _oracle_available()


def pytest_collection_modifyitems(config, items):
    skip_oracle = pytest.mark.skip(reason='needs the real mmcv 1.6.0/mmdet 2.28.2/mmengine 0.10.7 '
                                          '(run: tox -e oracle)')
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'oracle' in item.keywords and not ORACLE:
            item.add_marker(skip_oracle)
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def threads(request):
    """``torch.set_num_threads(request.param)`` for the test (parametrize with ``indirect=True``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
