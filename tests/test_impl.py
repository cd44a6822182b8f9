"""fastws picks the Cython extension or the pure-Python twins in one place."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastws
from fastws import _impl


def _implementation(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWS_")}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", "import fastws; print(fastws.IMPLEMENTATION, fastws.FALLBACK_REASON)"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split(" ", 1)


def test_extension_in_use_when_required():
    # CI sets FASTWS_REQUIRE_EXTENSION=1: a run on the twins by accident fails here.
    if os.environ.get("FASTWS_REQUIRE_EXTENSION") != "1":
        pytest.skip("FASTWS_REQUIRE_EXTENSION is not set")
    if os.environ.get("FASTWS_PURE_PYTHON") == "1":
        assert fastws.IMPLEMENTATION == "python"
    else:
        assert fastws.IMPLEMENTATION == "cython"
        assert type(_impl.codec.FrameParser).__module__ != "fastws._py.frames"
        assert _impl.codec.FrameParser.__module__ == "fastws_ext.frames"


def test_env_var_forces_the_twins():
    name, reason = _implementation({"FASTWS_PURE_PYTHON": "1"})
    assert name == "python" and "FASTWS_PURE_PYTHON" in reason


def test_default_is_the_extension_when_built():
    try:
        _impl.load("cython").require()
    except ImportError:
        pytest.skip("extension not built")
    name, reason = _implementation({})
    assert name == "cython" and reason.strip() == "None"


def test_both_codecs_have_the_same_surface():
    py = _impl.load("python").require()
    try:
        cy = _impl.load("cython").require()
    except ImportError:
        pytest.skip("extension not built")
    for attrs in _impl._NAMES.values():
        for attr in attrs:
            a, b = getattr(py, attr), getattr(cy, attr)
            if isinstance(a, int):
                assert a == b, attr


def test_unknown_implementation():
    with pytest.raises(ValueError):
        _impl.load("rust")
