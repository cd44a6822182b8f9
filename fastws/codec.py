"""The one place that picks the Cython extension or its pure-Python twin.

Everything in fastws imports the codec's names from here (``from .codec import
FrameParser``), never from ``fastws_ext`` or ``fastws._py`` directly.

- ``FASTWS_PURE_PYTHON=1`` chooses the twins on purpose.
- ``FASTWS_REQUIRE_EXTENSION=1`` makes a missing extension an ImportError, not
  a silent fallback (CI sets it).
- ``IMPLEMENTATION`` is ``"cython"`` or ``"python"``; ``FALLBACK_REASON`` says
  why the twins are in use when they are. ``load(name)`` gives either one
  (tests run the same body against both).

Type checkers read the extension's stubs, ``fastws_ext/*.pyi`` (the contract). See
docs/design/codec.md.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import types
import warnings
from typing import TYPE_CHECKING

__all__ = [
    "IMPLEMENTATION", "FALLBACK_REASON", "NAMES", "load",
    # the codec (NAMES): the same names in both implementations
    "mask", "masked", "Utf8Validator", "validate_utf8",
    "FrameParser", "build_frame", "build_header", "lone_control", "counters",
    "TimerWheel", "TimerEntry", "LoopDriver", "ConnectionCore", "PING_SERVER", "conn_send", "ws_send",
    "gc_untrack", "gc_track",
    "fanout", "Waiter", "Inbox", "DONE", "scan_upgrade", "accept_101", "UpgradeReader",
    "RateLimits", "Limiter", "pack_lines", "unpack_lines",
]

# module -> the names it gives (the same in fastws_ext and fastws._py)
NAMES = {
    "mask": ("mask", "masked"),
    "utf8": ("Utf8Validator", "validate_utf8"),
    "frames": ("FrameParser", "build_frame", "build_header", "lone_control", "counters"),
    "wheel": ("TimerWheel", "TimerEntry", "LoopDriver"),
    "core": ("ConnectionCore", "PING_SERVER", "conn_send", "ws_send", "gc_untrack", "gc_track"),
    "fanout": ("fanout",),
    "aio": ("Waiter", "Inbox", "DONE"),
    "upgrade": ("scan_upgrade", "accept_101", "UpgradeReader"),
    "limit": ("RateLimits", "Limiter"),
    "headpack": ("pack_lines", "unpack_lines"),
}
_PACKAGES = {"cython": "fastws_ext", "python": "fastws._py"}


def load(name: str) -> types.SimpleNamespace:
    """Every name of one implementation, ``"cython"`` or ``"python"``, as
    attributes of a namespace (ImportError if a module is missing)."""
    package = _PACKAGES.get(name)
    if package is None:
        raise ValueError(f"unknown implementation {name!r}")
    ns = types.SimpleNamespace(name=name)
    for module, attrs in NAMES.items():
        mod = importlib.import_module(f"{package}.{module}")
        for attr in attrs:
            setattr(ns, attr, getattr(mod, attr))
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
        reason = f"fastws_ext not importable: {exc}"
        # pip hides the build's own warning unless run with -v: say it here too.
        warnings.warn(
            f"fastws is running on its pure-Python twins ({reason}); this is correct but several "
            f"times slower. {_remedy()} FASTWS_PURE_PYTHON=1 chooses the twins on purpose and "
            "silences this; FASTWS_REQUIRE_EXTENSION=1 makes it an error.",
            RuntimeWarning,
            stacklevel=3,
        )
        return load("python"), reason


def _remedy() -> str:
    """Why the extension is missing, as far as can be told, and what to do."""
    spec = importlib.util.find_spec("fastws_ext")
    where = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
    if where is not None and os.path.exists(os.path.join(where, "mask.pyx")):
        # A source checkout: Python found it first (python -m / -c put the
        # current directory first on sys.path), and it was never built here.
        return (f"This fastws was imported from the source tree {os.path.dirname(where)}, where the "
                "extension is not built: run from another directory (or use the `fastws` command) "
                "to use the installed copy, or build in place with `pip install -e .`.")
    return ("The extension was not built when fastws was installed (no C compiler or Python "
            "headers then, or FASTWS_PURE_PYTHON=1 at build time): install gcc and python3-dev, "
            "then reinstall.")


if TYPE_CHECKING:
    from fastws_ext.aio import DONE, Inbox, Waiter
    from fastws_ext.aio import MessageWaiter as MessageWaiter  # (in the stubs only: for annotations)
    from fastws_ext.core import PING_SERVER, ConnectionCore, conn_send, gc_track, gc_untrack, ws_send
    from fastws_ext.fanout import fanout
    from fastws_ext.limit import Limiter, RateLimits
    from fastws_ext.headpack import pack_lines, unpack_lines
    from fastws_ext.frames import FrameParser, build_frame, build_header, counters, lone_control
    from fastws_ext.mask import mask, masked
    from fastws_ext.upgrade import UpgradeReader, accept_101, scan_upgrade
    from fastws_ext.utf8 import Utf8Validator, validate_utf8
    from fastws_ext.wheel import LoopDriver, TimerEntry, TimerWheel

    IMPLEMENTATION: str
    FALLBACK_REASON: str | None
else:
    _chosen, FALLBACK_REASON = _choose()
    IMPLEMENTATION = _chosen.name
    globals().update({attr: getattr(_chosen, attr) for attrs in NAMES.values() for attr in attrs})
    del _chosen
