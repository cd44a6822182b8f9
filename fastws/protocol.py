"""The WebSocket connection core: RFC 6455 after the handshake, sans-I/O.

``Connection`` is one connection's state machine (CONNECTING, OPEN, CLOSING,
CLOSED): it answers pings, runs the closing handshake (RFC 6455 7), turns
every protocol error into its close frame and decides keepalive pings and
timeouts. Bytes come in through ``data_received`` (the codec's
``ConnectionCore``) into the frame parser; bytes go out through ``_write``
and four more I/O methods a subclass provides (``_writelines``,
``_close_transport``, ``_abort_transport``, ``_write_eof``). Its clock and
timers are a driver given to it (``fastws.timers``): ``StreamConnection``
(fastws/transport.py) plugs in an asyncio transport and the loop's wheel,
tests plug in lists and a fake clock, the blocking client a socket.

See docs/design/protocol.md.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from logging import DEBUG, ERROR

from .codec import ConnectionCore, FrameParser, build_frame, build_header, conn_send, lone_control
from .constants import (
    CLOSED,
    CLOSING,
    CONNECTING,
    LARGE_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    RSV1,
    STATE_NAMES,
)
from .deflate import PerMessageDeflate
from .exceptions import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    ConfigError,
    ConnectionClosed,
    ProtocolError,
    connection_closed,
    is_valid_close_code,
)
from .http import Headers

__all__ = ["Connection", "close_payload", "RARE_FIELDS"]

logger = logging.getLogger("fastws.protocol")

INF = float("inf")


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame (RFC 6455 5.5.1), reason cut to fit 125 bytes."""
    if code is None:
        return b""
    if not is_valid_close_code(code):
        raise ConfigError(f"close code {code} may not be sent (RFC 6455 7.4)")
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        # cut on a code point boundary so the reason stays valid UTF-8
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


def _routine(conn, event: str, msg: str, *args) -> None:
    """A routine end of a connection (one of fastws.metrics.EVENTS): logged at
    DEBUG, counted in the server's metrics (``_ka_counters``, on the server)."""
    counters = conn._ka_counters
    if counters is not None:
        counters.event(event)
    if logger.isEnabledFor(DEBUG):
        logger.debug(msg, *args)


def _log_error(conn, kind: str, msg: str, *args, exc_info=None) -> None:
    """An error on one connection: rate-limited per kind on the server."""
    counters = conn._ka_counters
    if counters is None:
        logger.error(msg, *args, exc_info=exc_info)
    else:
        counters.log.log(logger, ERROR, kind, msg, *args, exc_info=exc_info)


# The fields of a connection that almost every connection leaves at their
# defaults while it is open, with those defaults.
_RARE_DEFAULTS = {"close_code": None, "close_reason": "", "sent_close_code": None, "subprotocol": None,
                  "user": None, "_deflate": None, "_held_pong": None, "_messages_base": 0, "_messages_seen": 0,
                  "_reading_paused": False, "_started": None}


class _Rare:
    """The fields of ``_RARE_DEFAULTS``: made at the first assignment of
    something else than a default (``_RareField``), so that an idle connection
    holds one None for all of them. See docs/design/memory.md#the-connection-object."""

    __slots__ = tuple(_RARE_DEFAULTS)

    def __init__(self) -> None:
        for name, value in _RARE_DEFAULTS.items():
            setattr(self, name, value)

    def at_defaults(self) -> bool:
        """Whether every field is back at its default (the side object can go)."""
        for name, default in _RARE_DEFAULTS.items():
            value = getattr(self, name)
            if value is not default and (type(value) is not type(default) or value != default):
                return False
        return True


