"""The version of fastws, defined once: the package, ``fastws --version`` and
the build (pyproject.toml reads it) take it from here."""

__version__ = "0.1.0"
