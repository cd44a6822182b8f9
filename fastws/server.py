"""The server: ``fastws.serve(app, host, port, **options)``.

``app`` is a coroutine function ``async def handler(ws)`` (one Task per
connection, none per message) or a ``fastws.Listener`` class or factory
(callbacks run synchronously in the read callback). The server works at the
asyncio ``Protocol`` level (no streams): each accepted TCP connection is one
``ServerConnection``, which reads the upgrade request, answers it and then
speaks WebSocket. The ``Server`` is the one owner of the set of open
connections and of the topic registry (fastws/pubsub.py). Options are those
of ``fastws.options.Options`` plus ``origins``, ``allowed_hosts``,
``subprotocols``, ``process_request``, ``http_handler``, ``broker`` and access
control (``authenticate``, per-IP limits, ``authorize``, token expiry on one
wheel entry per server: docs/guide/access-control.md; ``_guarded_class``).
See docs/guide/handler-api.md.
"""
from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import socket
import sys
import time
from sys import intern as _intern
from typing import TYPE_CHECKING, Any, Generator

from . import handshake
from .codec import Limiter, RateLimits, TimerEntry, gc_track, gc_untrack
from .constants import CLOSED, CONNECTING, OPEN
from .exceptions import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_TOKEN_EXPIRED,
    ConfigError,
    ConnectionClosed,
    Forbidden,
    InvalidRequest,
)
from .listener import App, Listener
from .http import FIELD_HOST, RequestReader, Response, upgrade_fields
from .metrics import DRAIN_RETRY_AFTER, ServerCounters
from .options import Options
from .presence import PresenceList, make_presence
from .protocol import RARE_FIELDS
from .proxyproto import ProxyHeaderError, ProxyHeaderReader
from .proxyproto import parse as parse_proxy_header
from .pubsub import Topics
from .ratelimit import ClientLimits, TrustedProxies
from .timers import get_driver
from .transport import StreamConnection
from .websocket import WEBSOCKET_SLOTS, WebSocketMixin

__all__ = ["serve", "Server", "ServerConnection", "ServerWebSocket", "is_handler"]

logger = logging.getLogger("fastws.server")
access_logger = logging.getLogger("fastws.access")
_FIRST_READ = False  # ServerConnection._reader before the first read
_REFUSED = object()  # ServerConnection._process_request: the request was refused
INFO = logging.INFO
# Whether the access log is on, without a call per connection: the logger's
# own cache of isEnabledFor (a dict, level -> bool), which logging empties
# whenever a level changes (setLevel, logging.disable, dictConfig); None:
# not cached, ask the logger. The access log itself checks isEnabledFor
# again (a logger disabled by dictConfig keeps its cache).
_ACCESS_CACHE = getattr(access_logger, "_cache", None)
if type(_ACCESS_CACHE) is not dict:  # (not CPython's logging: always ask)
    _ACCESS_CACHE = {}


def _access_log_on() -> bool:
    enabled = _ACCESS_CACHE.get(INFO)
    return access_logger.isEnabledFor(INFO) if enabled is None else enabled


# Listener classes (without an instance __dict__, so that no instance can
# have methods of its own) -> which of Listener's methods they override:
# asked once per class, not once per connection. _CONNECT: on_connect (else
# the connection sets listener.ws itself, which is all Listener.on_connect
# does: a Python call less per connection); _PONG: on_pong (else it is not
# called for the keepalive pongs: no Python call per pong on idle connections).
_CONNECT = 1
_PONG = 2
_HOOKS: dict = {}


def _hooks(listener) -> int:
    """``_CONNECT | _PONG``, the ones ``listener`` overrides (remembered for
    its class, at most 1,024 classes, when the answer cannot differ by instance)."""
    hooks = 0
    for flag, name in ((_CONNECT, "on_connect"), (_PONG, "on_pong")):
        if getattr(getattr(listener, name, None), "__func__", None) is not getattr(Listener, name):
            hooks |= flag
    cls = type(listener)
    if cls.__dictoffset__ == 0 and len(_HOOKS) < 1024:
        _HOOKS[cls] = hooks
    return hooks


def _draining_refusal() -> InvalidRequest:
    """A graceful shutdown is under way (``server.draining``): upgrades get 503."""
    exc = InvalidRequest(503, "Service Unavailable", [("Retry-After", str(DRAIN_RETRY_AFTER))],
                         "the server is shutting down")
    exc.metric_reason = "draining"
    return exc


