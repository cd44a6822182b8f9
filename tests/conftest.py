"""Shared fixtures.

``impl`` runs a test once per implementation of the codec: the Cython
extension and its pure-Python twin (fastws._impl.load). A test that touches a
Cython module that is not built is skipped, unless FASTWS_REQUIRE_EXTENSION=1
(as in CI), in which case it fails.
"""
from __future__ import annotations

import os

import pytest

from fastws import _impl

IMPLS = ("cython", "python")


class _Codec:
    """Wraps a lazy codec: a missing extension module means skip (or fail)."""

    def __init__(self, codec):
        self._codec = codec
        self.name = codec.name

    def __getattr__(self, attr):
        try:
            return getattr(self._codec, attr)
        except ImportError as exc:
            if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
                raise
            pytest.skip(f"{self.name} implementation not available: {exc}")


@pytest.fixture(params=IMPLS)
def impl(request):
    """The codec of one implementation (attributes as in fastws._impl._NAMES)."""
    return _Codec(_impl.load(request.param))


@pytest.fixture
def both_impls():
    """(cython, python) codecs, for differential tests."""
    return _Codec(_impl.load("cython")), _Codec(_impl.load("python"))
