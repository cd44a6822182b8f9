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
import json
import socket
import ssl as ssl_module
from typing import Any, AsyncGenerator, AsyncIterator, Generator, Iterable, Literal, Mapping, cast

from . import handshake
from .constants import CLOSED, CONNECTING, OPEN
from .deflate import client_offer, client_options
from .exceptions import (
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    ConnectionClosed,
    FastWSError,
    HandshakeError,
    InvalidResponse,
    InvalidURI,
)
from .http import Headers, ResponseReader
from .options import Options
from .proxy import Proxy, open_tunnel, parse_proxy, proxy_for
from .syncclient import (
    CLOSED_DURING_HANDSHAKE,
    TRANSIENT_CLOSE_CODES,
    Backoff,
    is_transient,
    lost_error,
    retry_after,
)
from .transport import StreamConnection
from .websocket import WEBSOCKET_SLOTS, WebSocketMixin

__all__ = ["connect", "ClientWebSocket", "PushSubscriber", "PushError"]


class ClientWebSocket(WebSocketMixin, StreamConnection):
    """A client connection (the object ``connect()`` gives)."""

    __slots__ = WEBSOCKET_SLOTS + ("_key", "_request", "_reader", "_offered", "_handshake", "_user_closed",
                                   "_early")

    def __init__(self, opts: Options, request: bytes, key: str, subprotocols: list[str] | None,
                 handshake_future: asyncio.Future[None]) -> None:
        StreamConnection.__init__(self, opts, True)
        self._init_websocket()
        self._request: bytes | None = request
        self._key = key
        self._offered = subprotocols
        self._reader: ResponseReader | None = ResponseReader(max_head=opts.max_head, max_headers=opts.max_headers)
        self._handshake = handshake_future
        self._user_closed = False  # close() was called while OPEN (the reconnect loop stops)
        self._early: bytes | None = None  # bytes that came with the 101, until connect() returns

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:  # type: ignore[override]  # the handler API's close is async (as the server's)
        if self._state == OPEN:
            self._user_closed = True
        await WebSocketMixin.close(self, code, reason)

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
            # Frames that came with the 101 wait (and reading with them) until
            # connect() has handed the connection over: a protocol error among
            # them must not close it before the application has had the
            # messages that came before the error (Autobahn 3.2, 4.1.3, ...).
            self._early = leftover
            self._hold_reading()

    def _handed_over(self) -> None:
        """connect() returns this connection: read what came with the 101."""
        early = self._early
        if early is not None:
            self._early = None
            if self._state == OPEN:
                self._release_reading()
                self._feed(early)

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
            self._handshake_failed(InvalidResponse(CLOSED_DURING_HANDSHAKE))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(
                InvalidResponse(f"{CLOSED_DURING_HANDSHAKE}: {exc or 'EOF'}")
            )
        StreamConnection.connection_lost(self, exc)


