"""fastws picks the Cython extension or the pure-Python twins in one place."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastws
from fastws import codec as _codec_mod


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
        assert _codec_mod.FrameParser.__module__ == "fastws_ext.frames"


def test_env_var_forces_the_twins():
    name, reason = _implementation({"FASTWS_PURE_PYTHON": "1"})
    assert name == "python" and "FASTWS_PURE_PYTHON" in reason


def test_default_is_the_extension_when_built():
    try:
        _codec_mod.load("cython")
    except ImportError:
        pytest.skip("extension not built")
    name, reason = _implementation({})
    assert name == "cython" and reason.strip() == "None"


def test_both_codecs_have_the_same_surface():
    py = _codec_mod.load("python")
    try:
        cy = _codec_mod.load("cython")
    except ImportError:
        pytest.skip("extension not built")
    for attrs in _codec_mod.NAMES.values():
        for attr in attrs:
            a, b = getattr(py, attr), getattr(cy, attr)
            assert callable(a) == callable(b), attr
            if isinstance(a, (int, bytes)):
                assert a == b, attr


def test_the_chooser_binds_every_name():
    """fastws.codec's module attributes are the chosen implementation's."""
    chosen = _codec_mod.load(_codec_mod.IMPLEMENTATION)
    for attrs in _codec_mod.NAMES.values():
        for attr in attrs:
            assert getattr(_codec_mod, attr) is getattr(chosen, attr), attr
            assert attr in _codec_mod.__all__, attr


def test_unknown_implementation():
    with pytest.raises(ValueError):
        _codec_mod.load("rust")


def test_constants_pxd_is_written_from_constants_py():
    """fastws/constants.py is the one definition: setup.py writes every integer
    of its __all__ into fastws_ext/constants.pxd, which the extension cimports."""
    import pathlib

    from fastws import constants

    root = pathlib.Path(__file__).resolve().parents[2]
    pxd = root / "fastws_ext" / "constants.pxd"
    if not pxd.exists():
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            pytest.fail("fastws_ext/constants.pxd missing: the extension was not built by setup.py")
        pytest.skip("extension not built here")
    written = {}
    for line in pxd.read_text().splitlines():
        if "=" in line and line.startswith("    "):
            name, value = (part.strip() for part in line.split("="))
            written[name] = int(value)
    expected = {name: getattr(constants, name) for name in constants.__all__
                if type(getattr(constants, name)) is int}
    assert written == expected


def test_the_fallback_warning_names_a_source_tree(tmp_path, monkeypatch):
    """Run from a checkout that was never built, `python -m fastws` imports the
    source tree: the warning says so and what to do, not "no compiler"."""
    import importlib.machinery
    import importlib.util

    ext = tmp_path / "fastws_ext"
    ext.mkdir()
    (ext / "__init__.py").write_text("")
    (ext / "mask.pyx").write_text("")
    spec = importlib.machinery.ModuleSpec("fastws_ext", None, origin=str(ext / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    text = _codec_mod._remedy()
    assert "source tree" in text and str(tmp_path) in text and "pip install -e ." in text
    (ext / "mask.pyx").unlink()  # an installed copy without the extension: the build is to blame
    text = _codec_mod._remedy()
    assert "not built when fastws was installed" in text
