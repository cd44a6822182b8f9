"""fastws: a WebSocket server and client for very many connections.

::

    async def handler(ws):
        async for message in ws:
            await ws.send(message)

    fastws.run(handler, "127.0.0.1", 8765)

``fastws.Listener`` is the low-level API (callbacks, no Future or Task per
message). ``fastws.IMPLEMENTATION`` says whether the Cython extension
("cython") or the pure-Python twins ("python") are in use.
See docs/index.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import *  # noqa: F401,F403
from .exceptions import __all__ as _exc_all
from .options import Options
from .version import __version__

# Imported on first use: `import fastws` stays light, and importing
# fastws.exceptions (which the extension does) does not pick the codec while
# the extension itself is still being imported.
_LAZY = {
    "IMPLEMENTATION": "codec", "FALLBACK_REASON": "codec",
    "serve": "server", "Server": "server", "ServerConnection": "server", "ServerWebSocket": "server",
    "connect": "client", "ClientWebSocket": "client",
    "Listener": "listener",
    "Request": "http", "Response": "http", "Headers": "http",
    "run": "runner",
    "RedisBroker": "broker",
}

__all__ = ["__version__", "Options", *_LAZY, *_exc_all]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs ("as": re-exported)
    from .broker import RedisBroker as RedisBroker
    from .client import ClientWebSocket as ClientWebSocket, connect as connect
    from .codec import FALLBACK_REASON as FALLBACK_REASON, IMPLEMENTATION as IMPLEMENTATION
    from .http import Headers as Headers, Request as Request, Response as Response
    from .listener import Listener as Listener
    from .runner import run as run
    from .server import Server as Server, ServerConnection as ServerConnection
    from .server import ServerWebSocket as ServerWebSocket, serve as serve


def __getattr__(name: str) -> Any:
    import importlib

    if name in ("broker", "syncclient"):  # fastws.broker.RedisBroker after a bare `import fastws`
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastws' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
