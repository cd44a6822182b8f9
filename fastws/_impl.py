"""The one place that picks the Cython extension or its pure-Python twin.

Everything in fastws imports the codec from here (``from ._impl import codec``)
and never from ``fastws_ext`` or ``fastws._py`` directly.

- ``FASTWS_PURE_PYTHON=1`` forces the pure-Python twins.
- ``FASTWS_REQUIRE_EXTENSION=1`` makes a missing or broken extension an
  ImportError instead of a silent fallback (CI sets it, so a test run can never
  pass on the twins by accident).

``IMPLEMENTATION`` is ``"cython"`` or ``"python"``; ``FALLBACK_REASON`` says why
the twins are in use when they are.
"""
from __future__ import annotations

import os
import types

__all__ = ["IMPLEMENTATION", "FALLBACK_REASON", "codec", "load"]

_NAMES = {
    "mask": ("mask", "masked"),
    "utf8": ("Utf8Validator", "validate_utf8"),
    "frames": (
        "FrameParser",
        "build_frame",
        "build_header",
        "OP_CONTINUATION",
        "OP_TEXT",
        "OP_BINARY",
        "OP_CLOSE",
        "OP_PING",
        "OP_PONG",
    ),
    "wheel": ("TimerWheel", "TimerEntry"),
}


def load(name: str) -> types.SimpleNamespace:
    """The codec namespace of one implementation: ``"cython"`` or ``"python"``.

    Tests use this to run the same body against both.
    """
    if name == "cython":
        from fastws_ext import frames, mask, utf8, wheel
    elif name == "python":
        from ._py import frames, mask, utf8, wheel
    else:
        raise ValueError(f"unknown implementation {name!r}")
    modules = {"mask": mask, "utf8": utf8, "frames": frames, "wheel": wheel}
    ns = types.SimpleNamespace(name=name)
    for mod, attrs in _NAMES.items():
        for attr in attrs:
            setattr(ns, attr, getattr(modules[mod], attr))
    return ns


def _choose() -> tuple[types.SimpleNamespace, str | None]:
    if os.environ.get("FASTWS_PURE_PYTHON") == "1":
        return load("python"), "FASTWS_PURE_PYTHON=1"
    try:
        return load("cython"), None
    except ImportError as exc:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise ImportError(
                f"FASTWS_REQUIRE_EXTENSION=1 but the Cython extension fastws_ext cannot be loaded: {exc}"
            ) from exc
        return load("python"), f"fastws_ext not importable: {exc}"


codec, FALLBACK_REASON = _choose()
IMPLEMENTATION: str = codec.name
