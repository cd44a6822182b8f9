"""fastws under uvicorn: the WebSocket endpoints of an ASGI app on fastws's codec.

::

    uvicorn app:app --ws fastws.uvicorn:WebSocketProtocol

uvicorn parses the HTTP request and, for an upgrade, hands the transport to
this ``--ws`` protocol class. From there it speaks WebSocket with fastws's own
pieces (handshake checks, frame codec, keepalive on the timer wheel, closing
handshake, receive queue with flow control: the code behind ``fastws.serve``)
and only translates to and from ASGI messages (ASGI spec 2.4, websocket
scope). permessage-deflate is not negotiated; on shutdown, clients get 1012.
See docs/guide/uvicorn.md.
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
from ..http import RequestReader, Response, phrase, tokens
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


def _options(config) -> Options:
    """fastws Options for a uvicorn Config (made once per config)."""
    opts = getattr(config, "_fastws_options", None)
    if opts is None:
        ping_interval = config.ws_ping_interval or None
        ping_timeout = config.ws_ping_timeout
        opts = Options(
            max_size=config.ws_max_size or None,
            max_queue=max(1, int(config.ws_max_queue or 1)),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout if ping_timeout else 1e9,  # None: wait forever
        )
        config._fastws_options = opts
    return opts


class WebSocketProtocol(WebSocketMixin, StreamConnection):
    """A uvicorn ``--ws`` protocol class over fastws's WebSocket core."""

    __slots__ = WEBSOCKET_SLOTS + (
        "config", "app", "app_state", "root_path", "server_state", "scope", "_reader", "_pending",
        "_connect_sent", "_response", "_response_body", "_accepted", "_disconnect_sent", "_headers_101",
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
        self._disconnect_sent = False
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
        except InvalidRequest as exc:
            self._accepted = True
            self._transport.write(handshake.error_response(exc))
            self._disarm()
            self._close_transport()
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
            pass
        except BaseException as exc:
            logger.exception("Exception in ASGI application (peer %s)", self._client())
            if not self._accepted:
                self._send_500()
            elif self._state == OPEN:
                Connection._fail(self, CLOSE_INTERNAL_ERROR, "internal error")
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self._accepted:
                logger.error("ASGI callable returned without completing handshake.")
                self._send_500()
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
            if self._state == OPEN:
                Connection.close(self, CLOSE_NORMAL)

    async def receive(self) -> dict:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        if self._state == CONNECTING and self._transport is not None and not self._transport.is_closing():
            # recv() before accept: only a disconnect can come
            await self.wait_closed()
        try:
            data = await self.recv()
        except ConnectionClosed as exc:
            self._disconnect_sent = True
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if type(data) is str:
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

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
                self._respond(Response(403, "Forbidden", [], b""))
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
            self._response_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                status, headers = self._response
                self._respond(Response(status, phrase(status), headers,
                                                 b"".join(self._response_body)))
                self._response_body = None
            return
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
                if data is None:
                    raise RuntimeError("websocket.send needs 'bytes' or 'text'")
            if self._state != OPEN:
                raise ClientDisconnected()
            await self.send(data)
        elif kind == "websocket.close":
            if self._state == OPEN:
                reason = message.get("reason") or ""
                try:
                    Connection.close(self, message.get("code", CLOSE_NORMAL), reason)
                except ConfigError as exc:
                    raise RuntimeError(str(exc)) from None
            # already closing or closed: nothing more to do
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'.")

    def _accept(self, message: dict) -> None:
        headers = list(self._headers_101)
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        extra = [(k.decode("latin-1") if isinstance(k, bytes) else k,
                  v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in message.get("headers", ())]
        self._accepted = True
        self.subprotocol = subprotocol
        self._transport.write(handshake.accept_response(headers, extra))
        self._log_handshake("[accepted]")
        pending, self._pending = self._pending, None
        self._open(pending or b"")

    def _respond(self, response) -> None:
        self._transport.write(response.to_bytes())
        self._disarm()
        self._close_transport()

    def _send_500(self) -> None:
        if self._response is not None or self._transport is None or self._transport.is_closing():
            if self._transport is not None:
                self._close_transport()
            return
        self._accepted = True
        self._respond(Response(500, "Internal Server Error", [], b"Internal Server Error"))

    # ------------------------------------------------------------ uvicorn hooks
    def shutdown(self) -> None:
        """uvicorn is shutting down: 1012 to an open connection, 500 to a pending handshake."""
        if self._state == OPEN:
            Connection.close(self, CLOSE_SERVICE_RESTART)
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


def _addr(info):
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None
