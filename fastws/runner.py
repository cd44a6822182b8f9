"""``fastws.run()``: serve until SIGINT/SIGTERM on uvloop, then shut down gracefully.

With ``workers=N`` (N > 1) the calling process becomes a supervisor of N worker
processes that share the port through SO_REUSEPORT (``fastws.workers``).
See docs/deployment/workers.md.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import socket
import tempfile
from typing import Any, Callable

from .constants import CLOSING, OPEN
from .exceptions import CLOSE_GOING_AWAY, ConfigError
from .listener import App
from .server import Server, ServerConnection
from .workers import Supervisor, reuse_port_supported

__all__ = ["run", "new_event_loop", "loop_name"]

logger = logging.getLogger("fastws.server")

_SERVER_KEYS = {
    "origins", "allowed_hosts", "subprotocols", "process_request", "http_handler",
    "max_size", "max_queue", "write_limit", "max_write_buffer", "write_timeout", "handshake_timeout",
    "close_timeout", "ping_interval", "ping_timeout", "idle_timeout", "timer_tick", "max_head", "max_headers",
    "slow_consumer", "slow_consumer_limit", "broker",
    "authenticate", "rate_limit", "rate_limit_bytes", "limit_connections_per_ip", "limit_handshakes_per_ip",
    "forwarded_allow_ips", "proxy_protocol", "authorize", "on_token_expired", "token_refresh_grace",
    "compression", "compression_threshold", "server_no_context_takeover", "client_no_context_takeover",
    "server_max_window_bits", "client_max_window_bits", "deflate_mem_level", "deflate_level",
}


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    if loop is None:
        try:
            import uvloop  # noqa: F401
        except ImportError:  # pragma: no cover
            return "asyncio"
        return "uvloop"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(app: App, host: str | None = "127.0.0.1", port: int = 8765, *, workers: int = 1,
        graceful_timeout: float = 10.0,
        on_start: Callable[[list[str], int, str], object] | None = None,
        on_server: Callable[[Server], object] | None = None,
        metrics: bool = False, health: bool = False, limit_connections: int | None = None,
        **options: Any) -> int:
    """Serve ``app`` until SIGINT or SIGTERM; then drain: send 1001 to every
    client, refuse new upgrades with 503 (``/healthz`` answers 503), wait up to
    ``graceful_timeout`` for the closing handshakes, stop listening and abort
    what is left. Returns the exit status (0, or 1 if workers kept dying).

    ``health=True`` answers ``GET /healthz`` (200, 503 while draining) and
    ``metrics=True`` ``GET /metrics`` (Prometheus) on the same port; ``limit_connections=N`` refuses upgrades with 503 and
    ``Retry-After`` while N WebSockets are open (fastws/metrics.py).

    ``on_start(addresses, workers, loop_name)`` is called once the server
    listens (with workers, once every worker listens).
    ``on_server(server)`` is called in each serving process with its started
    ``fastws.Server``, before any connection is accepted (to publish from an
    ``http_handler``, say).
    """
    server_options = {k: v for k, v in options.items() if k in _SERVER_KEYS}
    bind = {k: v for k, v in options.items() if k not in _SERVER_KEYS}
    unknown = set(bind) - {"sock", "reuse_port", "backlog", "ssl", "unix_path"}
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    Server(app, **server_options)  # validate every option before binding or forking
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    if limit_connections is not None and (not isinstance(limit_connections, int)
                                          or isinstance(limit_connections, bool) or limit_connections < 1):
        raise ConfigError(f"limit_connections must be a whole number >= 1, got {limit_connections!r}")
    if not isinstance(graceful_timeout, (int, float)) or isinstance(graceful_timeout, bool) or graceful_timeout < 0:
        raise ConfigError(f"graceful_timeout must be a number of seconds >= 0, got {graceful_timeout!r}")
    if metrics:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ConfigError("metrics need the prometheus-client package (pip install prometheus-client)") from None
    observe = dict(metrics=metrics, limit_connections=limit_connections) \
        if metrics or health or limit_connections is not None else None
    if workers == 1:
        return _serve_one(app, host, port, server_options, bind, graceful_timeout, on_start, on_server, observe)

    if not reuse_port_supported():
        raise ConfigError("workers > 1 needs SO_REUSEPORT, which this platform lacks")
    if bind.get("sock") is not None or bind.get("unix_path") is not None:
        raise ConfigError("workers > 1 binds a TCP host and port; sock and unix_path are not supported")
    # Bind (not listen) a probe socket with SO_REUSEPORT: it reports a busy port
    # at once, resolves port 0 to one port for every worker, and holds it.
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(addr)
        port = probe.getsockname()[1]
        address = _format(probe.getsockname())
        bind["reuse_port"] = True
        shared = tempfile.mkdtemp(prefix="fastws-metrics-") if observe is not None and metrics else None

        def worker_main(index: int, ready: Callable[[], object]) -> None:
            worker_observe = dict(observe, shared_dir=shared, worker=index) if observe is not None else None
            _serve_one(app, host, port, server_options, bind, graceful_timeout,
                       lambda *_: ready(), on_server, worker_observe)

        def on_ready() -> None:  # every worker listens: only now say so
            if on_start is not None:
                on_start([address], workers, loop_name())

        try:
            status: int = Supervisor(worker_main, workers, graceful_timeout=graceful_timeout,
                                     on_ready=on_ready).run()
            return status
        finally:
            if shared is not None:
                shutil.rmtree(shared, ignore_errors=True)
    finally:
        probe.close()


async def drain(server: Server, graceful_timeout: float) -> None:
    """Graceful shutdown: 1001 to every WebSocket while still listening (new
    upgrades get 503, /healthz 503), wait for the closing handshakes up to
    ``graceful_timeout``, then stop listening and abort what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + graceful_timeout
    server.draining = True
    open_ws = [c for c in server.connections if c._state == OPEN]
    logger.info("shutting down: closing %d WebSocket connections with 1001 (at most %gs)",
                len(open_ws), graceful_timeout)
    for conn in open_ws:
        if conn._state == OPEN:
            try:
                ServerConnection.close(conn, CLOSE_GOING_AWAY, "server shutting down")
            except Exception:  # pragma: no cover - a transport error; it is aborted below
                logger.exception("closing %s", conn.remote_address)
    while loop.time() < deadline and any(c._state in (OPEN, CLOSING) for c in server.connections):
        await asyncio.sleep(0.05)
    server.close()
    await server.wait_closed(max(0.0, deadline - loop.time()))


def _format(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _serve_one(app: App, host: str | None, port: int, server_options: dict[str, Any], bind: dict[str, Any],
               graceful_timeout: float, on_start: Callable[[list[str], int, str], object] | None,
               on_server: Callable[[Server], object] | None = None,
               observe: dict[str, Any] | None = None) -> int:
    server = Server(app, **server_options)
    observability = None
    if observe is not None:
        from .metrics import Observability

        observability = Observability(server, **observe)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        if on_server is not None:
            on_server(server)
        await server.start(host, port, **bind)
        stop = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        # The process is ours: what exists once the server listens (modules,
        # classes, the app) goes to the collector's permanent generation, so
        # the cyclic GC, which runs as connections come and go, never walks it
        # again (docs/deployment/workers.md#the-cyclic-garbage-collector).
        gc.freeze()
        if observability is not None:
            observability.start_snapshots(loop)
        if on_start is not None:
            on_start([_format(s.getsockname()) if isinstance(s.getsockname(), tuple) else str(s.getsockname())
                      for s in server.sockets], 1, loop_name(loop))
        await stop
        await drain(server, graceful_timeout)
        if observability is not None:
            observability.stop_snapshots()

    try:
        loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return 0
