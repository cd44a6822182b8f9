"""fastws: a WebSocket server and client for very many connections.

High level::

    async def handler(ws):
        async for message in ws:
            await ws.send(message)

    server = await fastws.serve(handler, "127.0.0.1", 8765)

Low level (no Future or Task per message)::

    class Echo(fastws.Listener):
        def on_message(self, data):
            self.ws.send(data)

    server = await fastws.serve(Echo, "127.0.0.1", 8765)

``fastws.IMPLEMENTATION`` says whether the Cython extension ("cython") or the
pure-Python twins ("python") are in use.
"""
from __future__ import annotations

from .exceptions import *  # noqa: F401,F403
from .exceptions import __all__ as _exc_all
from .options import Options

__version__ = "0.1.0"

_LAZY = {
    "IMPLEMENTATION": "_impl", "FALLBACK_REASON": "_impl",
    "serve": "server", "Server": "server", "ServerConnection": "server", "ServerWebSocket": "server",
    "connect": "client", "ClientWebSocket": "client",
    "Listener": "listener",
    "Request": "handshake", "Response": "handshake", "Headers": "handshake",
    "run": "runner",
    "RedisBroker": "broker",
}

__all__ = ["__version__", "Options", *_LAZY, *_exc_all]


def __getattr__(name):
    # Imported on first use: `import fastws` stays light, and importing
    # fastws.exceptions (which the extension does) does not pick the codec
    # while the extension itself is still being imported.
    if name == "broker":  # fastws.broker.RedisBroker after a bare `import fastws`
        import importlib

        return importlib.import_module(".broker", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastws' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
