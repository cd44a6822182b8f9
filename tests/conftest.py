"""Shared fixtures.

``impl`` runs a test once per implementation of the codec: the Cython
extension and its pure-Python twin (fastws._impl.load). When the extension is
not built, the "cython" runs are skipped, unless FASTWS_REQUIRE_EXTENSION=1,
in which case they fail.
"""
from __future__ import annotations

import os

import pytest

from fastws import _impl

IMPLS = ("cython", "python")


def _load(name):
    try:
        if name == "cython":
            return _impl.load(name).require()
        return _impl.load(name)
    except ImportError as exc:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise
        pytest.skip(f"{name} implementation not available: {exc}")


@pytest.fixture(params=IMPLS)
def impl(request):
    """A namespace with the codec of one implementation (see fastws._impl)."""
    return _load(request.param)


@pytest.fixture
def both_impls():
    """(cython, python) namespaces, for differential tests."""
    return _load("cython"), _load("python")
