"""fastws under uvicorn: the WebSocket endpoints of an ASGI app on fastws's codec.

::

    uvicorn app:app --ws fastws.uvicorn:WebSocketProtocol

uvicorn parses the HTTP request and, for an upgrade, hands the transport to
this ``--ws`` protocol class. From there it speaks WebSocket with fastws's own
pieces (the code behind ``fastws.serve``) and only translates to and from ASGI
messages (ASGI spec 2.4), following uvicorn's own implementations wherever the
spec or uvicorn's settings decide (deflate, default headers, keepalive,
``ClientDisconnected``, ``websocket.disconnect``). See docs/guide/uvicorn.md.
"""
from __future__ import annotations

import logging
from urllib.parse import unquote

from .. import handshake
from ..constants import CLOSE_SERVICE_RESTART, CLOSED, CONNECTING, OPEN
from ..exceptions import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    ConfigError,
    ConnectionClosed,
    InvalidRequest,
)
from ..http import RequestReader, check_field, phrase, tokens
from ..options import Options
from ..protocol import Connection
from ..transport import StreamConnection
from ..websocket import WEBSOCKET_SLOTS, WebSocketMixin

try:  # Starlette turns this OSError into WebSocketDisconnect(1006)
    from uvicorn.protocols.utils import ClientDisconnected
except ImportError:  # pragma: no cover - only used under uvicorn
    class ClientDisconnected(OSError):
        pass

__all__ = ["WebSocketProtocol"]

logger = logging.getLogger("uvicorn.error")  # uvicorn's own logger, configured by uvicorn


def timer_tick(ping_interval, ping_timeout) -> float:
    """The timer wheel's tick for these keepalive settings: a tenth of the
    smallest one, from 0.01 s to 1 s (so a 1 s ping timeout fires within
    about 1.1 s, not up to a whole 1 s tick late)."""
    smallest = min((v for v in (ping_interval, ping_timeout) if v), default=None)
    if smallest is None:
        return 1.0
    return min(1.0, max(0.01, smallest / 10))


def _options(config) -> Options:
    """fastws Options for a uvicorn Config (made once per config)."""
    opts = getattr(config, "_fastws_options", None)
    if opts is None:
        ping_interval = config.ws_ping_interval or None
        ping_timeout = config.ws_ping_timeout or None
        opts = Options(
            max_size=config.ws_max_size or None,
            max_queue=max(1, int(config.ws_max_queue or 1)),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout if ping_timeout else 1e9,  # None: wait forever
            timer_tick=timer_tick(ping_interval, ping_timeout),
            # uvicorn's own implementations: windows of 2**12 both ways, memLevel 5
            compression="deflate" if config.ws_per_message_deflate else None,
            server_max_window_bits=12,
            client_max_window_bits=12,
            deflate_mem_level=5,
        )
        config._fastws_options = opts
    return opts


