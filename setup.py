"""Build script for fastws and its Cython extensions (fastws_ext).

`pip install .` compiles every ``fastws_ext/*.pyx`` with Cython. Build switches
(environment variables read at build time):

``FASTWS_REQUIRE_EXTENSION=1``
    a failed compile is an error (CI and production builds use this).
``FASTWS_PURE_PYTHON=1``
    do not build the extensions at all: a pure-Python install, on purpose.
``FASTWS_CYTHON_ANNOTATE=1``
    write Cython's HTML annotation next to each .pyx (the yellow lines).
``FASTWS_CYTHON_TRACE=1``
    compile with line tracing (for coverage/profiling of the extension; slow).

``fastws_ext/constants.pxd`` is written here from ``fastws/constants.py``
(the one definition of the states, opcodes and close codes) before Cython runs.

Without a compiler and without ``FASTWS_REQUIRE_EXTENSION``, the build prints a
clear warning and installs the pure-Python twins; ``fastws.IMPLEMENTATION``
then says ``"python"``.

The extension needs Python 3.10 (``am_send``), which is also the declared
``requires-python``: on an older Python the build stops with a clear message
(pip already refuses there; this covers ``python setup.py`` and forced installs).
"""
import ast
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MIN_PYTHON = (3, 10)  # keep equal to requires-python in pyproject.toml (tests/test_packaging.py)

REQUIRE = os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1"
PURE = os.environ.get("FASTWS_PURE_PYTHON") == "1"
ANNOTATE = os.environ.get("FASTWS_CYTHON_ANNOTATE") == "1"
TRACE = os.environ.get("FASTWS_CYTHON_TRACE") == "1"

# Every Cython directive in one place.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
    "freethreading_compatible": False,
    "linetrace": TRACE,
    "profile": TRACE,
}

MODULES = ["mask", "utf8", "frames", "wheel", "fanout", "aio", "core", "upgrade", "limit", "headpack"]

WARNING = """
************************************************************************
fastws: the Cython extension (fastws_ext) could not be built:
    {err}
fastws will run on its pure-Python twins (fastws.IMPLEMENTATION == "python"),
which are correct but several times slower. Install a C compiler and the
Python headers (Debian: apt-get install gcc python3-dev) and reinstall, or set
FASTWS_REQUIRE_EXTENSION=1 to make this an error.
************************************************************************
"""


def check_python(version=sys.version_info[:2], require=REQUIRE):
    """Stop on a Python the extension cannot be built for (a clear message)."""
    if tuple(version) >= MIN_PYTHON:
        return
    found = ".".join(map(str, version))
    wanted = ".".join(map(str, MIN_PYTHON))
    detail = ("FASTWS_REQUIRE_EXTENSION=1 is set and the extension cannot be built for it"
              if require else "the pure-Python twins alone are not a supported install")
    raise SystemExit(f"fastws requires Python >= {wanted} (the Cython extension uses am_send, "
                     f"new in 3.10); this is Python {found}: {detail}.")


def write_constants_pxd(src="fastws/constants.py", dst="fastws_ext/constants.pxd"):
    """Every integer named in fastws/constants.py's __all__, as a C enum."""
    tree = ast.parse(open(src, encoding="utf-8").read())
    values, names = {}, []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id == "__all__":
                names = ast.literal_eval(node.value)
            elif isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                values[target.id] = node.value.value
    lines = [f"# Written by setup.py from {src}: edit that file, not this one.", "cdef enum:"]
    lines += [f"    {name} = {values[name]}" for name in names if type(values.get(name)) is int]
    text = "\n".join(lines) + "\n"
    if not os.path.exists(dst) or open(dst, encoding="utf-8").read() != text:
        with open(dst, "w", encoding="utf-8") as f:  # unchanged: no rebuild of every module
            f.write(text)


def extensions():
    if PURE:
        return []
    write_constants_pxd()
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    exts = [
        Extension(
            f"fastws_ext.{name}",
            [f"fastws_ext/{name}.pyx"],
            extra_compile_args=["-O3"] if sys.platform != "win32" else [],
            define_macros=macros,
        )
        for name in MODULES
    ]
    try:
        from Cython.Build import cythonize
    except ImportError as exc:  # pyproject pins Cython, so this is a bare `python setup.py`
        if REQUIRE:
            raise
        print(WARNING.format(err=f"Cython is not installed ({exc})"), file=sys.stderr)
        return []
    return cythonize(exts, compiler_directives=DIRECTIVES, annotate=ANNOTATE,
                     include_path=["."])


class OptionalBuildExt(build_ext):
    """build_ext that degrades to the pure-Python twins unless told not to."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # compile or link error
            self._fail(exc)

    def _fail(self, exc):
        if REQUIRE:
            raise exc
        print(WARNING.format(err=exc), file=sys.stderr)


if __name__ == "__main__":
    check_python()
    setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
