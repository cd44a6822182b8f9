"""The asyncio client: ``fastws.connect(url)``.

::

    async with fastws.connect("ws://127.0.0.1:8765") as ws:
        await ws.send("hello")
        print(await ws.recv())

It has the same high-level API as the server's ``handler(ws)``; frames are
masked by the extension (RFC 6455 5.3: every client frame is masked with a
fresh random key).
See docs/guide/client.md.
"""
from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from typing import Any, Generator, Iterable, Mapping, cast

from . import handshake
from .constants import CONNECTING
from .deflate import client_offer
from .exceptions import HandshakeError, InvalidResponse, InvalidURI
from .http import Headers, ResponseReader
from .options import Options
from .transport import StreamConnection
from .websocket import WEBSOCKET_SLOTS, WebSocketMixin

__all__ = ["connect", "ClientWebSocket"]


class ClientWebSocket(WebSocketMixin, StreamConnection):
    """A client connection (the object ``connect()`` gives)."""

    __slots__ = WEBSOCKET_SLOTS + ("_key", "_request", "_reader", "_offered", "_handshake")

    def __init__(self, opts: Options, request: bytes, key: str, subprotocols: list[str] | None,
                 handshake_future: asyncio.Future[None]) -> None:
        StreamConnection.__init__(self, opts, True)
        self._init_websocket()
        self._request: bytes | None = request
        self._key = key
        self._offered = subprotocols
        self._reader: ResponseReader | None = ResponseReader(max_head=opts.max_head, max_headers=opts.max_headers)
        self._handshake = handshake_future

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        StreamConnection.connection_made(self, transport)
        transport.write(self._request)  # type: ignore[attr-defined]  # a Transport: it has write()
        self._request = None

    def _handshake_data(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None  # only during the handshake
        try:
            response = reader.feed(data)
            if response is None:
                return
            offered = self._opts.compression is not None
            self.subprotocol = handshake.check_response(response, self._key, self._offered,
                                                        extensions_offered=offered)
            params = handshake.response_deflate(response, self._opts) if offered else None
        except HandshakeError as exc:
            self._handshake_failed(exc)
            return
        leftover = reader.leftover
        self._reader = None
        self._headers = cast(Headers, response.headers).pack()  # (a reader's Response: a Headers)
        if params is not None:
            self._use_deflate(params)
        self._open()
        if not self._handshake.done():
            self._handshake.set_result(None)
        if leftover:
            self._feed(leftover)

    def _handshake_failed(self, exc: BaseException) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        self._abort_transport()

    def eof_received(self) -> bool:
        if self._state == CONNECTING and self._reader is not None:
            try:
                response = self._reader.eof()
            except HandshakeError as exc:
                self._handshake_failed(exc)
                return False
            if response is not None:
                try:
                    handshake.check_response(response, self._key, self._offered)
                except HandshakeError as exc:
                    self._handshake_failed(exc)
                    return False
            self._handshake_failed(InvalidResponse("connection closed during the opening handshake"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(
                InvalidResponse(f"connection closed during the opening handshake: {exc or 'EOF'}")
            )
        StreamConnection.connection_lost(self, exc)


class connect:
    """``ws = await connect(url, **options)`` or ``async with connect(url) as ws``.

    Options: ``subprotocols`` (offered, in order), ``origin``, ``extra_headers``
    (list of (name, value)), ``ssl`` (an SSLContext, or True for the default
    context with wss://), ``server_hostname``, ``open_timeout`` (default 10 s),
    ``sock``, and the connection options of ``fastws.options.Options``
    (max_size, ping_interval, ...).
    """

    def __init__(self, url: str, *, subprotocols: Iterable[str] | None = None, origin: str | None = None,
                 extra_headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 ssl: ssl_module.SSLContext | bool | None = None, server_hostname: str | None = None,
                 open_timeout: float = 10.0, sock: socket.socket | None = None, user_agent: str | None = "fastws",
                 **options: Any) -> None:
        self.url = url
        self._secure, self._host, self._port, self._resource = handshake.parse_uri(url)
        # Like browsers, the client offers permessage-deflate unless told not to.
        options.setdefault("compression", "deflate")
        self._opts = Options(**options)
        self._subprotocols = list(subprotocols) if subprotocols else None
        self._origin = origin
        self._extra_headers: list[tuple[str, str]] = list(
            extra_headers.items() if isinstance(extra_headers, Mapping) else extra_headers)
        if self._secure and ssl is None:
            ssl = True
        if ssl is True:
            ssl = ssl_module.create_default_context()
        elif ssl is not None and not self._secure:
            raise InvalidURI("ssl given for a ws:// URL; use wss://")
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._open_timeout = open_timeout
        self._sock = sock
        self._user_agent = user_agent
        self._ws: ClientWebSocket | None = None

    async def _connect(self) -> ClientWebSocket:
        loop = asyncio.get_running_loop()
        key = handshake.make_key()
        extra_headers = self._extra_headers
        if self._opts.compression is not None:

            extra_headers = [("Sec-WebSocket-Extensions", client_offer(self._opts)), *extra_headers]
        request = handshake.build_request(
            self._host, self._port, self._resource, key, secure=self._secure,
            subprotocols=self._subprotocols, origin=self._origin,
            extra_headers=extra_headers, user_agent=self._user_agent,
        )
        done: asyncio.Future[None] = loop.create_future()

        def factory() -> ClientWebSocket:
            return ClientWebSocket(self._opts, request, key, self._subprotocols, done)

        # The TLS handshake is bounded by handshake_timeout, not the loop's 60 s.
        tls: dict[str, Any] = {} if self._ssl is None else {
            "ssl": self._ssl, "ssl_handshake_timeout": self._opts.handshake_timeout}

        async def open_() -> ClientWebSocket:
            if self._sock is not None:
                _, ws = await loop.create_connection(factory, sock=self._sock,
                                                     server_hostname=self._server_hostname, **tls)
            else:
                _, ws = await loop.create_connection(
                    factory, self._host, self._port,
                    server_hostname=(self._server_hostname or self._host) if self._ssl else None, **tls,
                )
            try:
                await done
            except BaseException:
                ws._abort_transport()
                raise
            return ws

        return await asyncio.wait_for(open_(), self._open_timeout)

    def __await__(self) -> Generator[Any, None, ClientWebSocket]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientWebSocket:
        self._ws = await self._connect()
        return self._ws

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ws is not None:
            await self._ws.close()
