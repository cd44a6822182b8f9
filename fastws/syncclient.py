"""The blocking WebSocket client: no event loop, in a thread or a gevent greenlet.

``SyncWebSocket`` is the protocol core of every fastws connection
(``fastws.protocol.Connection``, client side) on a blocking socket: a locked
``sendall`` writes, the bytes ``sock.recv`` returns go to ``data_received``,
and its timers are a ``ManualDriver`` that the reading loop advances. States,
the closing handshake, pong answers and close codes are the core's; this
module adds the blocking calls, the counters and the exception rules.
``fastws.locust`` builds its ``WebSocketUser`` on it (locust monkey-patches
``socket``, so each blocking call yields to the other greenlets).

See docs/guide/client.md#fastwssyncclient-the-blocking-client.
"""
from __future__ import annotations

import email.utils
import functools
import ipaddress
import os
import random
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, cast

from . import handshake
from .constants import CLOSED, CLOSING, OPEN
from .deflate import client_offer, client_options
from .exceptions import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    ConfigError,
    ConnectionClosed,
    InvalidResponse,
    InvalidStatus,
    ProtocolError,
    ProxyError,
    connection_closed,
)
from .handshake import parse_uri
from .http import Headers, Response, ResponseReader
from .options import Options
from .protocol import Connection
from .proxy import open_tunnel_sync, parse_proxy, proxy_for
from .timers import ManualDriver

__all__ = ["SyncWebSocket", "connect", "connect_forever", "Backoff", "is_transient", "retry_after",
           "TRANSIENT_CLOSE_CODES", "IP_BIND_ADDRESS_NO_PORT"]


# Linux: bind() to an address with port 0 without reserving a port; the port is
# picked at connect() time for the (src, dst) pair, so each source address gets
# its own ~28k ephemeral ports per destination.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

READ_SIZE = 65536
INF = float("inf")


@functools.lru_cache(maxsize=32)
def _options(max_size: int | None) -> Options:
    # One Options per max_size, shared by every connection (locust: thousands).
    # No keepalive: the caller pings when it wants to (ping(), hold()).
    return Options(max_size=max_size, ping_interval=None, close_timeout=10.0)


_DEFLATE_OPTIONS = frozenset((
    "compression_threshold", "server_no_context_takeover", "client_no_context_takeover",
    "server_max_window_bits", "client_max_window_bits", "deflate_level", "deflate_mem_level"))


@functools.lru_cache(maxsize=32)
def _deflate_options(max_size: int | None, compression: str | None,
                     items: tuple[tuple[str, Any], ...]) -> Options:
    # The permessage-deflate offer and its DeflateParams; the connection itself
    # keeps _options(max_size).
    return client_options(max_size=max_size, ping_interval=None, compression=compression, **dict(items))


# The driver of every connection until it arms its first timer (only now() is
# read from it): a connection gets its own ManualDriver when it starts closing,
# so an open one holds no wheel.
_CLOCK = ManualDriver(time.monotonic, 1.0, 1)


class _OpenAttr:
    """``SyncWebSocket.open(url, ...)`` on the class connects (the public
    constructor); ``ws.open`` on a connection is Connection's ``open``
    (True while OPEN), so the two names do not disagree."""

    def __get__(self, obj: SyncWebSocket | None, cls: type[SyncWebSocket] | None = None) -> Any:
        if obj is None:
            assert cls is not None
            return cls._dial
        return obj._state == OPEN