class ServerConnection(StreamConnection):
    """A server-side connection; with the low-level API it is ``listener.ws``."""

    # user (what the server's authenticate hook returned, None without one)
    # and _started (the time connection_made ran, kept only while the access
    # log is on, for the request's duration) are kept in the connection's
    # _rare side object (fastws.protocol).
    __slots__ = ("_reader",)
    if TYPE_CHECKING:
        user: Any
        _started: float | None
    else:
        user = RARE_FIELDS["user"]
        _started = RARE_FIELDS["_started"]
    # The server: a class attribute, not a field. Each Server serves its own
    # subclass of its connection class (Server._connection_class, made by
    # _server_class), whose _server is that server and whose
    # _slot_defaults hold its options and counters: a connection holds none
    # of the three, and no __init__ runs for it.
    _server: "Server" = None  # type: ignore[assignment]
    # (see Connection's) No RequestReader before the first read: most first
    # reads hold a whole upgrade head, which the server's
    # handshake.upgrade_reader() reads without one (_handshake_data).
    _slot_defaults = {"_reader": _FIRST_READ}

    def connection_made(self, transport) -> None:
        # StreamConnection.connection_made and Server._register in one frame
        # (a Python call less each per connection).
        server = self._server
        opts = self._opts
        driver = server._driver  # the loop's wheel, looked up once per server
        if driver is None or driver._closed:
            driver = server._driver = get_driver(asyncio.get_running_loop(), opts.timer_tick)
        self._driver = driver
        self._transport = transport
        transport.set_write_buffer_limits(opts.write_limit)  # (high); positional: no keyword parsing
        driver.arm_after(self, opts.handshake_timeout)
        enabled = _ACCESS_CACHE.get(INFO)  # (as _access_log_on(), inline)
        if enabled or enabled is None and access_logger.isEnabledFor(INFO):
            self._started = time.monotonic()
        if server._closing:
            self._abort_transport()
            return
        server.connections.add(self)
        gc_untrack(self)  # held by server.connections until Server._unregister: no GC walks it meanwhile
        server.counters.connections_total += 1

    def _on_keepalive_timeout(self) -> None:
        self._server.counters.ping_timeouts += 1

    def _log_error(self, kind: str, msg: str, *args, exc_info=None) -> None:
        """An error on one connection, rate-limited per kind (fastws.metrics.LogLimiter)."""
        self._server.counters.log.log(logger, logging.ERROR, kind, msg, *args, exc_info=exc_info)

    def connection_lost(self, exc) -> None:
        StreamConnection.connection_lost(self, exc)
        self._reader = None
        self._server._unregister(self)  # also drops its subscriptions

    # ------------------------------------------------------------ pub/sub
    @property
    def server(self) -> "Server":
        """The Server this connection belongs to (``ws.server.publish(...)``)."""
        return self._server

    def subscribe(self, topic: str) -> None:
        """Receive what ``server.publish(topic, ...)`` sends, until
        ``unsubscribe(topic)`` or the end of the connection (idempotent).
        Raises ``fastws.exceptions.Forbidden`` (a PermissionError) when the
        server's ``authorize`` hook refuses it."""
        if self._state == CLOSED:
            raise self._closed_error()
        server = self._server
        authorize = server.authorize
        if authorize is not None and not authorize(self, topic, "subscribe"):
            raise Forbidden(topic, "subscribe")
        server._topics.subscribe(self, topic)

    def may(self, topic: str, action: str) -> bool:
        """Whether the server's ``authorize`` hook allows ``action``
        (``"subscribe"`` or ``"publish"``) on ``topic`` for this connection
        (True without a hook)."""
        authorize = self._server.authorize
        return authorize is None or bool(authorize(self, topic, action))

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (nothing happens if not subscribed)."""
        self._server._topics.unsubscribe(self, topic)

    @property
    def topics(self) -> frozenset:
        """The topics this connection is subscribed to."""
        return self._server._topics.topics_of(self)

    # ------------------------------------------------------------ opening handshake
    def _handshake_bytes(self, data) -> None:
        # StreamConnection._handshake_bytes, with the common first read in
        # this frame: nothing to check but what the reader checks
        # (check_request would pass, answering accept_response([("Sec-
        # WebSocket-Accept", ...)])), so the reader reads, answers
        # (handshake.accept_101) and packs the field lines (pack_lines) in one
        # call, in C. Anything else: _handshake_data.
        try:
            if self._reader is _FIRST_READ:
                server = self._server
                opts = self._opts
                if (server.origins is None and not server.subprotocols and opts.compression is None
                        and server.allowed_hosts is None and server.process_request is None
                        and not server.draining):
                    quick = server._upgrades.read_accept(data, opts.max_head, opts.max_headers)  # None unless bytes
                    if quick is not None:
                        self._reader = None
                        path, packed, answer, leftover = quick
                        self._transport.write(answer)
                        self._accepted(path, packed, leftover)  # _upgraded(None, leftover, None, None, path, packed), shorter
                        return
                    # Not a whole upgrade head the reader takes: the general way.
                    self._reader = RequestReader(max_head=opts.max_head, max_headers=opts.max_headers)
            self._handshake_data(data)
        except Exception:
            self._handshake_crashed()

    def _handshake_data(self, data) -> None:
        reader = self._reader
        if reader is None:  # a response is being written; ignore the rest
            return
        opts = self._opts
        if reader is _FIRST_READ:
            # (_handshake_bytes takes the common case before; here: the
            # first read after a PROXY header, or a server with checks.)
            server = self._server
            # What check_request would look at beyond what the reader checks.
            checks = (server.origins is not None or server.subprotocols or opts.compression is not None
                      or server.allowed_hosts is not None)
            if not checks and server.process_request is None and not server.draining:
                quick = server._upgrades.read_accept(data, opts.max_head, opts.max_headers)  # None unless bytes
                if quick is not None:
                    self._reader = None
                    path, packed, answer, leftover = quick
                    self._transport.write(answer)
                    self._accepted(path, packed, leftover)
                    return
            else:
                quick = server._upgrades.read(data, opts.max_head, opts.max_headers)  # None unless bytes
            if quick is not None:
                self._reader = None
                path, packed, key, leftover = quick
                if checks:
                    self._check_upgrade(handshake.quick_request(path, packed), leftover)
                    return
                # check_request would pass; only process_request (or draining) is left.
                request = handshake.quick_request(path, packed)  # made only for process_request
                try:
                    extra = self._process_request(request)
                except InvalidRequest as exc:
                    self._refuse(exc, request)
                    return
                if extra is _REFUSED:
                    return
                if extra:
                    self._transport.write(handshake.accept_response(
                        [("Sec-WebSocket-Accept", handshake.accept_key(key.decode("ascii"))), *extra]))
                else:
                    self._transport.write(handshake.accept_101(key))
                self._upgraded(request, leftover, None, None)
                return
            reader = self._reader = RequestReader(max_head=opts.max_head, max_headers=opts.max_headers)
        try:
            request = reader.feed(data)
        except InvalidRequest as exc:
            self._refuse(exc)
            return
        if request is None:
            return
        self._reader = None
        leftover = reader.leftover
        if not handshake.is_upgrade_request(request):
            self._plain_http(request)
            return
        self._check_upgrade(request, leftover)

    def _check_upgrade(self, request, leftover: bytes) -> None:
        """An upgrade request: check it, run the server's policies, answer."""
        server = self._server
        try:
            subprotocol, headers = handshake.check_request(
                request, origins=server.origins, subprotocols=server.subprotocols,
                allowed_hosts=server.allowed_hosts,
            )
            deflate_params = None
            if self._opts.compression is not None:
                deflate_params = handshake.negotiate_deflate(request, self._opts)
                if deflate_params is not None:
                    headers.append(("Sec-WebSocket-Extensions", deflate_params.response))
        except InvalidRequest as exc:
            self._refuse(exc, request)
            return
        self._admit(request, leftover, subprotocol, headers, deflate_params)

    def _admit(self, request, leftover: bytes, subprotocol, headers, deflate_params) -> None:
        """The RFC 6455 checks passed: admission control (a guarded server's
        class runs per-address limits and authenticate here), then accept."""
        self._accept(request, leftover, subprotocol, headers, deflate_params)

    def _accept(self, request, leftover: bytes, subprotocol, headers, deflate_params) -> None:
        """process_request, then the 101."""
        server = self._server
        try:
            if server.process_request is not None or server.draining:
                extra = self._process_request(request)
                if extra is _REFUSED:
                    return
                if extra:
                    headers = list(headers) + extra
        except InvalidRequest as exc:
            self._refuse(exc, request)
            return
        self._transport.write(handshake.accept_response(headers))
        self._upgraded(request, leftover, subprotocol, deflate_params)

    def _process_request(self, request):
        """Run the server's process_request: the headers it adds to the 101
        (a list, maybe empty), or _REFUSED once its Response is written.
        While the server drains, the upgrade is then refused (503)."""
        server = self._server
        hook = server.process_request
        result = hook(request) if hook is not None else None
        if server.draining:
            raise _draining_refusal()
        if isinstance(result, Response):
            self._server.counters.refused("process_request")
            self._respond(result, request)
            return _REFUSED
        if result:
            return list(result.items() if hasattr(result, "items") else result)
        return None

    def _upgraded(self, request, leftover: bytes, subprotocol, deflate_params, path=None, packed=None) -> None:
        """The 101 is written: keep what the connection needs, start the
        WebSocket. ``request`` None: a head the short cut took, its target
        and packed field lines given instead (a Request only for the log)."""
        if request is not None:
            path = request.path
            packed = request.headers.pack()  # (the lines as received: codec.pack_lines)
        # else the short cut's field lines, packed by UpgradeReader.read_accept
        # Interned: thousands of connections on "/ws" share one str (56 B each).
        self.path = _intern(path)
        self._headers = packed  # compact until read (ws.headers)
        self.subprotocol = subprotocol
        self._server.counters.upgraded += 1
        if _access_log_on():
            self._log_access(request if request is not None else handshake.quick_request(path, packed), 101)
        if self._rare is not None:  # (_started is kept there, set while the access log is on)
            self._started = None  # only the access log needed it: no float kept per open connection
        if deflate_params is not None:
            self._use_deflate(deflate_params)
        self._start(leftover)

    def _accepted(self, path: str, packed: int | bytes, leftover: bytes) -> None:
        """``_upgraded(None, leftover, None, None, path, packed)`` for the
        handshake's short cut (no subprotocol, no compression), with
        ``_start`` and ``_open`` in the same frame (the common case; the rare
        branches call the general methods). ``packed``: ``pack_lines`` of
        the field lines (UpgradeReader.read_accept packed them)."""
        self.path = _intern(path)
        self._headers = packed  # the field lines as received: their shape's number and the key
        server = self._server
        server.counters.upgraded += 1
        enabled = _ACCESS_CACHE.get(INFO)  # (None: not cached: ask the logger)
        if enabled or enabled is None and access_logger.isEnabledFor(INFO):
            self._log_access(handshake.quick_request(path, packed), 101)
        if self._rare is not None:  # (_started is kept there, set while the access log is on)
            self._started = None
        try:
            listener = server.app()
        except Exception as exc:
            self._start_failed(exc)
            return
        self._app = listener
        self._open_timer(self._driver)  # Connection._open's timer part (in C in the extension)
        hooks = _HOOKS.get(type(listener))
        if hooks is None:
            hooks = _hooks(listener)
        try:
            if hooks & _CONNECT:
                listener.on_connect(self)
            else:
                listener.ws = self  # (Listener.on_connect)
        except Exception as exc:
            self._app_error(exc)
            return
        if not hooks & _PONG:
            self._pong_hook = False
        if leftover:
            self._feed(leftover)

    def _start(self, leftover: bytes) -> None:
        """The handshake is done: create the listener and start the WebSocket."""
        try:
            listener = self._server.app()
        except Exception as exc:
            self._start_failed(exc)
            return
        self._app = listener
        self._open()
        try:
            listener.on_connect(self)
        except Exception as exc:
            self._app_error(exc)
            return
        hooks = _HOOKS.get(type(listener))
        if hooks is None:
            hooks = _hooks(listener)
        if not hooks & _PONG:
            self._pong_hook = False  # (as in _accepted)
        if leftover:
            self._feed(leftover)

    def _start_failed(self, exc: Exception) -> None:
        self._log_error("listener_factory", "listener factory failed for %s", self.remote_address, exc_info=True)
        self._state = OPEN
        self._app_error(exc)

    def _message_callback(self):
        return self._app.on_message

    def _plain_http(self, request) -> None:
        allowed_hosts = self._server.allowed_hosts
        if allowed_hosts is not None:
            hosts = upgrade_fields(request)[FIELD_HOST]
            if hosts is None or len(hosts) != 1 or not allowed_hosts.allows(hosts[0]):
                self._refuse(allowed_hosts.refusal(), request)
                return
        handler = self._server.http_handler
        if handler is None:
            self._respond(Response(
                426, "Upgrade Required",
                [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
                b"This is a WebSocket endpoint: connect with a WebSocket client.\n",
            ), request)
            return
        try:
            result = handler(request)
        except Exception:
            self._log_error("http_handler", "http_handler failed for %s %s", request.method, request.path,
                            exc_info=True)
            result = Response(500, "Internal Server Error", [], b"internal error\n")
        if inspect.isawaitable(result):
            asyncio.ensure_future(self._await_http(result, request))
            return
        self._respond(result, request)

    async def _await_http(self, awaitable, request) -> None:
        try:
            result = await awaitable
        except Exception:
            self._log_error("http_handler", "http_handler failed for %s %s", request.method, request.path,
                            exc_info=True)
            result = Response(500, "Internal Server Error", [], b"internal error\n")
        if self._state == CONNECTING and not self._transport.is_closing():
            self._respond(result, request)

    def _respond(self, response, request=None) -> None:
        if not isinstance(response, Response):
            self._log_error("http_handler", "http_handler returned %r, not a fastws.Response",
                            type(response).__name__)
            response = Response(500, "Internal Server Error", [], b"internal error\n")
        # RFC 9110 9.3.2: the head a GET would get, no content.
        self._transport.write(response.to_bytes(request is not None and request.method == "HEAD"))
        if request is not None:
            self._log_access(request, response.status)
        self._disarm()
        self._close_transport()

    def _refuse(self, exc: InvalidRequest, request=None) -> None:
        self._server.handshakes_refused += 1
        self._server.counters.refused(getattr(exc, "metric_reason", None) or f"http_{exc.status}")
        data = handshake.error_response(exc)
        if request is not None and request.method == "HEAD":
            data = data[:data.index(b"\r\n\r\n") + 4]  # RFC 9110 9.3.2: no content
        self._transport.write(data)
        if request is not None:
            self._log_access(request, exc.status)
        else:
            access_logger.info("%s - bad request: %d %s", self._peer(), exc.status, exc.reason)
        self._disarm()
        self._close_transport()

    def _peer(self) -> str:
        addr = self.remote_address
        if isinstance(addr, tuple) and len(addr) >= 2:
            return f"{addr[0]}:{addr[1]}"
        return str(addr)

    def _log_access(self, request, status: int) -> None:
        if access_logger.isEnabledFor(logging.INFO):
            target = request.path
            redact = self._server._redact
            if redact is not None and "?" in target:
                target = redact(target)  # no ?token= value in the log
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d %s %s',
                self._peer(), request.method, target, request.version, status,
                self.subprotocol or "-", self._elapsed_ms(),
            )

    def _elapsed_ms(self) -> str:
        """Milliseconds since connection_made, for the access log ("-" when
        the log was off then)."""
        started = self._started
        return "-" if started is None else f"{(time.monotonic() - started) * 1000:.1f}ms"


