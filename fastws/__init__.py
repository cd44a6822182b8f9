"""fastws: a WebSocket server and client for very many connections."""
from __future__ import annotations

from ._impl import FALLBACK_REASON, IMPLEMENTATION
from .exceptions import *  # noqa: F401,F403
from .exceptions import __all__ as _exc_all

__version__ = "0.1.0"
__all__ = ["IMPLEMENTATION", "FALLBACK_REASON", "__version__", *_exc_all]