class connect:
    """``ws = await connect(url, **options)`` or ``async with connect(url) as ws``,
    or ``async for ws in connect(url, **options)``: a new connection each time
    the previous one is lost (see ``__aiter__``).

    Options: ``subprotocols`` (offered, in order), ``origin``, ``extra_headers``
    (list of (name, value)), ``ssl`` (an SSLContext, or True for the default
    context with wss://), ``server_hostname``, ``open_timeout`` (default 10 s),
    ``sock``, ``proxy`` (True: from the environment, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``...; a URL, ``http://`` or ``socks5://``;
    None: connect directly; see fastws.proxy), ``backoff_initial``/``backoff_max``/``backoff_factor``/
    ``backoff_jitter`` (the reconnect loop's delays: 0.5 s growing by 1.6
    up to 30 s, minus up to 25 %), and the connection options of
    ``fastws.options.Options`` (max_size, ping_interval, ...).
    """

    def __init__(self, url: str, *, subprotocols: Iterable[str] | None = None, origin: str | None = None,
                 extra_headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 ssl: ssl_module.SSLContext | bool | None = None, server_hostname: str | None = None,
                 open_timeout: float = 10.0, sock: socket.socket | None = None, user_agent: str | None = "fastws",
                 proxy: str | Literal[True] | None = True,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0, backoff_factor: float = 1.6,
                 backoff_jitter: float = 0.25, **options: Any) -> None:
        self.url = url
        self._secure, self._host, self._port, self._resource = handshake.parse_uri(url)
        self._opts = client_options(**options)
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
        # A URL is checked now; True is looked up at each attempt (NO_PROXY
        # depends on the host, and the environment may change).
        self._proxy: Proxy | Literal[True] | None = (
            None if sock is not None or proxy is None else True if proxy is True else parse_proxy(proxy))
        self._user_agent = user_agent
        self._ws: ClientWebSocket | None = None
        self._backoff = Backoff(backoff_initial, backoff_max, backoff_factor, backoff_jitter)
        self._sleep = asyncio.sleep  # the reconnect loop's (tests inject a fake)

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

        proxy = self._proxy
        if proxy is True:
            found = proxy_for(self._secure, self._host, self._port)
            proxy = parse_proxy(found) if found is not None else None
        tunnelling = False

        async def open_() -> ClientWebSocket:
            nonlocal tunnelling
            if self._sock is not None:
                _, ws = await loop.create_connection(factory, sock=self._sock,
                                                     server_hostname=self._server_hostname, **tls)
            elif proxy is not None:
                tunnelling = True
                sock = await open_tunnel(proxy, self._host, self._port, self._user_agent, self._opts.max_head)
                tunnelling = False
                try:
                    # TLS (wss://) runs inside the tunnel, with the server's name.
                    _, ws = await loop.create_connection(
                        factory, sock=sock,
                        server_hostname=(self._server_hostname or self._host) if self._ssl else None, **tls,
                    )
                except BaseException:
                    sock.close()
                    raise
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

        try:
            ws = await asyncio.wait_for(open_(), self._open_timeout)
        except asyncio.TimeoutError:
            if tunnelling:
                raise TimeoutError(f"the proxy {proxy} did not open the tunnel within "
                                   f"open_timeout ({self._open_timeout} s)") from None
            raise
        ws._handed_over()
        return ws

    def __await__(self) -> Generator[Any, None, ClientWebSocket]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientWebSocket:
        self._ws = await self._connect()
        return self._ws

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    def __aiter__(self) -> AsyncIterator[ClientWebSocket]:
        """``async for ws in connect(url)``: reconnect after a connection is lost.

        A failed attempt that is transient (``fastws.syncclient.is_transient``:
        refused, reset, timed out, ended during the handshake, HTTP 5xx or
        429) is retried after a backoff delay (at least the ``Retry-After`` of
        a 429 or 503, at most ``backoff_max``); anything else (another 4xx, a
        bad response, TLS verification) raises at once. When the body of the
        loop ends and the loop resumes, the connection is judged: still open,
        it is closed (1000) and replaced at once; closed by the client
        (``ws.close()``) or by the server with 1000, the loop ends; closed
        with 1001, 1006, 1011, 1012 or 1013, it is replaced after a backoff
        delay (the delays start again from ``backoff_initial`` after each
        connection that opened); any other code raises its ConnectionClosed.
        So the body catches ``fastws.ConnectionClosed`` and goes on (``continue``).
        """
        if self._sock is not None:
            raise TypeError("a connection on a given sock cannot reconnect")
        return self._reconnecting()

    async def _reconnecting(self) -> AsyncIterator[ClientWebSocket]:
        backoff = self._backoff
        backoff.reset()
        while True:
            try:
                ws = await self._connect()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._sleep(backoff.next(retry_after(exc)))
                continue
            backoff.reset()
            self._ws = ws
            replace = False
            try:
                yield ws
            finally:  # also when the generator is closed (aclose)
                if ws._state == OPEN:
                    await ws.close()
                    replace = True
            if replace:
                continue
            if ws._state != CLOSED:
                await ws.wait_closed()
            err = lost_error(ws)
            if err is None:
                return
            if err.code not in TRANSIENT_CLOSE_CODES:
                raise err
            await self._sleep(backoff.next())


