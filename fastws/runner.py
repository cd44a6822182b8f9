"""``fastws.run()``: serve until SIGINT/SIGTERM on uvloop, then shut down gracefully."""
from __future__ import annotations

import asyncio
import logging
import signal

from .server import Server

__all__ = ["run", "new_event_loop", "loop_name"]

logger = logging.getLogger("fastws.server")


def new_event_loop():
    """A uvloop loop when uvloop is installed, else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name(loop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(app, host="127.0.0.1", port=8765, *, graceful_timeout: float = 10.0, on_start=None,
        **options) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; then stop accepting, send 1001 to
    every client, wait up to ``graceful_timeout`` for the closing handshakes and
    abort what is left."""
    server = Server(app, **{k: v for k, v in options.items() if k in _SERVER_KEYS})
    bind = {k: v for k, v in options.items() if k not in _SERVER_KEYS}
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def main():
        await server.start(host, port, **bind)
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        if on_start is not None:
            on_start(server, loop)
        await stop
        logger.info("shutting down: closing %d connections with 1001", len(server.connections))
        server.close()
        await server.wait_closed(graceful_timeout)

    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


_SERVER_KEYS = {
    "origins", "subprotocols", "process_request", "http_handler",
    "max_size", "max_queue", "write_limit", "max_write_buffer", "handshake_timeout",
    "close_timeout", "ping_interval", "ping_timeout", "timer_tick", "max_head", "max_headers",
}