class SyncWebSocket(Connection):
    """One client connection; see the module docstring.  Build it with
    ``connect()`` or ``SyncWebSocket.open(url)``; on a connection, ``open``
    is Connection's (True while OPEN, like ``is_open``).

    Names shared with Connection mean what they mean there: ``subprotocol``,
    ``closed``, ``headers`` (``response_headers`` is it), ``close_reason``
    (``recv_reason``), ``sent_close_code`` (``sent_code``); ``close_code`` is
    the core's code received, settled at the end when none came (see the
    module docstring).

    Connection's hooks implemented here: ``_write`` (``_send_bytes``),
    ``_writelines``, ``_write_eof``, ``_close_transport``, ``_abort_transport``,
    ``_message_callback``, ``_on_ping``, ``_on_pong``, ``_on_close_frame``,
    ``_input_failed``, ``_on_closed``, ``_closed_error``, ``_peername``; and
    ``_arm``/``_disarm`` take the connection's lock (a user thread may close
    while the reader advances the timers).
    """

    __slots__ = (
        "sock", "on_message", "on_close", "recv_code", "error",
        "bytes_in", "bytes_out", "messages_in", "messages_out", "pings_answered",
        "_lock", "_messages", "_pings", "_reader", "_user_closed", "__weakref__",
    )

    open = _OpenAttr()

    def __init__(self, sock: socket.socket, *, max_size: int | None = 1048576, leftover: bytes = b"",
                 subprotocol: str | None = None, response_headers: Headers | bytes | None = None,
                 deflate: Any = None) -> None:
        Connection.__init__(self, _options(max_size), True, _CLOCK)
        self.sock = sock
        self.subprotocol = subprotocol
        # (packed: unpacked on first read, smaller)
        self._headers = response_headers.pack() if isinstance(response_headers, Headers) else response_headers
        # The send lock: a background reader answers pings (and closes) while
        # the user sends; reentrant, since a send holds it around the core's write.
        self._lock = threading.RLock()
        self._messages: deque[str | bytes] | None = None  # made on the first queued message
        self._pings: dict[bytes, list[Any]] | None = None  # our PING payload -> [Event or None, PONG time]
        self._reader: Any = None    # the background reader (a Thread or a greenlet), once started
        self.on_message: Callable[[str | bytes], object] | None = None
        self.on_close: Callable[[SyncWebSocket], object] | None = None
        self.recv_code: int | None = None  # code of the CLOSE frame received (None: none yet)
        self.error: BaseException | None = None  # the exception that ended the connection, if any
        self.bytes_in = len(leftover)
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.pings_answered = 0
        self._user_closed = False   # close() was called while OPEN (connect_forever stops)
        if deflate is not None:  # DeflateParams from the 101 (client_accept)
            self._use_deflate(deflate)
        self._open(leftover)

    # ------------------------------------------------------------------ open
    @classmethod
    def _dial(cls, url: str, *, subprotocols: Sequence[str] | None = None,
              headers: Mapping[str, str] | Iterable[tuple[str, str]] = (), origin: str | None = None,
              timeout: float = 10.0, source_address: str | tuple[str, int] | None = None,
              ssl: ssl_module.SSLContext | Literal[True] | None = None, max_size: int | None = 1048576,
              user_agent: str | None = "fastws-sync", compression: str | None = "deflate",
              proxy: str | Literal[True] | None = True, **deflate_options: Any) -> SyncWebSocket:
        """Connect, run the opening handshake, return the open connection.

        ``source_address``: an IP to bind before connecting (port picked at
        connect time with IP_BIND_ADDRESS_NO_PORT), or an (ip, port) pair.
        ``headers``: extra request headers, a dict or (name, value) pairs.
        ``timeout`` bounds the TCP connect and the handshake together.
        ``compression``: ``"deflate"`` (the default, as ``fastws.connect``
        and browsers) offers permessage-deflate with ``fastws.connect``'s
        offer, None offers nothing; ``deflate_options`` are its
        permessage-deflate options (``client_max_window_bits``, ...).
        ``proxy``: True (from the environment: ``HTTPS_PROXY``, ``ALL_PROXY``,
        ``NO_PROXY``, ...), a proxy URL (``http://user:pass@host:port``,
        ``socks5://...``), or None (connect directly); see fastws.proxy.
        """
        secure, host, port, resource = parse_uri(url)
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        dopts = None
        if compression is not None or deflate_options:  # checked even with compression=None
            unknown = set(deflate_options) - _DEFLATE_OPTIONS
            if unknown:
                raise TypeError(f"unexpected options: {', '.join(sorted(unknown))}")
            dopts = _deflate_options(max_size, compression, tuple(sorted(deflate_options.items())))
            if dopts.compression is not None:
                headers = [("Sec-WebSocket-Extensions", client_offer(dopts)), *(headers or ())]
            else:
                dopts = None
        key = handshake.make_key()
        request = handshake.build_request(host, port, resource, key, secure=secure,
                                          subprotocols=subprotocols, origin=origin,
                                          extra_headers=list(headers or ()), user_agent=user_agent)
        deadline = time.monotonic() + timeout
        if proxy is True:
            proxy = proxy_for(secure, host, port)
        if proxy is not None:
            sock = open_tunnel_sync(parse_proxy(proxy), host, port, deadline,
                                    functools.partial(_open_socket, source_address=source_address), user_agent)
        else:
            sock = _open_socket(host, port, timeout, source_address)
        try:
            if secure:
                if ssl is None or ssl is True:
                    ssl = ssl_module.create_default_context()
                # (through a proxy: TLS with the server, inside the tunnel)
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = ssl.wrap_socket(sock, server_hostname=host)
            sock.sendall(request)
            reader = ResponseReader()
            response: Response | None = None
            while response is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InvalidResponse(f"{HANDSHAKE_TIMED_OUT} {timeout} s")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(READ_SIZE)
                except socket.timeout:
                    raise InvalidResponse(f"{HANDSHAKE_TIMED_OUT} {timeout} s") from None
                if not data:
                    response = reader.eof()  # raises unless a body ran until close
                    handshake.check_response(response, key, subprotocols)
                    raise InvalidResponse(CLOSED_DURING_HANDSHAKE)
                response = reader.feed(data)
            chosen = handshake.check_response(response, key, subprotocols,
                                              extensions_offered=dopts is not None)
            params = handshake.response_deflate(response, dopts) if dopts is not None else None
            sock.settimeout(None)
            return cls(sock, max_size=max_size, leftover=reader.leftover or b"", subprotocol=chosen,
                       response_headers=cast(Headers, response.headers), deflate=params)  # (a reader's: a Headers)
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------ attributes
    @property
    def is_open(self) -> bool:
        return self._state == OPEN

    @property
    def response_headers(self) -> Headers:
        """The handshake response's headers: Connection's ``headers``."""
        return self.headers

    @property
    def recv_reason(self) -> str:
        """The reason of the CLOSE frame received: Connection's ``close_reason``."""
        return self.close_reason

    @property
    def sent_code(self) -> int | None:
        """The code of the CLOSE frame sent (None: none yet; 1005: an empty
        one): Connection's ``sent_close_code``."""
        return self.sent_close_code

    def _peername(self) -> Any:
        try:
            return self.sock.getpeername()
        except OSError:
            return None

    # ------------------------------------------------------------ I/O hooks
    def _send_bytes(self, data: bytes) -> None:
        """``_write``: the whole frame, under the send lock. A broken socket
        ends the connection (the callers see CLOSED); it never raises."""
        try:
            with self._lock:
                self.sock.sendall(data)
        except OSError as exc:
            self._lost(exc)
            return
        self.bytes_out += len(data)

    _write = _send_bytes  # Connection's I/O method (a method: no bound method kept per connection)

    def _writelines(self, parts: Iterable[bytes]) -> None:
        self._send_bytes(b"".join(parts))

    def _write_eof(self) -> None:
        if isinstance(self.sock, ssl_module.SSLSocket):
            self._close_transport()  # TLS has no half-close (as asyncio's transport)
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _close_transport(self) -> None:
        # Nothing is buffered (sendall): closing and aborting are the same.
        self._abort_transport()

    def _abort_transport(self) -> None:
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass
        self._connection_lost()

    def _lost(self, exc: BaseException | None) -> None:
        """The socket failed (``exc``) or reached its end (None)."""
        if self._state != CLOSED:
            if exc is not None and self.error is None:
                self.error = exc
            self._abort_transport()

    def _arm(self, deadline: float) -> None:
        if self._state != CLOSED:
            with self._lock:
                driver = self._driver
                if driver is _CLOCK:
                    driver = self._driver = ManualDriver(time.monotonic, 1.0, 1)
                driver.arm(self, deadline)

    def _disarm(self) -> None:
        if self.armed:
            with self._lock:
                self._driver.cancel(self)

    def _advance(self) -> None:
        if self.armed:
            with self._lock:
                self._driver.advance()

    # ------------------------------------------------------------ core hooks
    def _message_callback(self) -> Callable[[str | bytes], None]:
        return self._on_data

    def _on_data(self, message: str | bytes) -> None:
        self.messages_in += 1
        if self._state != OPEN and self._reader is None:
            return  # read by close() (or after it): dropped
        hook = self.on_message
        if hook is not None:
            hook(message)
        else:
            if self._messages is None:
                self._messages = deque()
            self._messages.append(message)

    def _on_ping(self, payload: bytes) -> None:
        if self._state == OPEN:  # the core has written the PONG
            self.pings_answered += 1

    def _on_pong(self, payload: bytes) -> None:
        pings = self._pings
        if pings:
            entry = pings.pop(payload, None)
            if entry is not None:
                entry[1] = time.monotonic()
                if entry[0] is not None:
                    entry[0].set()

    def _on_close_frame(self, payload: bytes) -> None:
        Connection._on_close_frame(self, payload)
        self.recv_code = self.close_code

    def _input_failed(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        Connection._input_failed(self, exc)

    def _on_closed(self) -> None:
        if self.recv_code is None:
            # No close frame came: the code sent if we failed the connection, else 1006.
            sent = self.sent_close_code
            self.close_code = sent if sent is not None and self.error is not None else CLOSE_ABNORMAL
        pings = self._pings
        if pings:
            for entry in pings.values():
                if entry[0] is not None:
                    entry[0].set()
            pings.clear()
        hook = self.on_close
        if hook is not None:
            hook(self)

    def _closed_error(self) -> ConnectionClosed:
        """The ConnectionClosed to raise: the code received (1006 if no close
        frame came), the code sent as ``sent_code``."""
        code = self.recv_code
        reason = self.close_reason
        error = self.error
        if code is None:
            code = CLOSE_ABNORMAL
            if error is not None:
                reason = str(getattr(error, "reason", None) or error)
                if isinstance(error, ProtocolError) and self.sent_close_code is not None:
                    reason = f"protocol error, sent {self.sent_close_code}: {reason}"
        return connection_closed(code, reason, self.sent_close_code)

    _closed_exc = _closed_error  # the name fastws.locust used

    def _handshake_bytes(self, data: bytes) -> None:
        raise RuntimeError("the opening handshake is done before the connection is made")

    # ------------------------------------------------------------ reading
    def _read_once(self, until: float | None) -> None:
        """Read what the socket has and feed it to the core, waiting at most
        until ``until`` (None: no limit) or the connection's next timer; fire
        the timers that are due."""
        sock = self.sock
        wake = self.deadline
        if until is not None and until < wake:
            wake = until
        if wake == INF:
            sock.settimeout(None)
        else:
            remaining = wake - time.monotonic()
            if remaining <= 0:
                self._advance()
                return
            sock.settimeout(remaining)
        try:
            data = sock.recv(READ_SIZE)
        except socket.timeout:
            self._advance()
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self.bytes_in += len(data)
        self.data_received(data)
        if self.deadline <= time.monotonic():
            self._advance()

    def _finish_closing(self, until: float | None) -> None:
        """CLOSING: read (dropping messages) until the server ends TCP, the
        close timeout fires or ``until`` passes (then drop the socket)."""
        while self._state != CLOSED:
            if until is not None and time.monotonic() >= until:
                self._abort_transport()
                return
            self._read_once(until)

    # ----------------------------------------------------------------- send
    # (an int, where the async Connection.send says whether to wait: the APIs differ on purpose)
    def send(self, data: str | bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        """Send a text (str) or binary (bytes-like) message; returns the
        number of bytes written (frame header included)."""
        with self._lock:
            before = self.bytes_out
            Connection.send(self, data)  # raises ConnectionClosed unless OPEN
            written = self.bytes_out - before
        if self._state == CLOSED:  # the write failed
            raise self._closed_error()
        self.messages_out += 1
        return written

    # ----------------------------------------------------------------- recv
    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (str or bytes).  Raises ``TimeoutError`` after
        ``timeout`` seconds (None: wait forever), ``ConnectionClosed`` once
        the connection is closed and no message is left."""
        messages = self._messages
        if messages:
            return self._pop()
        if self._reader is not None:
            raise RuntimeError("a background reader is running: messages go to on_message")
        until = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            state = self._state
            if state == CLOSED:
                raise self._closed_error()
            if state == CLOSING:  # no message can come any more
                self._finish_closing(until)
                continue
            if until is not None and time.monotonic() >= until:
                raise TimeoutError("timed out")
            self._read_once(until)
        return self._pop()

    def _pop(self) -> str | bytes:
        messages = self._messages
        assert messages is not None
        message = messages.popleft()
        if not messages:
            self._messages = None  # an empty deque holds 600+ bytes
        return message

    # ----------------------------------------------------------------- ping
    def ping(self, timeout: float = 10.0) -> float:
        """Send a PING and wait for its PONG; return the round trip in seconds.

        Data messages read meanwhile are queued for ``recv`` (or go to
        ``on_message`` when a background reader runs).  Raises TimeoutError or
        ConnectionClosed."""
        if self._state != OPEN:
            raise self._closed_error()
        payload = os.urandom(4)
        reader = self._reader
        entry: list[Any] = [threading.Event() if reader is not None else None, None]
        if self._pings is None:
            self._pings = {}
        self._pings[payload] = entry
        until = time.monotonic() + timeout
        try:
            start = time.monotonic()
            self.send_ping(payload)
            if reader is not None:
                if not entry[0].wait(timeout):
                    raise TimeoutError(f"no pong within {timeout} s")
            else:
                while entry[1] is None:
                    if self._state != OPEN:
                        self._finish_closing(until)
                        break
                    if time.monotonic() >= until:
                        raise TimeoutError(f"no pong within {timeout} s")
                    self._read_once(until)
            if entry[1] is None:
                raise self._closed_error()
            rtt: float = entry[1] - start
            return rtt
        finally:
            if self._pings:
                self._pings.pop(payload, None)

    # ---------------------------------------------------------------- close
    def close(self, code: int | None = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """Run the closing handshake: send CLOSE, wait up to ``timeout`` for
        the server's CLOSE and the end of TCP (messages still arriving are
        dropped), then drop the socket if it is still there."""
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            self._user_closed = True
        if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL):
            code = None  # never sent on the wire (RFC 6455 7.4.1): an empty CLOSE
        Connection.close(self, code, reason)  # validates the code; OPEN: sends CLOSE
        reader = self._reader
        if reader is not None:
            if reader is not _current():
                reader.join(timeout)  # the reader sees the end
                if self._state != CLOSED:
                    self._abort_transport()
            return  # called from the reader (on_message): it reads the rest
        self._finish_closing(time.monotonic() + timeout)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        if self._state != CLOSED:
            self._abort_transport()

    # ------------------------------------------------------- reader thread
    def start_reader(self, on_message: Callable[[str | bytes], object] | None = None,
                     spawn: Callable[[Callable[[], None]], Any] | None = None) -> Any:
        """Read in the background from now on, handing every message to
        ``on_message`` (queued messages are handed over first).  ``spawn``
        starts the loop (default: gevent.spawn when gevent has patched the
        socket module, else a daemon thread); the loop ends when the
        connection closes."""
        if on_message is not None:
            self.on_message = on_message
        if self.on_message is None:
            raise ValueError("start_reader needs an on_message callback")
        hook = self.on_message
        while self._messages:
            hook(self._messages.popleft())
        self._messages = None
        if spawn is None:
            spawn = _default_spawn()
        self._reader = True  # recv() refuses from now on
        self._reader = spawn(self._read_loop)
        return self._reader

    def _read_loop(self) -> None:
        while self._state != CLOSED:
            self._read_once(None)


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def _default_spawn() -> Callable[[Callable[[], None]], Any]:
    if _gevent_active():
        import gevent
        spawn_greenlet: Callable[[Callable[[], None]], Any] = gevent.spawn
        return spawn_greenlet

    def spawn(fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t
    return spawn


def _current() -> Any:
    if _gevent_active():
        import gevent
        return gevent.getcurrent()
    return threading.current_thread()


def _open_socket(host: str, port: int, timeout: float,
                 source_address: str | tuple[str, int] | None) -> socket.socket:
    if isinstance(source_address, str):
        source_address = (source_address, 0)
    try:
        # A numeric address needs no resolver (under gevent, getaddrinfo goes
        # through a thread pool: most of the CPU of a connect).
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        candidates: list[tuple[Any, Any, int, str, Any]] = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    except ValueError:
        candidates = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, addr in candidates:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source_address is not None:
                if source_address[1] == 0 and family == socket.AF_INET:
                    try:
                        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass
                sock.bind(source_address)
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last if last is not None else OSError(f"cannot resolve {host!r}")


def connect(url: str, **kwargs: Any) -> SyncWebSocket:
    """``SyncWebSocket.open(url, **kwargs)``."""
    return SyncWebSocket._dial(url, **kwargs)


# --------------------------------------------------------------------------
# Reconnecting: the policy shared with fastws.connect's ``async for``
# --------------------------------------------------------------------------

#: Close codes after which a reconnecting client tries again: going away
#: (a server restarting), no close frame (the connection was lost), internal
#: error, service restart, try again later.
TRANSIENT_CLOSE_CODES = frozenset((1001, 1006, 1011, 1012, 1013))

#: How both clients word an opening handshake the server ended early (a
#: server going down or still starting): transient.
CLOSED_DURING_HANDSHAKE = "connection closed during the opening handshake"
#: How the sync client words a handshake that timed out (the async client
#: raises TimeoutError): transient.
HANDSHAKE_TIMED_OUT = "no complete handshake response within"


def is_transient(exc: BaseException) -> bool:
    """Whether a reconnecting client retries after ``exc``: a refused, reset
    or timed-out connection, a handshake the server ended early, HTTP 5xx or
    429, and a connection closed with a code of TRANSIENT_CLOSE_CODES; a
    proxy that cannot be reached, times out, ends early, answers 5xx or 429,
    or (SOCKS) cannot reach the server. Not: other statuses (4xx), a bad
    response, TLS failures (certificate verification), an unknown host, a
    bad URI, a proxy that refuses (407, 403, SOCKS credentials or rules)."""
    if isinstance(exc, ConnectionClosed):
        return exc.code in TRANSIENT_CLOSE_CODES
    if isinstance(exc, ProxyError):
        return exc.transient  # a 5xx or 429 from the proxy, a SOCKS refusal, an early end
    if isinstance(exc, InvalidStatus):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, InvalidResponse):
        return str(exc).startswith((CLOSED_DURING_HANDSHAKE, HANDSHAKE_TIMED_OUT))
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError and socket.timeout too
        return True
    if isinstance(exc, (ssl_module.SSLError, ssl_module.CertificateError)):
        return False
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # a resolver that is down, not an unknown name
    return isinstance(exc, OSError)  # refused, reset, unreachable


def retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """The seconds a refusal asks to wait: the ``Retry-After`` header of an
    HTTP 429 or 503 answer to the upgrade (RFC 9110 10.2.3: delay-seconds
    or an HTTP-date), else None (no such header, another status, a value
    that is neither)."""
    if not isinstance(exc, InvalidStatus) or exc.status not in (429, 503):
        return None
    for name, value in exc.headers:
        if name.lower() != "retry-after":
            continue
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # no zone (or -0000): not an HTTP-date, which says GMT
            return None
        return max(0.0, when.timestamp() - now())
    return None


class Backoff:
    """Exponential backoff with jitter: the n-th delay (from 0) is
    ``min(maximum, initial * factor**n)`` times a random factor in
    ``(1 - jitter, 1]``, so delays grow (jitter < 1 - 1/factor keeps every
    step larger) and never exceed ``maximum``; ``reset()`` after a
    connection opened starts again from ``initial``."""

    __slots__ = ("initial", "maximum", "factor", "jitter", "attempt", "_random")

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 1.6,
                 jitter: float = 0.25, random: Callable[[], float] = random.random) -> None:
        if not 0 < initial <= maximum:
            raise ConfigError(f"backoff needs 0 < backoff_initial <= backoff_max, got {initial!r}, {maximum!r}")
        if not factor >= 1:
            raise ConfigError(f"backoff_factor must be >= 1, got {factor!r}")
        if not 0 <= jitter < 1:
            raise ConfigError(f"backoff_jitter must be in [0, 1), got {jitter!r}")
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self.attempt = 0
        self._random = random

    def next(self, at_least: float | None = None) -> float:
        """The next delay, in seconds. ``at_least`` (a server's Retry-After)
        raises it to that many seconds plus a random part of up to
        ``jitter`` of it (so that the clients a server refused together do
        not come back together), still at most ``maximum``."""
        base = self.initial * self.factor ** self.attempt
        if base >= self.maximum:
            base = self.maximum
        else:
            self.attempt += 1
        delay = float(base * (1.0 - self.jitter * self._random()))
        if at_least is not None and at_least > delay:
            delay = min(self.maximum, at_least * (1.0 + self.jitter * self._random()))
        return delay

    def reset(self) -> None:
        self.attempt = 0


def lost_error(ws: Any) -> ConnectionClosed | None:
    """After a connection that was handed out, now closed: None to stop (the
    client closed it, or the server closed with 1000 / no status), else the
    ConnectionClosed to judge: the code received, else the one sent when
    the client failed the connection, else 1006."""
    if ws._user_closed:
        return None
    code = ws.close_code
    if code is None:
        code = ws._closed_error().code
    if code in (CLOSE_NORMAL, CLOSE_NO_STATUS):
        return None
    return connection_closed(code, ws.close_reason, ws.sent_close_code)


def connect_forever(url: str, *, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                    backoff_factor: float = 1.6, backoff_jitter: float = 0.25,
                    sleep: Callable[[float], object] = time.sleep,
                    **kwargs: Any) -> Iterator[SyncWebSocket]:
    """``for ws in connect_forever(url, **kwargs)``: a new ``SyncWebSocket``
    (``connect(url, **kwargs)``) each time the previous one is lost.

    Connection attempts that fail transiently (``is_transient``) are retried
    after ``Backoff`` delays (``sleep`` waits them; at least the
    ``Retry-After`` of a 429 or 503, at most ``backoff_max``); anything else raises at
    once. When the loop resumes: a connection still open is closed (1000)
    and replaced at once; one the caller closed, or the server closed with
    1000, ends the loop; one closed with a code of TRANSIENT_CLOSE_CODES is
    replaced after a backoff delay; any other code raises its
    ConnectionClosed. Leaving the loop (break, an exception) closes the
    current connection once the generator is closed.
    """
    backoff = Backoff(backoff_initial, backoff_max, backoff_factor, backoff_jitter)
    while True:
        try:
            ws = SyncWebSocket.open(url, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            sleep(backoff.next(retry_after(exc)))
            continue
        backoff.reset()
        replace = False
        try:
            yield ws
        finally:  # also when the generator is closed
            if ws._state == OPEN:
                ws.close()
                replace = True
        if replace:
            continue
        if ws._state != CLOSED:
            ws.close()  # finish a closing handshake under way
        err = lost_error(ws)
        if err is None:
            return
        if err.code not in TRANSIENT_CLOSE_CODES:
            raise err
        sleep(backoff.next())