# --------------------------------------------------------------------------
# fastws push: resume after a reconnect (docs/guide/cli.md#fastws-push)
# --------------------------------------------------------------------------


class PushError(FastWSError):
    """The push server refused a subscription (``error``: its error message,
    e.g. ``no_history``, ``forbidden``, ``bad_topic``), or is not a
    ``fastws push`` server with history."""

    def __init__(self, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error


class PushSubscriber:
    """The messages of ``fastws push`` topics (a server with ``--history``),
    across reconnects, with no gap and no duplicate::

        sub = PushSubscriber("ws://127.0.0.1:8080/ws", ["news", "alerts"])
        async for msg in sub:
            print(msg["topic"], msg["id"], msg.get("data"))

    Every connection of ``async for ws in connect(url, **options)``
    subscribes to each topic with ``{"type": "subscribe", "topic": T,
    "since": ID}``, ID being the last id received on T (``last``, a dict;
    ``since``, an int or a dict, gives the first ones; a topic without one is
    subscribed live on the first connection and resumed from 0 after a
    reconnect: nothing of it was received, so nothing repeats). The server
    sends what was missed, then the live messages. Yields the
    ``{"type": "message", "topic", "id", "data" or "base64"}`` envelopes, in
    id order per topic (one with an id already received is dropped), and
    ``{"type": "gap", "topic", "lost"}`` when the history no longer held
    everything. ``{"type": "error", "code": "unavailable"}`` (Redis away)
    reconnects after a backoff delay; any other error raises PushError.
    """

    def __init__(self, url: str, topics: Iterable[str], *, since: int | dict[str, int] | None = None,
                 **options: Any) -> None:
        self.topics = list(topics)
        if not self.topics:
            raise ValueError("PushSubscriber needs at least one topic")
        self.last: dict[str, int] = {}
        if isinstance(since, dict):
            self.last.update(since)
        elif since is not None:
            self.last.update((t, since) for t in self.topics)
        self.connections = 0   # connections opened so far
        self.ws: ClientWebSocket | None = None  # the current connection
        self._connect = connect(url, **options)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        connections = cast(AsyncGenerator[ClientWebSocket, None], self._connect.__aiter__())
        try:
            async for ws in connections:
                self.ws = ws
                self.connections += 1
                try:
                    for topic in self.topics:
                        request: dict[str, Any] = {"type": "subscribe", "topic": topic}
                        since = self.last.get(topic, None if self.connections == 1 else 0)
                        if since is not None:
                            request["since"] = since
                        await ws.send(json.dumps(request))
                    async for raw in ws:
                        msg = _push_message(raw)
                        kind = msg["type"]
                        if kind == "message":
                            topic, msg_id = str(msg.get("topic")), msg.get("id")
                            if not isinstance(msg_id, int):
                                raise PushError(f"a message without an id: {raw[:200]!r}")
                            last = self.last.get(topic)
                            if last is not None and msg_id <= last:
                                continue  # already received
                            self.last[topic] = msg_id
                            yield msg
                        elif kind == "gap":
                            yield msg
                        elif kind == "error":
                            if msg.get("code") == "unavailable":
                                await ws.close(CLOSE_TRY_AGAIN_LATER, "history unavailable")
                                ws._user_closed = False  # not the caller's close: reconnect
                                break
                            raise PushError(f"the push server refused: {msg.get('code')}: {msg.get('error')}", msg)
                        # subscribed / unsubscribed / refresh: nothing to do here
                except ConnectionClosed:
                    continue
        finally:
            await connections.aclose()


def _push_message(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and isinstance(msg.get("type"), str):
            return msg
    raise PushError("not a fastws push message with an id (does the server keep --history?): "
                    f"{raw[:200]!r}")
