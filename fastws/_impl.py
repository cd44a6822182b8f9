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

import importlib
import os
import warnings

__all__ = ["IMPLEMENTATION", "FALLBACK_REASON", "codec", "load"]

_NAMES = {
    "mask": ("mask", "masked"),
    "utf8": ("Utf8Validator", "validate_utf8"),
    "frames": (
        "FrameParser",
        "build_frame",
        "build_header",
        "lone_control",
        "counters",
        "OP_CONTINUATION",
        "OP_TEXT",
        "OP_BINARY",
        "OP_CLOSE",
        "OP_PING",
        "OP_PONG",
    ),
    "wheel": ("TimerWheel", "TimerEntry"),
    "core": ("ConnectionCore", "PING_SERVER", "LARGE_PAYLOAD", "conn_send", "ws_send"),
    "fanout": ("fanout",),
    "aio": ("Waiter", "Inbox", "DONE"),
    "upgrade": ("scan_upgrade", "UpgradeReader"),
}


class _Codec:
    """Attribute access to one implementation's codec, importing on first use."""

    def __init__(self, name: str, package: str):
        self.name = name
        self._package = package

    def __getattr__(self, attr: str):
        for mod, attrs in _NAMES.items():
            if attr in attrs:
                module = importlib.import_module(f"{self._package}.{mod}")
                value = getattr(module, attr)
                setattr(self, attr, value)  # cache: __getattr__ is not called again
                return value
        raise AttributeError(attr)

    def require(self) -> "_Codec":
        """Import every module now (ImportError if one is missing)."""
        for attrs in _NAMES.values():
            for attr in attrs:
                getattr(self, attr)
        return self

    def __repr__(self) -> str:
        return f"<fastws codec {self.name!r}>"


def load(name: str) -> _Codec:
    """The codec of one implementation: ``"cython"`` or ``"python"``.

    Tests use this to run the same body against both.
    """
    if name == "cython":
        return _Codec(name, "fastws_ext")
    if name == "python":
        return _Codec(name, "fastws._py")
    raise ValueError(f"unknown implementation {name!r}")


def _choose() -> tuple[_Codec, str | None]:
    if os.environ.get("FASTWS_PURE_PYTHON") == "1":
        return load("python"), "FASTWS_PURE_PYTHON=1"
    try:
        return load("cython").require(), None
    except ImportError as exc:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise ImportError(
                f"FASTWS_REQUIRE_EXTENSION=1 but the Cython extension fastws_ext cannot be loaded: {exc}"
            ) from exc
        reason = f"fastws_ext not importable: {exc}"
        # pip hides the build's own warning unless run with -v: say it here too.
        warnings.warn(
            f"fastws is running on its pure-Python twins ({reason}); this is correct but several "
            "times slower. Reinstall with a C compiler (FASTWS_REQUIRE_EXTENSION=1 makes this an "
            "error), or set FASTWS_PURE_PYTHON=1 to choose the twins on purpose and silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return load("python"), reason


codec, FALLBACK_REASON = _choose()
IMPLEMENTATION: str = codec.name
