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

Without a compiler and without ``FASTWS_REQUIRE_EXTENSION``, the build prints a
clear warning and installs the pure-Python twins; ``fastws.IMPLEMENTATION``
then says ``"python"``.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

MODULES = ["mask", "utf8", "frames", "wheel", "fanout", "aio", "core", "upgrade"]

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


def extensions():
    if PURE:
        return []
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


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