class WebSocketProtocol(WebSocketMixin, StreamConnection):
    """A uvicorn ``--ws`` protocol class over fastws's WebSocket core."""

    __slots__ = WEBSOCKET_SLOTS + (
        "config", "app", "app_state", "root_path", "server_state", "scope", "_reader", "_pending",
        "_connect_sent", "_response", "_response_body", "_accepted", "_headers_101", "_deflate_params",
        "_close_event",
    )

    def __init__(self, config, server_state, app_state, _loop=None):
        if not config.loaded:
            config.load()
        StreamConnection.__init__(self, _options(config), False)
        self._init_websocket()
        self.config = config
        self.app = config.loaded_app
        self.app_state = app_state
        self.root_path = config.root_path
        self.server_state = server_state
        self.scope = None
        self._reader = RequestReader()
        self._pending = None       # bytes the client sent before our 101
        self._connect_sent = False
        self._response = None      # (status, headers) of a websocket.http.response
        self._response_body = None
        self._accepted = False     # the app answered the handshake (101 or a refusal)
        self._close_event = None   # websocket.disconnect once we closed (the app, shutdown)
        self._deflate_params = None
        if _loop is not None:
            self._loop = self._inbox.loop = _loop  # else the running loop, from _init_websocket()
        self._headers_101 = ()

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.server_state.connections.add(self)
        StreamConnection.connection_made(self, transport)

    def connection_lost(self, exc) -> None:
        self.server_state.connections.discard(self)
        StreamConnection.connection_lost(self, exc)

    def _handshake_data(self, data) -> None:
        reader = self._reader
        if reader is None:  # bytes before our 101: keep them for the parser
            self._pending = data if self._pending is None else self._pending + data
            return
        try:
            request = reader.feed(data)
            if request is None:
                return
            self._reader = None
            subprotocol, headers_101 = handshake.check_request(request)
            if self._opts.compression is not None:
                params = handshake.negotiate_deflate(request, self._opts)
                if params is not None:
                    headers_101.append(("Sec-WebSocket-Extensions", params.response))
                    self._deflate_params = params
        except InvalidRequest as exc:
            self._accepted = True
            body = exc.body
            if isinstance(body, str):
                body = (body + "\n").encode("utf-8")
            self._respond(exc.status, exc.headers, body or b"")
            return
        if reader.leftover:
            self._pending = reader.leftover
        self._headers_101 = headers_101
        self.path = request.path
        self._headers = request.headers.pack()
        self.scope = self._make_scope(request)
        task = self._loop.create_task(self._run_asgi())
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _make_scope(self, request) -> dict:
        transport = self._transport
        raw_path, _, query = request.path.partition("?")
        root = self.root_path
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                   for name, value in request.headers.raw_items()]
        offered = tokens(request.headers.get_all("Sec-WebSocket-Protocol"))
        return {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if transport.get_extra_info("sslcontext") else "ws",
            "server": _addr(transport.get_extra_info("sockname")),
            "client": _addr(transport.get_extra_info("peername")),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "subprotocols": offered,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }

    # ------------------------------------------------------------ the ASGI app
    async def _run_asgi(self) -> None:
        try:
            result = await self.app(self.scope, self.receive, self.send_asgi)
        except ClientDisconnected:
            if self._state == OPEN:
                Connection.close(self, CLOSE_NORMAL)
            self._app_done()
            return
        except BaseException as exc:
            logger.exception("Exception in ASGI application (peer %s)", self._client())
            if not self._accepted:
                self._send_500()
            elif self._state == OPEN:
                Connection._fail(self, CLOSE_INTERNAL_ERROR, "internal error")
            self._app_done()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        if not self._accepted:
            logger.error("ASGI callable returned without completing handshake.")
            self._send_500()
        elif result is not None:
            logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self._state == OPEN:
            Connection.close(self, CLOSE_NORMAL)
        self._app_done()

    def _app_done(self) -> None:
        """The app returned or raised: nothing will read its messages any more."""
        if self._state == CONNECTING:
            # An HTTP response left unfinished (no last body chunk): end the
            # connection now rather than at handshake_timeout (as uvicorn does).
            transport = self._transport
            if transport is not None and not transport.is_closing():
                self._disarm()
                self._close_transport()
        elif self._state != CLOSED:
            self._read_to_close()

    def _read_to_close(self) -> None:
        """We sent our close frame: drop what the app did not read and read on,
        so the peer's close reply is seen at once (not at close_timeout)."""
        self._drop_unread()
        self.resume_reading()

    def _drop_unread(self) -> None:
        inbox = self._inbox
        while len(inbox):
            inbox.get()  # a done awaitable: the message is dropped

    def pause_reading(self) -> None:
        # The inbox is full. Once our close frame is out nothing will read
        # more messages: drop them rather than stop reading (the peer's close
        # reply is behind them).
        if self._state == OPEN:
            StreamConnection.pause_reading(self)
        else:
            self._drop_unread()

    async def receive(self) -> dict:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        if self._close_event is not None:
            return self._close_event
        if self._state == CONNECTING and self._transport is not None and not self._transport.is_closing():
            # recv() before accept: only a disconnect can come
            await self.wait_closed()
        try:
            data = await self.recv()
        except ConnectionClosed as exc:
            return self._disconnect_event(exc)
        if type(data) is str:
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    def _disconnect_event(self, exc) -> dict:
        """websocket.disconnect (ASGI 2.3+): the code, and the reason when a
        close frame came (no close frame at all: 1006 and no reason)."""
        if self._close_event is not None:
            return self._close_event
        if self.close_code is None and self.sent_close_code is None:
            return {"type": "websocket.disconnect", "code": exc.code}
        return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}

    async def send_asgi(self, message: dict) -> None:
        kind = message["type"]
        if not self._accepted:
            if self._state == CLOSED or self._transport.is_closing():
                raise ClientDisconnected()
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._accepted = True
                self._log_handshake(403)
                self._respond(403, [], b"")
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
                self._accepted = True
                self._log_handshake(status)
                self._response = (status, [(k.decode("latin-1"), v.decode("latin-1"))
                                           for k, v in message.get("headers", ())])
                self._response_body = []
            else:
                raise RuntimeError("Expected ASGI message 'websocket.accept', 'websocket.close' or "
                                   f"'websocket.http.response.start' but got '{kind}'.")
            return
        if self._response is not None:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'.")
            if self._response_body is None:
                raise ClientDisconnected()  # the response is complete, the connection closed
            self._response_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                status, headers = self._response
                body, self._response_body = b"".join(self._response_body), None
                self._respond(status, headers, body)
            return
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    raise RuntimeError("websocket.send needs 'bytes' or 'text'")
            if self._state != OPEN:
                raise ClientDisconnected()
            try:
                await self.send(data)
            except ConnectionClosed:
                # The peer went away while the write buffer was full (ASGI 2.4:
                # an OSError subclass, which Starlette turns into WebSocketDisconnect).
                raise ClientDisconnected() from None
        elif kind == "websocket.close":
            if self._state == OPEN:
                code = message.get("code", CLOSE_NORMAL)
                reason = message.get("reason") or ""
                try:
                    Connection.close(self, code, reason)
                except ConfigError as exc:
                    raise RuntimeError(str(exc)) from None
                self._close_event = {"type": "websocket.disconnect", "code": code, "reason": reason}
                self._wake_closed()  # a receive() waiting in another task returns it
                self._read_to_close()
            # already closing or closed: nothing more to do
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")

    def _accept(self, message: dict) -> None:
        subprotocol = message.get("subprotocol")
        app_headers = [(k.decode("latin-1") if isinstance(k, bytes) else k,
                        v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in message.get("headers", ())]
        app_headers = [(k, v) for k, v in app_headers if k.lower() not in ("upgrade", "connection")]
        items = [("Upgrade", "websocket"), ("Connection", "Upgrade"), *self._headers_101]
        if subprotocol is not None:
            items.append(("Sec-WebSocket-Protocol", subprotocol))
        items += self._default_headers(app_headers)
        items += app_headers
        head = _head("HTTP/1.1 101 Switching Protocols", items)
        self._accepted = True
        self.subprotocol = subprotocol
        self._transport.write(head)
        self._log_handshake("[accepted]")
        if self._deflate_params is not None:
            self._use_deflate(self._deflate_params)
            self._deflate_params = None
        pending, self._pending = self._pending, None
        self._open(pending or b"")

    def _default_headers(self, given) -> list:
        """uvicorn's default headers (``date`` unless --no-date-header, ``server:
        uvicorn`` unless --no-server-header, each --header), except those the
        app gives itself."""
        names = {name.lower() for name, _ in given}
        return [(name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self.server_state.default_headers
                if name.decode("latin-1").lower() not in names]

    def _respond(self, status: int, headers, body: bytes) -> None:
        """An HTTP response instead of the 101; then the connection is closed."""
        items = [(name, value) for name, value in headers
                 if name.lower() not in ("content-length", "transfer-encoding", "connection")]
        items = self._default_headers(items) + items
        items.append(("Connection", "close"))
        if not any(name.lower() == "content-type" for name, _ in items):
            items.append(("Content-Type", "text/plain; charset=utf-8"))
        if status >= 200 and status not in (204, 304):
            items.append(("Content-Length", str(len(body))))
        self._transport.write(_head(f"HTTP/1.1 {status} {phrase(status)}", items) + body)
        self._disarm()
        self._close_transport()

    def _send_500(self) -> None:
        if self._response is not None or self._transport is None or self._transport.is_closing():
            if self._transport is not None:
                self._close_transport()
            return
        self._accepted = True
        self._respond(500, [], b"Internal Server Error")

    # ------------------------------------------------------------ uvicorn hooks
    def shutdown(self) -> None:
        """uvicorn is shutting down: 1012 to an open connection, 500 to a pending handshake."""
        if self._state == OPEN:
            Connection.close(self, CLOSE_SERVICE_RESTART)
            self._close_event = {"type": "websocket.disconnect", "code": CLOSE_SERVICE_RESTART}
            self._wake_closed()
            self._read_to_close()
        elif self._state == CONNECTING:
            if not self._accepted:
                self._send_500()
            elif self._transport is not None:
                self._close_transport()

    # ------------------------------------------------------------ logging
    def _client(self) -> str:
        addr = self._peername() if self._transport is not None else None
        if isinstance(addr, tuple) and len(addr) >= 2:
            return f"{addr[0]}:{addr[1]}"
        return str(addr or "")

    def _log_handshake(self, status) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info('%s - "WebSocket %s" %s', self._client(), self.path, status)


def _head(status_line: str, items) -> bytes:
    """An HTTP/1.1 head; ValueError for a name that is not a token or a value
    with control characters (no header injection from the app)."""
    lines = [status_line]
    for name, value in items:
        check_field(name, value)
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def _addr(info):
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None
