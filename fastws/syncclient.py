"""A small synchronous WebSocket client: blocking sockets, no event loop.

It runs unchanged in a plain thread and in a gevent greenlet (locust
monkey-patches ``socket``, so every blocking call below yields to the other
greenlets); ``fastws.locust`` builds its ``WebSocketUser`` on it.  The frame
work is done by the fastws codec (``fastws_ext`` when built): every frame sent
is masked with a fresh random key (RFC 6455 5.3), every frame received is
parsed and UTF-8-checked by ``codec.FrameParser``.

::

    from fastws.syncclient import connect

    ws = connect("ws://127.0.0.1:8765")
    ws.send("hello")
    print(ws.recv(timeout=5))
    print("ping rtt", ws.ping())
    ws.close()

Behaviour:

- The opening handshake is validated (status 101, Upgrade, Connection,
  Sec-WebSocket-Accept, no unoffered extension or subprotocol: RFC 6455 4.1);
  a failure raises ``HandshakeError`` (``InvalidStatus`` for a non-101).
- PINGs are answered with PONGs as they are read; ``ping()`` measures the
  round trip to the matching PONG.
- A CLOSE from the server is answered with a CLOSE carrying the same code and
  the socket is closed; ``recv`` then raises ``ConnectionClosed`` with the
  server's code and reason.
- A protocol violation by the server (a masked frame, bad opcode, invalid
  UTF-8, a message over ``max_size``, ...) is answered with a CLOSE carrying
  the matching code (1002, 1007, 1009) and raises ``ConnectionClosedError``
  whose ``sent_code`` is that code (``code`` is 1006: no close frame came).
- The TCP connection ending without a CLOSE raises ``ConnectionClosedError``
  with code 1006.

Reading is done by whoever calls ``recv``/``ping``/``request``, or, after
``start_reader(on_message)``, by one background reader (a greenlet under
gevent, a daemon thread otherwise) that hands every message to
``on_message``; ``ping`` still works then (it waits for the reader to see the
PONG), ``recv`` does not.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import ssl as ssl_module
import struct
import threading
import time
from collections import deque

from . import handshake
from .codec import FrameParser, build_frame
from .constants import CLOSED, CLOSING, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, OPEN
from .handshake import parse_uri
from .http import ResponseReader
from .protocol import close_payload
from .exceptions import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    ConnectionClosed,
    InvalidResponse,
    ProtocolError,
    connection_closed,
)

__all__ = ["SyncWebSocket", "connect", "IP_BIND_ADDRESS_NO_PORT"]


# Linux: bind() to an address with port 0 without reserving a port; the port is
# picked at connect() time for the (src, dst) pair, so each source address gets
# its own ~28k ephemeral ports per destination.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

READ_SIZE = 65536


def _close_payload(code: int, reason: str) -> bytes:
    # 1005 / 1006 are never sent on the wire (RFC 6455 7.4.1): an empty CLOSE.
    return close_payload(None if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL) else code, reason)


class SyncWebSocket:
    """One client connection; see the module docstring.  Build it with
    ``connect()`` or ``SyncWebSocket.open()``."""

    __slots__ = (
        "sock", "subprotocol", "response_headers", "_parser", "_messages", "_state",
        "_send_lock", "_pongs", "_pong_waiters", "_reader", "on_message", "on_close",
        "recv_code", "recv_reason", "sent_code", "error", "bytes_in", "bytes_out",
        "messages_in", "messages_out", "pings_answered", "__weakref__",
    )

    def __init__(self, sock, *, max_size=1048576, leftover: bytes = b"", subprotocol=None,
                 response_headers=None):
        self.sock = sock
        self.subprotocol = subprotocol
        self.response_headers = response_headers
        self._parser = FrameParser(self._on_data, self._on_control, expect_masked=False,
                                         max_size=max_size)
        self._messages = None      # deque, made on the first queued message
        self._state = OPEN
        self._send_lock = threading.Lock()
        self._pongs = None          # PONG payloads seen while the caller reads itself
        self._pong_waiters = None   # payload -> [Event, receive time] while a reader runs
        self._reader = None
        self.on_message = None
        self.on_close = None
        self.recv_code = None       # code of the CLOSE frame received (None: none yet)
        self.recv_reason = ""
        self.sent_code = None       # code of the CLOSE frame sent (None: none yet)
        self.error = None           # the exception that ended the connection, if any
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.pings_answered = 0
        if leftover:
            self._feed(leftover)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, url: str, *, subprotocols=None, headers=(), origin=None, timeout: float = 10.0,
             source_address=None, ssl=None, max_size=1048576, user_agent="fastws-sync"):
        """Connect, run the opening handshake, return the open connection.

        ``source_address``: an IP to bind before connecting (port picked at
        connect time with IP_BIND_ADDRESS_NO_PORT), or an (ip, port) pair.
        ``headers``: extra request headers, a dict or (name, value) pairs.
        ``timeout`` bounds the TCP connect and the handshake together.
        """
        secure, host, port, resource = parse_uri(url)
        if hasattr(headers, "items"):
            headers = list(headers.items())
        key = handshake.make_key()
        request = handshake.build_request(host, port, resource, key, secure=secure,
                                          subprotocols=subprotocols, origin=origin,
                                          extra_headers=list(headers or ()), user_agent=user_agent)
        deadline = time.monotonic() + timeout
        sock = _open_socket(host, port, timeout, source_address)
        try:
            if secure:
                if ssl is None or ssl is True:
                    ssl = ssl_module.create_default_context()
                sock = ssl.wrap_socket(sock, server_hostname=host)
            sock.sendall(request)
            reader = ResponseReader()
            response = None
            while response is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InvalidResponse(f"no complete handshake response within {timeout} s")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(READ_SIZE)
                except socket.timeout:
                    raise InvalidResponse(f"no complete handshake response within {timeout} s") from None
                if not data:
                    response = reader.eof()  # raises unless a body ran until close
                    handshake.check_response(response, key, subprotocols)
                    raise InvalidResponse("connection closed during the opening handshake")
                response = reader.feed(data)
            chosen = handshake.check_response(response, key, subprotocols)
            sock.settimeout(None)
            return cls(sock, max_size=max_size, leftover=reader.leftover or b"", subprotocol=chosen,
                       response_headers=response.headers)
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------ properties
    @property
    def is_open(self) -> bool:
        return self._state == OPEN

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    @property
    def close_code(self):
        """The code that ended the connection: the one received, else the one
        sent (a protocol error), else 1006; None while open."""
        if self._state != CLOSED:
            return None
        if self.recv_code is not None:
            return self.recv_code
        if self.sent_code is not None and self.error is not None:
            return self.sent_code
        return CLOSE_ABNORMAL

    # ----------------------------------------------------------------- send
    def send(self, data) -> int:
        """Send a text (str) or binary (bytes-like) message; returns the
        number of bytes written (frame header included)."""
        if self._state != OPEN:
            raise self._closed_exc()
        frame = build_frame(OP_TEXT if isinstance(data, str) else OP_BINARY, data, mask=True)
        self._write(frame)
        self.messages_out += 1
        return len(frame)

    def _write(self, frame: bytes) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(frame)
        except OSError as exc:
            self._lost(exc)
            raise self._closed_exc() from None
        self.bytes_out += len(frame)

    # ----------------------------------------------------------------- recv
    def recv(self, timeout=None):
        """The next message (str or bytes).  Raises ``TimeoutError`` after
        ``timeout`` seconds (None: wait forever), ``ConnectionClosed`` once
        the connection is closed and no message is left."""
        if self._messages:
            return self._messages.popleft()
        if self._reader is not None:
            raise RuntimeError("a background reader is running: messages go to on_message")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._messages:
            if self._state == CLOSED:
                raise self._closed_exc()
            self._read_once(deadline)
        return self._messages.popleft()

    def _read_once(self, deadline) -> None:
        """Read what the socket has (waiting until ``deadline``) and parse it."""
        sock = self.sock
        if deadline is None:
            sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(remaining)
        try:
            data = sock.recv(READ_SIZE)
        except socket.timeout:
            raise TimeoutError("timed out") from None
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self._feed(data)

    def _feed(self, data) -> None:
        self.bytes_in += len(data)
        try:
            self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)

    # ------------------------------------------------------------ callbacks
    def _on_data(self, message) -> None:
        self.messages_in += 1
        hook = self.on_message
        if hook is not None:
            hook(message)
        else:
            if self._messages is None:
                self._messages = deque()
            self._messages.append(message)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            if self._state == OPEN:
                try:
                    self._write(build_frame(OP_PONG, payload, mask=True))
                    self.pings_answered += 1
                except ConnectionClosed:
                    pass
        elif opcode == OP_PONG:
            now = time.monotonic()
            waiters = self._pong_waiters
            if waiters is not None and payload in waiters:
                entry = waiters.pop(payload)
                entry[1] = now
                entry[0].set()
            elif self._pongs is not None:
                self._pongs[payload] = now
        else:  # CLOSE
            if len(payload) >= 2:
                self.recv_code = struct.unpack("!H", payload[:2])[0]
                self.recv_reason = payload[2:].decode("utf-8")
            else:
                self.recv_code = CLOSE_NO_STATUS
            if self.sent_code is None:
                # RFC 6455 5.5.1: answer with a CLOSE, echoing the code (an
                # empty CLOSE is answered with an empty one).
                if self.recv_code == CLOSE_NO_STATUS:
                    reply = b""
                else:
                    self.sent_code = self.recv_code
                    reply = _close_payload(self.recv_code, "")
                try:
                    with self._send_lock:
                        self.sock.sendall(build_frame(OP_CLOSE, reply, mask=True))
                except OSError:
                    pass
            self._finish()

    def _fail(self, exc: ProtocolError) -> None:
        """The server broke the protocol: send CLOSE with the matching code, drop."""
        self.error = exc
        if self._state == OPEN:
            self.sent_code = exc.code
            try:
                with self._send_lock:
                    self.sock.sendall(build_frame(OP_CLOSE, _close_payload(exc.code, exc.reason), mask=True))
            except OSError:
                pass
        self._finish()

    def _lost(self, exc) -> None:
        if self._state != CLOSED:
            if exc is not None and self.error is None:
                self.error = exc
            self._finish()

    def _finish(self) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSED
        try:
            self.sock.close()
        except OSError:
            pass
        if self._pong_waiters:
            for entry in self._pong_waiters.values():
                entry[0].set()
            self._pong_waiters.clear()
        hook = self.on_close
        if hook is not None:
            hook(self)

    def _closed_exc(self) -> ConnectionClosed:
        code = self.recv_code if self.recv_code is not None else CLOSE_ABNORMAL
        reason = self.recv_reason
        if self.error is not None and self.recv_code is None:
            reason = str(getattr(self.error, "reason", None) or self.error)
            if isinstance(self.error, ProtocolError) and self.sent_code is not None:
                reason = f"protocol error, sent {self.sent_code}: {reason}"
        return connection_closed(code, reason, self.sent_code)

    # ----------------------------------------------------------------- ping
    def ping(self, timeout: float = 10.0) -> float:
        """Send a PING and wait for its PONG; return the round trip in seconds.

        Data messages read meanwhile are queued for ``recv`` (or go to
        ``on_message`` when a background reader runs).  Raises TimeoutError or
        ConnectionClosed."""
        if self._state != OPEN:
            raise self._closed_exc()
        payload = os.urandom(4)
        deadline = time.monotonic() + timeout
        if self._reader is not None:
            if self._pong_waiters is None:
                self._pong_waiters = {}
            entry = [threading.Event(), None]
            self._pong_waiters[payload] = entry
            start = time.monotonic()
            self._write(build_frame(OP_PING, payload, mask=True))
            if not entry[0].wait(timeout):
                self._pong_waiters.pop(payload, None)
                raise TimeoutError(f"no pong within {timeout} s")
            if entry[1] is None:
                raise self._closed_exc()
            return entry[1] - start
        if self._pongs is None:
            self._pongs = {}
        start = time.monotonic()
        self._write(build_frame(OP_PING, payload, mask=True))
        try:
            while payload not in self._pongs:
                if self._state == CLOSED:
                    raise self._closed_exc()
                self._read_once(deadline)
            return self._pongs.pop(payload) - start
        finally:
            self._pongs = None

    # ---------------------------------------------------------------- close
    def close(self, code: int = CLOSE_NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """Run the closing handshake: send CLOSE, wait up to ``timeout`` for
        the server's CLOSE (messages still arriving are dropped), close the socket."""
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            payload = _close_payload(code, reason)  # validates the code before the state changes
            self._state = CLOSING
            self.sent_code = code
            try:
                with self._send_lock:
                    self.sock.sendall(build_frame(OP_CLOSE, payload, mask=True))
            except OSError as exc:
                self._lost(exc)
                return
        if self._reader is not None and self._reader is not _current():
            # the reader sees the server's CLOSE and finishes
            self._reader.join(timeout)
            if self._state != CLOSED:
                self._finish()
            return
        deadline = time.monotonic() + timeout
        self.on_message = _drop
        try:
            while self._state != CLOSED:
                self._read_once(deadline)
        except TimeoutError:
            self._finish()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self._finish()

    # ------------------------------------------------------- reader thread
    def start_reader(self, on_message=None, spawn=None):
        """Read in the background from now on, handing every message to
        ``on_message`` (queued messages are handed over first).  ``spawn``
        starts the loop (default: gevent.spawn when gevent has patched the
        socket module, else a daemon thread); the loop ends when the
        connection closes."""
        if on_message is not None:
            self.on_message = on_message
        if self.on_message is None:
            raise ValueError("start_reader needs an on_message callback")
        while self._messages:
            self.on_message(self._messages.popleft())
        self._messages = None
        if spawn is None:
            spawn = _default_spawn()
        self._reader = True  # recv() refuses from now on
        self._reader = spawn(self._read_loop)
        return self._reader

    def _read_loop(self) -> None:
        while self._state != CLOSED:
            self._read_once(None)


def _drop(message) -> None:
    pass


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def _default_spawn():
    if _gevent_active():
        import gevent
        return gevent.spawn

    def spawn(fn):
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t
    return spawn


def _current():
    if _gevent_active():
        import gevent
        return gevent.getcurrent()
    return threading.current_thread()


def _open_socket(host: str, port: int, timeout: float, source_address):
    if isinstance(source_address, str):
        source_address = (source_address, 0)
    try:
        # A numeric address needs no resolver (under gevent, getaddrinfo goes
        # through a thread pool: most of the CPU of a connect).
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        candidates = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    except ValueError:
        candidates = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    last = None
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


def connect(url: str, **kwargs) -> SyncWebSocket:
    """``SyncWebSocket.open(url, **kwargs)``."""
    return SyncWebSocket.open(url, **kwargs)