class ServerWebSocket(WebSocketMixin, ServerConnection):
    """A server-side connection with the high-level API: the ``ws`` of ``handler(ws)``."""

    __slots__ = WEBSOCKET_SLOTS

    def __init__(self) -> None:
        self._init_websocket()

    def _accepted(self, path: str, packed: int | bytes, leftover: bytes) -> None:
        self._upgraded(None, leftover, None, None, path, packed)

    def _start(self, leftover: bytes) -> None:
        self._open()
        # The task runs the application's coroutine itself (no wrapper
        # coroutine: one frame less to resume per message); how it ended is
        # handled in _handler_done.
        task = self._task = self._loop.create_task(self._server.app(self))
        task.add_done_callback(self._handler_done)
        if leftover:
            self._feed(leftover)

    def _handler_done(self, task) -> None:
        """The handler returned or raised: close normally (1000), or log the
        error and close with 1011. ConnectionClosed is the normal way out of a
        handler whose peer went away; a cancelled handler leaves the
        connection to whoever cancelled it (the server's shutdown)."""
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            self._log_error("handler_error", "error in connection handler (peer %s)", self.remote_address,
                            exc_info=exc)
            if self._state == OPEN:
                self._fail(CLOSE_INTERNAL_ERROR, "internal error")
            return
        if self._state == OPEN:
            self.close_nowait(CLOSE_NORMAL)

    def close_nowait(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting for it."""
        ServerConnection.close(self, code, reason)


# ---------------------------------------------------------------- access control
_INTERNAL_ERROR = "internal error"


class _Pending:
    """``_reader`` while an async authenticate hook runs: its task, and what
    the peer sends meanwhile (a client should wait for the 101; at most
    max_head bytes are kept, more is refused)."""

    __slots__ = ("task", "data", "limit")

    def __init__(self, task, limit: int):
        self.task = task
        self.data = b""
        self.limit = limit

    def feed(self, data):
        self.data += data
        if len(self.data) > self.limit:
            raise InvalidRequest(400, "Bad Request", body="data sent before the handshake was answered")
        return None


class _Guarded:
    """Admission control, mixed into the connection class of a server with
    ``authenticate`` or per-address limits: every upgrade takes the general
    path's checks, then ``_admit`` runs the limits and the hook."""

    __slots__ = ()
    _handshake_bytes = StreamConnection._handshake_bytes  # (not ServerConnection's quick one)

    def _handshake_data(self, data) -> None:
        if self._reader is _FIRST_READ:
            opts = self._opts
            server = self._server
            quick = server._upgrades.read(data, opts.max_head, opts.max_headers)
            if quick is not None:
                self._reader = None
                path, packed, key, leftover = quick
                request = handshake.quick_request(path, packed)
                if (server.origins is not None or server.subprotocols or opts.compression is not None
                        or server.allowed_hosts is not None):
                    self._check_upgrade(request, leftover)
                    return
                # As in ServerConnection: check_request would pass, with this answer.
                self._admit(request, leftover, None,
                            [("Sec-WebSocket-Accept", handshake.accept_key(key.decode("ascii")))], None)
                return
            self._reader = RequestReader(max_head=opts.max_head, max_headers=opts.max_headers)
        super()._handshake_data(data)

    def _admit(self, request, leftover: bytes, subprotocol, headers, deflate_params) -> None:
        server = self._server
        limits = server._client_limits
        if limits is not None:
            address = limits.proxies.client_address(self._peername(), request.headers)
            try:
                self._ip = limits.admit(address)
            except InvalidRequest as exc:
                self._refuse(exc, request)
                return
        hook = server.authenticate
        if hook is None:
            self._accept(request, leftover, subprotocol, headers, deflate_params)
            return
        try:
            result = hook(request)
        except InvalidRequest as exc:
            self._refuse(exc, request)
            return
        except Exception:
            self._auth_failed(request)
            return
        if inspect.isawaitable(result):
            # One task per handshake (none per message); handshake_timeout
            # keeps running: the timer aborts the connection, connection_lost
            # cancels the task.
            task = asyncio.get_running_loop().create_task(
                self._await_auth(result, request, leftover, subprotocol, headers, deflate_params))
            self._reader = _Pending(task, self._opts.max_head)
            return
        self._authenticated(result, request, leftover, subprotocol, headers, deflate_params)

    async def _await_auth(self, awaitable, request, leftover, subprotocol, headers, deflate_params) -> None:
        try:
            result = await awaitable
        except InvalidRequest as exc:
            result = exc
        except Exception:
            result = None
            if not self._still_pending():
                return
            self._reader = None
            self._auth_failed(request)
            return
        if not self._still_pending():
            return
        pending = self._reader
        self._reader = None
        if isinstance(result, InvalidRequest):
            self._refuse(result, request)
            return
        if pending.data:
            leftover = leftover + pending.data
        self._authenticated(result, request, leftover, subprotocol, headers, deflate_params)

    def _still_pending(self) -> bool:
        return (type(self._reader) is _Pending and self._state == CONNECTING
                and not self._transport.is_closing())

    def _authenticated(self, result, request, leftover, subprotocol, headers, deflate_params) -> None:
        if isinstance(result, Response):
            self._server.counters.refused("authenticate")
            self._respond(result, request)
            return
        self.user = result
        if type(result) is dict and "exp" in result:
            self._server._track_token(self, result)
        self._accept(request, leftover, subprotocol, headers, deflate_params)

    def _auth_failed(self, request) -> None:
        self._log_error("authenticate", "authenticate failed for %s %s (peer %s); answered 500",
                        request.method, request.path, self.remote_address, exc_info=True)
        exc = InvalidRequest(500, "Internal Server Error", body=_INTERNAL_ERROR)
        exc.metric_reason = "authenticate_error"
        self._refuse(exc, request)

    def connection_lost(self, exc) -> None:
        pending = self._reader
        if type(pending) is _Pending:
            pending.task.cancel()  # the peer left, or handshake_timeout aborted it
        super().connection_lost(exc)
        address = self._ip
        if address is not None:
            self._ip = None
            self._server._client_limits.release(address)
        clock = self._server._token_clock
        if clock is not None:
            clock.forget(self)


class _ProxyProtocol:
    """The PROXY protocol (v1 and v2), mixed into the connection class of a
    server with ``proxy_protocol=True``: a connection from a peer in
    ``forwarded_allow_ips`` must begin with a PROXY header, whose source
    address is then the connection's ``remote_address`` (the per-address
    limits, the access log and every log line use it); a peer not in the
    list is closed unread: its header would not be believed, and the port is
    meant to be reached through the proxy (docs/deployment/proxies.md).
    ``_proxy`` is None (nothing to read), False before the first read (most
    hold the whole header: parsed in place), the ProxyHeaderReader while a
    header cut by reads comes in, then the client's address, or True for the
    socket's own (v2 LOCAL: the proxy's health check; UNKNOWN / AF_UNSPEC). A malformed,
    overlong or truncated header closes the connection with no answer; a
    header that never ends is cut off by handshake_timeout."""

    __slots__ = ()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if transport.is_closing():  # the server is closing (ServerConnection.connection_made aborted it)
            return
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else (peer or "")
        verdicts = self._proxy_verdicts  # on the peers seen (ipaddress is slow), at most 1024
        trusted = verdicts.get(host)
        if trusted is None:
            trusted = self._proxy_trusted.trusts(host)
            if len(verdicts) < 1024:
                verdicts[host] = trusted
        if not trusted:
            self._proxy_refused("proxy_untrusted", "connection from %s, not in forwarded_allow_ips, "
                                "closed unread (proxy_protocol is on)", host or "a Unix socket peer")
            return
        self._proxy = False

    _handshake_bytes = StreamConnection._handshake_bytes  # (the header first: not ServerConnection's quick one)

    def _handshake_data(self, data) -> None:
        proxy = self._proxy
        if proxy is False or type(proxy) is ProxyHeaderReader:
            try:
                if proxy is False:  # the first read
                    found = parse_proxy_header(data)
                    if found is None:
                        proxy = self._proxy = ProxyHeaderReader()
                        proxy.feed(data)
                        return
                    header, consumed = found
                    data = data[consumed:]
                else:
                    header = proxy.feed(data)
                    if header is None:
                        return
                    data = proxy.leftover
            except ProxyHeaderError as exc:
                self._proxy = None
                self._proxy_refused("proxy_protocol", "bad PROXY protocol header from %s: %s; closed",
                                    self._peer(), exc.reason)
                return
            source = header.source
            self._proxy = True if source is None else source
            if not data:
                return
        elif proxy is None:
            return
        super()._handshake_data(data)

    def _proxy_refused(self, reason: str, msg: str, *args) -> None:
        server = self._server
        server.handshakes_refused += 1
        server.counters.refused(reason)
        server.counters.log.log(logger, logging.WARNING, reason, msg, *args)
        self._disarm()
        self._close_transport()

    def _peername(self):
        proxy = self._proxy
        if type(proxy) is tuple or type(proxy) is str:
            return proxy
        return super()._peername()


class _RateLimited:
    """Per-connection rate limits, mixed into the connection class of a
    server with ``rate_limit`` / ``rate_limit_bytes``. The connection's
    ``Limiter`` (two buckets, no callback) is made with its frame parser and
    given to it: the parser counts each data message with it (a C call in
    the extension) before the API level's callback, which it still calls
    directly. When the connection goes idle and drops its parser, the
    limiter goes too if both buckets are full again (it is then as good as
    a new one): an idle connection holds only the ``_limiter`` slot."""

    __slots__ = ()

    def _make_parser(self, limiter=None):
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = Limiter(self._opts._rate)
        return super()._make_parser(limiter)

    def _idle_parser(self) -> bool:
        if super()._idle_parser():
            limiter = self._limiter
            if limiter is not None and limiter.full():
                self._limiter = None
            return True
        return False


def close_token_expired(ws) -> None:
    """The default ``on_token_expired``: close with 4001 "token expired"."""
    ServerConnection.close(ws, CLOSE_TOKEN_EXPIRED, "token expired")


class _TokenClock(TimerEntry):
    """The token expiries of one server's connections: ONE timer-wheel entry
    per server, armed at the earliest due time, over a heap of entries
    ``(due, seq, conn, user, phase)`` and a dict ``live`` (connection -> its
    one live entry; an entry not in it is stale and skipped when popped).
    No timer, task or slot per connection and nothing per message. ``due``
    is loop time (``exp`` converted once from the wall clock).

    Phase 0: the token expires: ``on_token_expired(conn)``; if the connection
    is still open with the same ``user``, phase 1 is tracked at ``+ grace``,
    whose end closes it with 4001. An entry whose connection has another
    ``ws.user`` by then tracks that user's ``exp`` instead (``set_user``
    tracks it at once). A closed connection leaves ``live`` (``forget``); the
    heap is rebuilt when it holds more than twice the live entries.
    docs/guide/access-control.md#token-expiry."""

    __slots__ = ("server", "heap", "live", "_seq")

    def __init__(self, server):
        self.server = server
        self.heap = []
        self.live = {}
        self._seq = itertools.count()

    def track(self, conn, user, phase: int = 0, due: float | None = None) -> None:
        """Make ``(due, conn, user, phase)`` the live entry of ``conn``
        (``due`` None: from ``user["exp"]``; no numeric exp: untracked)."""
        driver = self.server._timer_driver()
        if due is None:
            due = _due(user, driver.now())
            if due is None:
                self.live.pop(conn, None)
                return
        entry = (due, next(self._seq), conn, user, phase)
        self.live[conn] = entry
        heap = self.heap
        heapq.heappush(heap, entry)
        if heap[0] is entry and due < _INF:
            driver.arm(self, due)  # O(1); it was later or not armed
        elif len(heap) > 2 * len(self.live) + 64:
            self._rebuild()

    def forget(self, conn) -> None:
        """``conn`` closed: its entry is stale."""
        if self.live.pop(conn, None) is not None and len(self.heap) > 2 * len(self.live) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        heap = self.heap
        heap[:] = self.live.values()
        heapq.heapify(heap)

    def on_timer(self, now):
        heap = self.heap
        live = self.live
        server = self.server
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            _due, _seq, conn, user, phase = entry
            if live.get(conn) is not entry:
                continue  # stale
            del live[conn]
            if conn._state > OPEN:
                continue  # closing or closed
            current = conn.user
            if current is not user:  # refreshed (or replaced) since: the new token's exp
                due = _due(current, now)
                if due is None:
                    continue  # no exp: never expires
                if due > now:
                    self.track(conn, current, 0, due)
                    continue
                user, phase = current, 0  # already expired: now
            if conn._state != OPEN:  # expired during the handshake: at the next tick
                self.track(conn, user, phase, now + 0.001)
                continue
            if phase == 0:
                try:
                    server.on_token_expired(conn)
                except Exception:
                    logger.exception("on_token_expired failed (peer %s)", conn.remote_address)
                    ServerConnection.close(conn, CLOSE_TOKEN_EXPIRED, "token expired")
                    continue
                grace = server.token_refresh_grace
                if conn._state == OPEN and conn.user is user and grace is not None and conn not in live:
                    self.track(conn, user, 1, now + grace)
            else:
                ServerConnection.close(conn, CLOSE_TOKEN_EXPIRED, "token expired")
        return heap[0][0] if heap and heap[0][0] < _INF else None


_INF = float("inf")


def _due(user, now: float):
    """The loop time at which ``user["exp"]`` (Unix seconds) passes, or None."""
    exp = user.get("exp") if type(user) is dict else None
    if type(exp) not in (int, float) or exp != exp:
        return None
    return now + (exp - time.time())


def _guarded_class(base, admission: bool, rate: bool, proxy=None):
    """``base`` (ServerConnection or ServerWebSocket), or a subclass of it
    with what the server's access control needs: ``_ip`` (the address its
    per-address limits counted), ``_limiter`` (the rate limits' state
    while the connection receives or its buckets refill: 48 bytes in the
    extension, no GC header; None when idle) and ``_proxy`` (the PROXY
    protocol's reader, then the client's address; ``proxy``: the server's
    TrustedProxies, kept on the class with its verdicts)."""
    if not admission and not rate and proxy is None:
        return base
    slots = ((("_proxy",) if proxy is not None else ()) + (("_ip",) if admission else ())
             + (("_limiter",) if rate else ()))
    bases = (((_ProxyProtocol,) if proxy is not None else ()) + ((_Guarded,) if admission else ())
             + ((_RateLimited,) if rate else ()) + (base,))

    defaults = dict.fromkeys(slots)  # all None (ConnectionCore sets them: no __init__ here)

    ns = {"__slots__": slots, "_slot_defaults": defaults, "__module__": __name__, "__doc__": base.__doc__}
    if proxy is not None:
        ns["_proxy_trusted"] = proxy
        ns["_proxy_verdicts"] = {}
    return type(base.__name__, bases, ns)


def _server_class(server: "Server", cls):
    """The subclass of ``cls`` (a ServerConnection or ServerWebSocket class)
    that ``server`` makes its connections of: ``_server`` is the server, and
    its ``_slot_defaults`` hold the server's options and counters, which
    ConnectionCore stores when a connection is made. No __init__ runs but
    the handler API's (its inbox)."""
    ns = {"__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
          "_server": server,
          "_slot_defaults": {"_opts": server.options, "_ka_counters": server.counters}}
    if not issubclass(cls, ServerWebSocket):
        ns["__init__"] = object.__init__
    return type(cls.__name__, (cls,), ns)


def is_handler(app) -> bool:
    """Whether ``app`` is a high-level handler (``async def handler(ws)``, or an
    object whose ``__call__`` is one) rather than a Listener factory."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return not inspect.isclass(app) and inspect.iscoroutinefunction(call)


class Server:
    """A running fastws server; ``connections`` is the set of its open connections."""

    def __init__(self, app: App, *, origins=None, subprotocols=None, process_request=None,
                 http_handler=None, broker=None, allowed_hosts=None, authenticate=None,
                 limit_connections_per_ip=None, limit_handshakes_per_ip=None,
                 forwarded_allow_ips=("127.0.0.1",), proxy_protocol=False, authorize=None,
                 on_token_expired=None, token_refresh_grace=30.0, **options: Any) -> None:
        self.options = Options(**options)
        # None: any Host (the handshake's fast path stays as it is); else a
        # HostAllowlist, checked on every request, upgrade or plain HTTP (400).
        self.allowed_hosts = handshake.allowed_hosts_option(allowed_hosts)
        if is_handler(app):
            self._connection_class = ServerWebSocket
        elif callable(app):
            self._connection_class = ServerConnection
        else:
            raise ConfigError(f"app must be an async handler or a Listener class/factory, not {app!r}")
        if inspect.isclass(app) and not issubclass(app, Listener) and not is_handler(app):
            for name in ("on_message", "on_connect", "on_close", "on_ping", "on_pong", "on_drain"):
                if not hasattr(app, name):
                    raise ConfigError(f"listener class {app.__name__} has no {name}(); subclass fastws.Listener")
        if origins is not None and not callable(origins):
            if isinstance(origins, str):
                raise ConfigError("origins must be a list of origins, not a single string")
            origins = list(origins)
        if subprotocols is not None:
            if isinstance(subprotocols, str):
                raise ConfigError("subprotocols must be a list of names, not a single string")
            subprotocols = list(subprotocols)
        if process_request is not None and not callable(process_request):
            raise ConfigError("process_request must be callable")
        if http_handler is not None and not callable(http_handler):
            raise ConfigError("http_handler must be callable")
        if authenticate is not None and not callable(authenticate):
            raise ConfigError("authenticate must be callable (a function or an async function)")
        # authenticate(request) -> identity (ws.user), or raises InvalidRequest /
        # returns a Response to refuse; run after the RFC 6455 checks and the
        # origin policy, before process_request (docs/guide/access-control.md).
        self.authenticate = authenticate
        # authorize(ws, topic, action) -> bool, checked by ws.subscribe (not
        # per message) and publish_as; with a fastws.auth.JWTAuth and no
        # authorize, the token's subs/pubs claims decide (JWTAuth.authorize_topic).
        if authorize is None:
            auth_module = sys.modules.get("fastws.auth")
            if auth_module is not None and isinstance(authenticate, auth_module.JWTAuth):
                authorize = authenticate.authorize_topic
        if authorize is not None and not callable(authorize):
            raise ConfigError("authorize must be callable: authorize(ws, topic, action) -> bool")
        self.authorize = authorize
        # Token expiry (ws.user["exp"]): on_token_expired(ws), then the grace
        # period for a refresh, then close 4001 (_TokenClock).
        if on_token_expired is None:
            on_token_expired = close_token_expired
        elif not callable(on_token_expired):
            raise ConfigError("on_token_expired must be callable: on_token_expired(ws)")
        self.on_token_expired = on_token_expired
        if token_refresh_grace is not None and (
                isinstance(token_refresh_grace, bool) or not isinstance(token_refresh_grace, (int, float))
                or not token_refresh_grace >= 0):
            raise ConfigError(f"token_refresh_grace must be a number of seconds >= 0 or None, "
                              f"not {token_refresh_grace!r}")
        self.token_refresh_grace = None if token_refresh_grace is None else float(token_refresh_grace)
        self._token_clock = None  # created at the first token with an exp
        self._redact = getattr(authenticate, "redact_target", None)  # the access log's ?token=
        # The proxies whose Forwarded / X-Forwarded-For and PROXY protocol
        # headers are believed (fastws/ratelimit.py, fastws/proxyproto.py).
        # No attribute of the Server for it: at 30 instance attributes
        # CPython 3.11 stops keeping them inline, and every server.x the
        # handshake reads gets slower (LOAD_ATTR_WITH_HINT); the connection
        # class holds what the PROXY protocol needs (_guarded_class).
        proxies = TrustedProxies(forwarded_allow_ips)
        if not isinstance(proxy_protocol, bool):
            raise ConfigError(f"proxy_protocol must be True or False, got {proxy_protocol!r}")
        client_limits = ClientLimits(limit_connections_per_ip, limit_handshakes_per_ip, proxies)
        self._client_limits = client_limits if client_limits.active else None
        opts = self.options
        rate = opts.rate_limit is not None or opts.rate_limit_bytes is not None
        if rate:
            opts._rate = RateLimits(opts.rate_limit, opts.rate_limit_bytes)
        self._connection_class = _guarded_class(
            self._connection_class, authenticate is not None or self._client_limits is not None, rate,
            proxies if proxy_protocol else None)
        self.app = app
        self.origins = origins
        token_like = getattr(authenticate, "is_token_subprotocol", None)
        if token_like is not None and subprotocols:
            # A token offered as a subprotocol (fastws.auth: "bearer.<token>")
            # is never selected, so never echoed in the 101.
            subprotocols = [p for p in subprotocols if not token_like(p)]
        self.subprotocols = subprotocols
        self.process_request = process_request
        self.http_handler = http_handler
        self.connections: set = set()
        self.handshakes_refused = 0
        # totals for /metrics (fastws/metrics.py): folded in when a connection ends
        self.counters = ServerCounters()
        self._connection_class = _server_class(self, self._connection_class)
        self.draining = False  # set by a graceful shutdown: /healthz 503, upgrades 503
        self._topics = Topics(self.options)
        # publishes, deliveries, slow_consumer_drops, slow_consumer_closes
        self.stats: dict = self._topics.stats
        # broker: topics across processes (fastws/broker.py); its counters
        # are also server.stats["broker"].
        self.broker = broker
        if broker is not None:
            if not hasattr(broker, "attach") or not hasattr(broker, "publish"):
                raise ConfigError(f"broker must be a fastws.broker.RedisBroker (or alike), not {broker!r}")
            broker.attach(self)
            self.stats["broker"] = broker.counters
        # presence (fastws/presence.py): local, or kept in Redis by a broker with presence=True
        self._presence = make_presence(self, broker)
        if self._presence.distributed:
            self.stats["presence"] = self._presence.counters
        self._upgrades = handshake.upgrade_reader()  # the handshake's short cut, with its parser
        self._driver = None  # the timer wheel of the loop serving (ServerConnection.connection_made)
        self._servers = []
        self._closing = False
        self._all_closed = None

    # ------------------------------------------------------------ connection set
    def _unregister(self, conn) -> None:
        self.connections.discard(conn)
        gc_track(conn)  # (untracked while held here: codec.gc_untrack) a cycle through it is collected again
        self.counters.fold(conn)
        topics = self._topics
        if topics.any:
            topics.forget(conn)
        if self._closing and not self.connections and self._all_closed is not None:
            if not self._all_closed.done():
                self._all_closed.set_result(None)

    # ------------------------------------------------------------ pub/sub
    def publish(self, topic: str, data):
        """Send ``data`` (``str``: text, bytes-like: binary) to every subscriber
        of ``topic``: the frame is built once and written to each. Never blocks;
        slow subscribers are handled as ``slow_consumer`` says (fastws/pubsub.py).
        Returns how many subscribers it was written to (queued for, in a cork).

        With a broker (``serve(..., broker=RedisBroker(url))``) it returns a
        coroutine instead: ``await server.publish(topic, data)`` publishes
        through Redis to the subscribers of every process and returns
        ``Published(id, processes)``, or raises ``BrokerUnavailable``."""
        broker = self.broker
        if broker is None:
            return self._topics.publish(topic, data)
        return broker.publish(topic, data)

    def publish_as(self, ws, topic: str, data):
        """``publish`` on behalf of a client: raises ``Forbidden`` unless the
        ``authorize`` hook allows ``ws`` to publish to ``topic`` (then, as
        ``publish``, returns the count, or a coroutine with a broker)."""
        authorize = self.authorize
        if authorize is not None and not authorize(ws, topic, "publish"):
            raise Forbidden(topic, "publish")
        return self.publish(topic, data)

    def publish_local(self, topic: str, data) -> int:
        """``publish`` to this process's subscribers only, also with a broker."""
        return self._topics.publish(topic, data)

    def cork(self):
        """``with server.cork(): ...``: the local publishes made in the block
        are queued and written when it ends, one write per subscriber per run
        of messages to the same topic (fastws/pubsub.py, *Bursts*)."""
        return _Cork(self._topics)

    def publish_many(self, topic: str, messages) -> int:
        """Publish each message in order to this process's subscribers of
        ``topic``, coalesced: one write per subscriber (per write_limit bytes).
        Returns the deliveries queued."""
        topics = self._topics
        topics.cork()
        try:
            return sum([topics.publish(topic, m) for m in messages])
        finally:
            topics.uncork()

    def broadcast(self, data, connections=None) -> int:
        """Like publish, to every open connection (or to ``connections``, any
        iterable of this server's connections). Returns how many it was written to."""
        return self._topics.broadcast(self.connections if connections is None else connections, data)

    def subscribers(self, topic: str) -> int:
        """How many connections are subscribed to ``topic``."""
        return self._topics.subscribers(topic)

    async def presence(self, topic: str, limit: int = 1000) -> PresenceList:
        """Who is subscribed to ``topic``: ``PresenceList(members, total)``,
        ``members`` at most ``limit`` ``Member(id, user)``. With a broker
        with ``presence=True``, on every process (a crashed one's members
        vanish within ``presence_ttl``); without a broker, this process's.
        Raises BrokerUnavailable while Redis is away. docs/guide/presence.md."""
        return await self._presence.read(topic, limit)

    def watch_presence(self, ws, topic: str) -> None:
        """Send ``ws`` (subscribed to ``topic``) a text message
        ``{"type": "presence", "topic": T, "join": [{"id", "user"}], "leave": [id]}``
        whenever subscribers of ``topic`` join or leave (on every process,
        with a broker with presence=True). Ends when it unsubscribes."""
        self._presence.watch(ws, topic)

    def unwatch_presence(self, ws, topic: str) -> None:
        self._presence.unwatch(ws, topic)

    def topics(self) -> frozenset:
        """The topics that have at least one subscriber."""
        return self._topics.topics()

    # ------------------------------------------------------------ token expiry
    def _timer_driver(self):
        driver = self._driver
        if driver is None or driver._closed:
            driver = self._driver = get_driver(asyncio.get_running_loop(), self.options.timer_tick)
        return driver

    def _track_token(self, conn, user) -> None:
        clock = self._token_clock
        if clock is None:
            clock = self._token_clock = _TokenClock(self)
        clock.track(conn, user)

    def set_user(self, ws, user) -> None:
        """Replace ``ws.user`` (a refreshed token's claims): from now on its
        ``exp`` is the one enforced. (Assigning ``ws.user`` directly is
        noticed only at the connection's pending deadline: the old ``exp``,
        or the end of a grace period.)"""
        ws.user = user
        if ws._state <= OPEN and (self._token_clock is not None or type(user) is dict):
            self._track_token(ws, user)

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str | None = None, port: int | None = None, *, sock: socket.socket | None = None,
                    reuse_port: bool = False, backlog: int = 2048, ssl: Any = None,
                    unix_path: str | None = None) -> Server:
        loop = asyncio.get_running_loop()
        if ssl is not None and issubclass(self._connection_class, _ProxyProtocol):
            # The proxy writes its header before the client's TLS bytes, in
            # clear; the loop's TLS would take it for a ClientHello.
            raise ConfigError("proxy_protocol with ssl: terminate TLS at the proxy (HAProxy 'bind ... ssl', "
                              "an NLB TLS listener) and serve plain ws:// behind it "
                              "(docs/deployment/proxies.md)")
        if self.broker is not None:
            await self.broker.start()
        self._presence.start(loop)
        # The TLS handshake counts against handshake_timeout too (the loop's
        # own default is 60 s: a peer sending no ClientHello, or one byte at a
        # time, would hold its connection that long).
        tls = {} if ssl is None else {"ssl": ssl, "ssl_handshake_timeout": self.options.handshake_timeout}
        factory = self._connection_class  # (_server_class: no __init__ for the listener API)
        if unix_path is not None:
            server = await loop.create_unix_server(factory, unix_path, sock=sock, backlog=backlog, **tls)
        elif sock is not None:
            server = await loop.create_server(factory, sock=sock, backlog=backlog, **tls)
        else:
            server = await loop.create_server(
                factory, host, port, backlog=backlog, reuse_port=reuse_port or None, **tls,
            )
        self._servers.append(server)
        return self

    @property
    def sockets(self) -> list:
        return [s for server in self._servers for s in server.sockets]

    @property
    def port(self) -> int:
        """The TCP port of the first listening socket (handy with port=0)."""
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return sock.getsockname()[1]
        raise RuntimeError("the server has no TCP socket")

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting, and start closing every connection with ``code``."""
        if self._closing:
            return
        self._closing = True
        self.counters.log.flush()
        self._all_closed = asyncio.get_running_loop().create_future()
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn._state == OPEN:
                ServerConnection.close(conn, code, reason)  # the sync close of both API levels
            elif conn._state == CONNECTING:
                conn._abort_transport()
        if not self.connections and not self._all_closed.done():
            self._all_closed.set_result(None)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until every connection is closed; after ``timeout`` seconds
        (default: close_timeout), abort the ones that are left."""
        if self._all_closed is not None:
            if timeout is None:
                timeout = self.options.close_timeout
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
            except asyncio.TimeoutError:
                for conn in list(self.connections):
                    if conn._state != CLOSED:
                        conn._abort_transport()
                await asyncio.sleep(0)
        for server in self._servers:
            await server.wait_closed()
        await self._presence.close()
        if self.broker is not None:
            await self.broker.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Graceful shutdown: ``close()`` then ``wait_closed(timeout)``."""
        self.close()
        await self.wait_closed(timeout)

    async def serve_forever(self) -> None:
        try:
            await asyncio.Future()
        finally:
            if not self._closing:
                self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.shutdown()

    def __repr__(self):
        return f"<fastws.Server sockets={[s.getsockname() for s in self.sockets]} connections={len(self.connections)}>"


class _Cork:
    __slots__ = ("_topics",)

    def __init__(self, topics):
        self._topics = topics

    def __enter__(self):
        self._topics.cork()
        return self

    def __exit__(self, *exc_info):
        self._topics.uncork()


class serve:
    """``server = await serve(app, host, port, **options)`` or
    ``async with serve(app, host, port) as server: ...``.

    Connection options are those of ``fastws.options.Options``; server options:
    ``origins``, ``allowed_hosts``, ``subprotocols``, ``process_request``, ``http_handler``, ``broker``;
    socket options: ``sock``, ``reuse_port``, ``backlog``, ``ssl``, ``unix_path``.
    """

    def __init__(self, app: App, host: str | None = None, port: int | None = None, *,
                 sock: socket.socket | None = None, reuse_port: bool = False, backlog: int = 2048,
                 ssl: Any = None, unix_path: str | None = None, workers: int = 1, **options: Any) -> None:
        if workers != 1:
            # Forking inside a running event loop is unsafe; the blocking entry
            # point forks before any loop exists.
            raise ConfigError("workers > 1: use fastws.run(app, host, port, workers=N) or "
                              "`fastws ... --workers N`, which start the worker processes "
                              "before any event loop exists (or bind each process yourself "
                              "with serve(..., reuse_port=True))")
        self._server = Server(app, **options)  # validates options now, before binding
        self._bind = dict(host=host, port=port, sock=sock, reuse_port=reuse_port, backlog=backlog,
                          ssl=ssl, unix_path=unix_path)

    def __await__(self) -> Generator[Any, None, Server]:
        return self._server.start(**self._bind).__await__()

    async def __aenter__(self) -> Server:
        return await self._server.start(**self._bind)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.shutdown()