class _RareField:
    """A connection attribute kept in its ``_rare`` side object: reads give
    the default while there is none; assigning the default makes none, and
    drops the side object once all of its fields are back at their defaults."""

    __slots__ = ("name", "default", "member")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default
        self.member = getattr(_Rare, name)  # the side object's slot

    def __get__(self, conn: Any, owner: Any = None) -> Any:
        if conn is None:
            return self
        rare = conn._rare
        return self.default if rare is None else self.member.__get__(rare)

    def __set__(self, conn: Any, value: Any) -> None:
        rare = conn._rare
        if rare is None:
            if value is self.default:  # (None, False, 0, "": singletons in CPython)
                return
            rare = conn._rare = _Rare()
        self.member.__set__(rare, value)
        if value is self.default and rare.at_defaults():
            conn._rare = None  # e.g. _started, cleared once the handshake is logged


# name -> its descriptor, for the classes that have the field (Connection;
# user: ServerConnection; _reading_paused: StreamConnection)
RARE_FIELDS = {name: _RareField(name, default) for name, default in _RARE_DEFAULTS.items()}


class Connection(ConnectionCore):
    """One WebSocket connection: protocol state, control frames, closing handshake.

    The methods an application calls (``send``, ``ping``, ``close``, ...) are the
    low-level, synchronous API; ``fastws.websocket.WebSocket`` adds the
    ``async`` one on top.
    """

    # The keepalive fields (_keepalive_at, _ping_sent_at, _write_deadline,
    # _idle_at, _last_frames, _is_client, _pong_hook, _ka_counters) and the
    # flow-control flag _paused_writing are the base class's (codec.ConnectionCore).
    # close_code, close_reason, sent_close_code, subprotocol, _deflate,
    # _held_pong, _messages_base and _messages_seen (and ServerConnection's
    # user, StreamConnection's _reading_paused) are kept in the _rare side
    # object, made only when one of them is set to something else than its
    # default (_RareField).
    __slots__ = (
        "_parser",
        "_opts",
        "_state",
        "_app",
        "_driver",
        "path",
        "_headers",
        "_rare",
    )
    if TYPE_CHECKING:  # what they hold (the descriptors below give these types)
        close_code: int | None
        close_reason: str
        sent_close_code: int | None
        subprotocol: str | None
        _deflate: Any
        _held_pong: bytes | None
        _messages_base: int
        _messages_seen: int
    else:
        close_code = RARE_FIELDS["close_code"]
        close_reason = RARE_FIELDS["close_reason"]
        sent_close_code = RARE_FIELDS["sent_close_code"]
        subprotocol = RARE_FIELDS["subprotocol"]
        _deflate = RARE_FIELDS["_deflate"]  # fastws.deflate.PerMessageDeflate once negotiated
        _held_pong = RARE_FIELDS["_held_pong"]
        _messages_base = RARE_FIELDS["_messages_base"]
        _messages_seen = RARE_FIELDS["_messages_seen"]

    # What a new connection holds before __init__: ConnectionCore sets these
    # fields when the object is made (in C in the extension build), so
    # __init__ sets only what differs (merged along the MRO: subclasses add
    # theirs). Only shared, immutable values.
    _slot_defaults = {
        "_parser": None,
        "_opts": None,
        "_state": CONNECTING,
        "_app": None,
        "_driver": None,  # now(), arm(entry, deadline), cancel(entry): fastws.timers
        "path": None,
        "_headers": None,  # bytes or int (Headers.pack) until first read: far smaller
        # The side object of the fields that keep their defaults on almost
        # every connection (_Rare); in it: close_code, close_reason,
        # sent_close_code, subprotocol, user, _deflate, _messages_base (messages counted
        # by parsers already dropped; kept only with idle_timeout, the one
        # reader), _messages_seen, and _held_pong: the payload of the latest
        # ping that came while writing was paused, answered on drain (RFC 6455
        # 5.5.3); not None also means reading is held until then (_hold_reading).
        "_rare": None,
    }

    _headers: bytes | int | Headers | None  # (typed here: the value is a _slot_defaults one)

    def __init__(self, opts, is_client: bool, driver=None):
        # No super().__init__(): TimerEntry sets its fields before __init__
        # and nothing after it in the MRO has one (it saves a super object and
        # a walk of the MRO per connection; figure: docs/performance.md).
        # Everything else is a _slot_defaults field.
        self._opts = opts
        if is_client:
            self._is_client = True
            self._general_send = True
        if driver is not None:
            self._driver = driver

    # ------------------------------------------------------------ attributes
    @property
    def headers(self) -> Headers:
        """The HTTP headers of the handshake (the request's on the server, the
        response's on the client), as a fastws.Headers."""
        headers = self._headers
        if type(headers) is bytes or type(headers) is int:  # packed (Headers.pack)
            headers = self._headers = Headers.unpack(headers)
        return headers

    @property
    def remote_address(self) -> Any:
        """The peer's address (read from the transport: nothing is stored)."""
        return self._peername()

    def _peername(self) -> Any:
        return None

    # ------------------------------------------------------------ state
    @property
    def state(self) -> str:
        return STATE_NAMES[self._state]

    @property
    def open(self) -> bool:
        return self._state == OPEN

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    def _closed_error(self) -> ConnectionClosed:
        """The ConnectionClosed exception describing how this connection ended."""
        code = self.close_code
        if code is None:
            code = self.sent_close_code if self.sent_close_code is not None else CLOSE_ABNORMAL
        return connection_closed(code, self.close_reason, self.sent_close_code)

    # ------------------------------------------------------------ opening
    def _open(self, leftover: bytes = b"") -> None:
        """The handshake succeeded: arm keepalive and parse what already came.

        The parser is created when bytes arrive (``_make_parser``) and dropped
        again when the connection is idle (``on_timer``), so an idle connection
        holds no parser, no buffer and no bound callbacks.
        """
        first = self._open_at(self._driver.now())  # (codec.ConnectionCore: OPEN, the clocks)
        if first != INF:
            self._arm(first)
        else:
            self._disarm()
        if leftover:
            self._feed(leftover)

    def _message_callback(self):
        """Where the parser delivers data messages (the API level decides)."""
        raise NotImplementedError

    def _make_parser(self, limiter=None):
        """The parser for the bytes arriving now (``limiter``: the rate
        limits' state, which the parser counts each data message with)."""
        parser = self._parser = FrameParser(
            self._message_callback(),
            self._on_control,
            expect_masked=not self._is_client,
            max_size=self._opts.max_size,
            inflate=None if self._deflate is None else self._deflate.inflate,
            limiter=limiter,
        )
        self._last_frames = 0
        return parser

    def _idle_parser(self) -> bool:
        """Drop the parser if it holds nothing (no partial frame or message,
        not even a header alone or an empty first fragment: at_rest)."""
        parser = self._parser
        if parser is not None and parser.at_rest and not parser.closed and not parser.failed:
            self._parser = None
            self._last_frames = 0
            if self._opts.idle_timeout is not None:  # (its one reader: _idle_check)
                self._messages_base += parser.messages_received
            if self._deflate is not None:
                self._deflate.release()
            return True
        return False

    def _feed(self, data) -> None:
        """Bytes from the peer. Never raises: errors become close frames."""
        parser = self._parser
        if parser is None:
            if self._state == OPEN:
                # An idle connection (parser released) hearing a lone pong or
                # ping, as keepalive brings every ping_interval: handled
                # without making a parser (memory and CPU of idle connections).
                control = lone_control(data, not self._is_client)
                if control is not None:
                    self._last_frames = -1  # a frame arrived: the next keepalive check sees life
                    try:
                        self._on_control(control[0], control[1])
                    except Exception as exc:
                        self._input_failed(exc)
                    return
            parser = self._make_parser()
        try:
            parser.feed(data)
        except Exception as exc:
            self._input_failed(exc)

    def _input_failed(self, exc: Exception) -> None:
        """Parsing the peer's bytes raised: a protocol error becomes its close
        frame; anything else came from an application callback (1011)."""
        if isinstance(exc, ProtocolError):
            _routine(self, "protocol_error", "closing connection with %s: %d %s",
                     self.remote_address, exc.code, exc.reason)
            self._fail(exc.code, exc.reason)
        else:
            self._app_error(exc)

    def _app_error(self, exc: BaseException) -> None:
        _log_error(self, "app_error", "error in application callback (peer %s); closing with 1011",
                   self.remote_address, exc_info=exc)
        self._fail(CLOSE_INTERNAL_ERROR, "internal error")

    # ------------------------------------------------------------ sending
    # send(data) -> bool: one message, ``str`` as text, bytes-like as binary;
    # False when the write buffer is above write_limit (see conn_send in
    # fastws._py.core, the readable reference; C in the extension build).
    send = conn_send

    def _send_general(self, data) -> None:
        """The frame of ``send`` when it is not a small plain server frame: a
        compressed message (permessage-deflate, RSV1), the client side
        (masked), or a payload of LARGE_PAYLOAD or more (written next to its
        header, no copy). ``send`` comes here when ``_general_send`` is set
        (client, or deflate negotiated) or the payload is large."""
        opcode = OP_TEXT if isinstance(data, str) else OP_BINARY
        deflate = self._deflate
        if deflate is not None:
            payload = deflate.compress(data)  # None: below the threshold
            if payload is not None:
                self._write(build_frame(opcode, payload, mask=self._is_client, rsv=RSV1))
                return
        if self._is_client or len(data) < LARGE_PAYLOAD:
            self._write(build_frame(opcode, data, mask=self._is_client))
        else:
            if opcode == OP_TEXT:
                data = data.encode("utf-8")
            self._writelines((build_header(opcode, len(data)), data))

    def _use_deflate(self, params) -> None:
        """permessage-deflate was negotiated (RFC 7692), before the connection
        opens: inflate what comes in, compress what ``send`` sends."""
        self._deflate = PerMessageDeflate(params)
        self._general_send = True

    def send_frame(self, opcode: int, payload: str | bytes | bytearray | memoryview = b"",
                   fin: bool = True) -> bool:
        """Send one raw frame (fragmented messages: TEXT/BINARY fin=False, then
        CONTINUATION frames). The caller keeps the fragmentation rules."""
        if self._state != OPEN:
            raise self._closed_error()
        self._write(build_frame(opcode, payload, fin=fin, mask=self._is_client))
        if self._paused_writing:
            return self._check_write_buffer()
        return True

    def send_ping(self, payload: str | bytes | bytearray | memoryview = b"") -> None:
        """Send a ping (payload up to 125 bytes); the pong comes to ``on_pong``."""
        if self._state != OPEN:
            raise self._closed_error()
        self._write(build_frame(OP_PING, payload, mask=self._is_client))
        if self._paused_writing:
            self._check_write_buffer()

    def send_pong(self, payload: str | bytes | bytearray | memoryview = b"") -> None:
        """Send an unsolicited pong (RFC 6455 5.5.3: a unidirectional heartbeat)."""
        if self._state != OPEN:
            raise self._closed_error()
        self._write(build_frame(OP_PONG, payload, mask=self._is_client))
        if self._paused_writing:
            self._check_write_buffer()

    def close(self, code: int | None = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 7.1.2). Does nothing if already
        closing; the connection is closed when the peer answers or after
        ``close_timeout``."""
        payload = close_payload(code, reason)  # validate before changing state
        if self._state == OPEN:
            self._send_close(payload, code)
            self._arm(self._driver.now() + self._opts.close_timeout)
        elif self._state == CONNECTING:
            self._abort_transport()

    def _send_close(self, payload: bytes, code) -> None:
        self._state = CLOSING
        self.sent_close_code = code if code is not None else CLOSE_NO_STATUS
        self._write(build_frame(OP_CLOSE, payload, mask=self._is_client))
        if self._paused_writing:
            self._check_write_buffer()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7) with a close code."""
        if self._state == OPEN:
            self._send_close(close_payload(code, reason), code)
            # Half-close so our close frame is delivered even if the peer keeps
            # sending; the rest of its input is discarded. The peer closes TCP
            # when it has read our close frame, or close_timeout aborts.
            self._write_eof()
            self._arm(self._driver.now() + self._opts.close_timeout)
        elif self._state == CLOSING:
            self._abort_transport()

    def _check_write_buffer(self) -> bool:
        """Called only while writing is paused: enforce max_write_buffer."""
        if self._write_buffer_size() > self._opts.max_write_buffer:
            _routine(self, "write_buffer_full", "peer %s is not reading: write buffer over %d bytes; closing with 1008",
                     self.remote_address, self._opts.max_write_buffer)
            self.sent_close_code = CLOSE_POLICY_VIOLATION
            self._abort_transport()
        return False

    # ------------------------------------------------------------ receiving
    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            # RFC 6455 5.5.2: answer with a pong carrying the same payload "as
            # soon as is practical"; not after our close frame (5.5.1).
            if self._state == OPEN:
                if self._paused_writing:
                    # The peer does not read what we write: a pong per ping
                    # would grow the write buffer without bound. 5.5.3 lets
                    # us answer only the most recent ping: keep its payload,
                    # answer on drain, and read no more until then.
                    if self._held_pong is None:
                        self._hold_reading()
                    self._held_pong = payload
                else:
                    self._write(build_frame(OP_PONG, payload, mask=self._is_client))
            self._on_ping(payload)
        elif opcode == OP_PONG:
            self._on_pong(payload)
        else:
            self._on_close_frame(payload)

    def _on_ping(self, payload: bytes) -> None:
        app = self._app
        if app is not None:
            app.on_ping(payload)

    def _on_pong(self, payload: bytes) -> None:
        app = self._app
        if app is not None:
            app.on_pong(payload)

    def _on_close_frame(self, payload: bytes) -> None:
        # The parser has validated the payload (length, code, UTF-8 reason).
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode("utf-8")
        else:
            code, reason = CLOSE_NO_STATUS, ""
        self.close_code, self.close_reason = code, reason
        if self._state == OPEN:
            # RFC 6455 5.5.1: answer with a close frame, echoing the code (and
            # the reason, which the parser has checked is valid UTF-8).
            self._send_close(payload, code if len(payload) >= 2 else None)
        if not self._is_client:
            self._close_transport()
        # A client waits for the server to close TCP first (RFC 6455 7.1.1);
        # a server's close flushes what is queued, which a peer that does not
        # read would hold forever: either way close_timeout is the limit.
        if self._state != CLOSED:
            self._arm(self._driver.now() + self._opts.close_timeout)

    # ------------------------------------------------------------ timers
    def _arm(self, deadline: float) -> None:
        self._driver.arm(self, deadline)

    def _disarm(self) -> None:
        if self.armed:
            self._driver.cancel(self)

    # on_timer and _keepalive (when to ping, when to give up: the rules are in
    # the docstring of fastws/_py/core.py) are codec.ConnectionCore's; these
    # are what they call back for.
    def _timer_expired(self) -> None:
        """The timer fired while not OPEN: the opening or closing handshake timed out."""
        state = self._state
        if state == CONNECTING:
            _routine(self, "handshake_timeout", "opening handshake with %s timed out", self.remote_address)
        elif state == CLOSING:
            _routine(self, "close_timeout", "closing handshake with %s timed out", self.remote_address)
        self._abort_transport()

    def _keepalive_timed_out(self) -> None:
        """Our keepalive ping went unanswered for ping_timeout: fail with 1011."""
        _routine(self, "keepalive_timeout", "peer %s did not answer a keepalive ping within %ss; closing with 1011",
                 self.remote_address, self._opts.ping_timeout)
        self._on_keepalive_timeout()
        self._fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")

    def _idle_check(self, now: float):
        """Close a connection that received no data message for idle_timeout."""
        parser = self._parser
        total = self._messages_base + (parser.messages_received if parser is not None else 0)
        if total != self._messages_seen:
            self._messages_seen = total
            return now + self._opts.idle_timeout
        _routine(self, "idle_timeout", "peer %s sent no message for %ss; closing (idle timeout)",
                 self.remote_address, self._opts.idle_timeout)
        self.close(CLOSE_NORMAL, "idle timeout")
        return None

    def _write_timed_out(self) -> None:
        """The peer left our write buffer above write_limit for write_timeout:
        cut it off (a close frame would only queue behind what it does not read)."""
        _routine(self, "write_timeout", "peer %s did not read for %ss (write buffer %d bytes); closing with 1013",
                 self.remote_address, self._opts.write_timeout, self._write_buffer_size())
        self.sent_close_code = CLOSE_TRY_AGAIN_LATER
        self._abort_transport()

    def _writing_paused(self) -> None:
        """The transport went above write_limit: start the write timeout."""
        self._paused_writing = True
        timeout = self._opts.write_timeout
        if timeout is not None and self._state == OPEN and self._driver is not None:
            deadline = self._write_deadline = self._driver.now() + timeout
            if deadline < self.deadline:
                self._arm(deadline)

    def _writing_resumed(self) -> None:
        """The transport went back under write_limit: answer the ping held
        while paused (the latest one), read again, tell the application."""
        self._paused_writing = False
        payload = self._held_pong
        if payload is not None:
            self._held_pong = None
            if self._state == OPEN:
                self._write(build_frame(OP_PONG, payload, mask=self._is_client))
            self._release_reading()
        self._on_drain()

    def _hold_reading(self) -> None:
        """Stop reading from the peer until the write buffer drains (a subclass
        with a transport pauses it)."""

    def _release_reading(self) -> None:
        """Undo ``_hold_reading`` (unless the application paused reading itself)."""

    def _on_drain(self) -> None:
        app = self._app
        if app is not None:
            app.on_drain()

    def _on_keepalive_timeout(self) -> None:
        """Hook for metrics (a keepalive ping went unanswered). Pings sent are
        counted in ``_ka_counters.pings_sent`` (set it to count them)."""

    # ------------------------------------------------------------ end
    def _connection_lost(self) -> None:
        """The transport is gone: settle state and tell the application once."""
        if self._state == CLOSED:
            return
        self._state = CLOSED
        self._disarm()
        if self._parser is not None:
            self._parser.release()
        self._on_closed()

    def _on_closed(self) -> None:
        app = self._app
        if app is not None:
            code, reason = self.close_code, self.close_reason
            if code is None:
                code = self.sent_close_code if self.sent_close_code is not None else CLOSE_ABNORMAL
            try:
                app.on_close(code, reason)
            except Exception:
                _log_error(self, "on_close_error", "error in on_close (peer %s)", self.remote_address, exc_info=True)

    # ------------------------------------------------------------ I/O (subclass)
    def _write(self, data) -> None:
        """Write bytes to the peer: a subclass's method, or a ``_write`` slot
        it declares and sets to a callable (the blocking client, tests). A
        StreamConnection writes to its transport; the extension's send and
        keepalive paths call ``transport.write`` themselves (no bound method
        kept per connection: ``_write_frame`` in fastws_ext/core.pyx)."""
        raise RuntimeError("no transport: the adapter provides _write")

    def _writelines(self, parts) -> None:
        raise NotImplementedError

    def _write_eof(self) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _abort_transport(self) -> None:
        raise NotImplementedError

    def _write_buffer_size(self) -> int:
        return 0

    def __repr__(self):
        return f"<{type(self).__name__} {STATE_NAMES[self._state]} {self.remote_address}>"



