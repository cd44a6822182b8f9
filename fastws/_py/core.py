"""The keepalive core of a connection: its timer, and bytes in while idle.

The pure-Python twin of fastws_ext/core.pyx. ``fastws.protocol.Connection``
extends ``ConnectionCore``, which extends the wheel's ``TimerEntry``; it holds
what an idle connection's keepalive cycle touches and the two methods that
cycle runs: ``on_timer(now)`` (keepalive, write and idle timeouts while OPEN;
the handshake or closing deadline otherwise) and ``data_received(data)`` (the
parser, or a lone ping/pong taken without one while idle). Everything rare
goes to ``Connection``'s Python methods (``_write_timed_out``,
``_idle_check``, ``_keepalive_timed_out``, ...). The clocks are floats, +inf
meaning "not set"; a lone pong leaves the mark -1 in ``_last_frames``.
See docs/design/timers.md#an-idle-connection-runs-no-python.
"""
from __future__ import annotations

import math
from types import MemberDescriptorType

from ..constants import CLOSED, CONNECTING, LARGE_PAYLOAD, OP_BINARY, OP_PING, OP_PONG, OP_TEXT, OPEN
from .aio import DONE
from .frames import build_frame, lone_control
from .wheel import TimerEntry

__all__ = ["ConnectionCore", "PING_SERVER", "conn_send", "ws_send", "gc_untrack", "gc_track"]

# Payloads of LARGE_PAYLOAD bytes or more are written next to their header
# instead of being copied into one frame (server side; client frames are
# masked, which needs a copy anyway).
INF = math.inf

# The server's keepalive ping, built once (a client's carries a fresh mask key
# each time, RFC 6455 5.3).
PING_SERVER = b"\x89\x00"


def _defaults_of(cls) -> tuple:
    """The ``_slot_defaults`` of ``cls`` merged along its MRO, as ``(name,
    value)`` pairs, kept in the class's own ``__dict__`` (made on first use).
    Every name must be a ``__slots__`` field."""
    plan = cls.__dict__.get("_slot_plan")
    if plan is not None:
        return plan
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("_slot_defaults", ()))
    for name in merged:
        if type(getattr(cls, name, None)) is not MemberDescriptorType:
            raise TypeError(f"{cls.__name__}._slot_defaults: {name!r} is not a __slots__ field")
    plan = tuple(merged.items())
    if plan:
        cls._slot_plan = plan
    return plan


def _write_frame(conn, frame) -> None:
    """``conn._write(frame)`` as the extension writes: a connection with a
    ``_transport`` set (a StreamConnection) writes to it directly (no bound
    method kept per connection); any other calls its ``_write``."""
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        transport.write(frame)
    else:
        conn._write(frame)


class ConnectionCore(TimerEntry):
    """Keepalive state and the two entry points of a connection (see the module docstring)."""

    __slots__ = (
        "_keepalive_at",    # next keepalive check (inf: keepalive off)
        "_ping_sent_at",    # our last keepalive ping, until a check sees its answer (inf: none)
        "_write_deadline",  # write timeout while paused (inf: none)
        "_idle_at",         # next idle-timeout check (inf: none)
        "_last_frames",     # frames seen at the last check; -1: a lone pong came
        "_is_client",
        "_general_send",    # every send goes through _send_general (client: masked; deflate)
        "_pong_hook",       # False: a pong needs no _on_pong call (nobody listens)
        "_direct_ok",       # the adapter can switch to direct reads (_direct_reads_begin)
        "_ka_counters",     # None, or an object whose pings_sent counts our pings
        "_paused_writing",  # the transport is above write_limit
    )

    def __new__(cls, *args, **kwargs):
        self = TimerEntry.__new__(cls)
        self._keepalive_at = INF
        self._ping_sent_at = INF
        self._write_deadline = INF
        self._idle_at = INF
        self._last_frames = 0
        self._is_client = False
        self._general_send = False
        self._pong_hook = True
        self._direct_ok = False
        self._ka_counters = None
        self._paused_writing = False
        # The subclasses' __slots__ fields named in their _slot_defaults: set
        # here (in C in the extension), so that their __init__ sets only what differs.
        for name, value in _defaults_of(cls):
            setattr(self, name, value)
        return self

    # ------------------------------------------------------------ the timer
    def _open_at(self, now: float) -> float:
        """The opening handshake succeeded at ``now``: the state becomes OPEN
        and the keepalive and idle-timeout clocks start; returns the first
        deadline for the timer (inf: none). (Connection._open arms it.)"""
        opts = self._opts
        self._state = OPEN
        if opts.ping_interval is not None:
            self._keepalive_at = now + opts.ping_interval / 2
        if opts.idle_timeout is not None:
            self._idle_at = now + opts.idle_timeout
        return min(self._keepalive_at, self._idle_at)

    def _open_timer(self, driver) -> None:
        """The opening handshake succeeded: ``_open_at(driver.now())``, then
        ``driver.arm(self, first)``, or ``driver.cancel(self)`` if armed when
        there is no deadline (Connection._open's timer part, in one call)."""
        first = self._open_at(driver.now())
        if first != INF:
            driver.arm(self, first)
        elif self.armed:
            driver.cancel(self)

    def on_timer(self, now: float):
        """The connection's one timer fired: handshake, keepalive, write or close timeout.

        While OPEN one wheel entry serves three clocks: keepalive
        (``_keepalive_at``), the write timeout (``_write_deadline``, set while
        the peer leaves the write buffer above write_limit) and the idle
        timeout (``_idle_at``). It is armed for the earliest.
        """
        if self._state != OPEN:
            self._timer_expired()
            return None
        wd = self._write_deadline
        if wd != INF:
            if not self._paused_writing:
                wd = self._write_deadline = INF  # drained meanwhile
            elif now >= wd:
                self._write_timed_out()
                return None
        ka = self._keepalive_at
        if now >= ka:
            ka = self._keepalive_at = self._keepalive(now)
            if self._state != OPEN:
                return None  # failed: _fail armed the close timeout
        it = self._idle_at
        if now >= it:
            again = self._idle_check(now)
            it = self._idle_at = INF if again is None else float(again)
            if self._state != OPEN:
                return None  # closing: close() armed the close timeout
        nxt = ka if ka < wd else wd
        if it < nxt:
            nxt = it
        return None if nxt == INF else nxt

    def _keepalive(self, now: float) -> float:
        """One keepalive check; returns when the next one is due (inf: none).

        While frames flow, checks run every ping_interval/2; a check that finds
        no frame since the previous one sends a ping, so a ping goes out after
        at most ping_interval of silence. The check after a ping comes
        min(ping_interval, ping_timeout) later:

        - nothing arrived: the ping is unanswered; the connection fails once
          ping_timeout has passed since it (1011, ``_keepalive_timed_out``);
        - only the pong (at most one frame): the peer has been silent since
          answering, so once ping_interval has passed since the ping the next
          ping goes out at once. An idle connection thus costs one check per
          ping_interval, not two;
        - more frames: the peer is talking; back to the half-interval cadence.

        "Frames" are the parser's ``activity``: its frames plus the data
        payload bytes it has taken, so a large frame whose payload trickles
        in for longer than ping_interval (no frame completes, and the peer
        cannot send a pong in the middle of it) counts as talking; an empty
        pong adds exactly 1. For an idle connection whose parser was
        released, the mark (-1) a lone pong leaves (``data_received``,
        ``Connection._feed``).
        """
        opts = self._opts
        interval = float(opts.ping_interval)
        parser = self._parser
        frames = parser.activity if parser is not None else 0
        last = self._last_frames
        sent = self._ping_sent_at
        if frames != last:  # the peer is alive
            self._last_frames = frames
            if sent == INF or (last != -1 and frames - last > 1):
                self._ping_sent_at = INF
                return now + interval / 2
            # Only the pong since our ping.
            if now - sent < interval - opts.timer_tick:
                self._ping_sent_at = INF
                return sent + interval  # then silent since: a ping
        elif sent != INF:  # unanswered
            timeout = opts.ping_timeout
            if now - sent < timeout:
                return sent + timeout
            self._keepalive_timed_out()
            return INF
        # Silent since the last check (or since answering our last ping): ping.
        # The parser is released if it holds nothing.
        if parser is not None:
            self._idle_parser()
        self._ping_sent_at = now
        _write_frame(self, build_frame(OP_PING, b"", mask=True) if self._is_client else PING_SERVER)
        if self._paused_writing:
            # The peer does not read: this ping obeys max_write_buffer too.
            self._check_write_buffer()
        counters = self._ka_counters
        if counters is not None:
            counters.pings_sent += 1
        timeout = opts.ping_timeout
        return now + (interval if interval < timeout else timeout)

    # ------------------------------------------------------------ bytes in
    def data_received(self, data) -> None:
        """asyncio.Protocol: bytes from the peer (the stream adapter's entry point).

        With a parser: one call into it (then, if the rest of a large data
        frame is still to come, ``_direct_reads_begin(parser)``). Idle (parser
        released) and OPEN: a
        lone pong, as keepalive brings every ping_interval, is taken here
        without a parser and without a Python call unless someone listens to
        pongs; anything else goes to ``_feed``. Before the handshake is done:
        ``_handshake_bytes``.
        """
        parser = self._parser
        if parser is not None:  # the hot path: one call into the parser
            try:
                parser.feed(data)
                direct = self._direct_ok and parser.wants_direct()
            except Exception as exc:
                self._input_failed(exc)
                return
            if direct:
                # The rest of a large data frame is still to come: the adapter
                # reads it straight into the message (no copy of it here).
                # (This twin's parser never lends directly, so never here.)
                self._direct_reads_begin(parser)
            return
        state = self._state
        if state == OPEN:
            if not self._lone_pong(data):
                self._feed(data)
        elif state == CONNECTING:
            self._handshake_bytes(data)
        elif state != CLOSED:
            self._feed(data)

    def _lone_pong(self, data) -> bool:
        """Handle ``data`` if it is exactly one valid PONG frame (the rules of
        frames.lone_control); False (nothing done) otherwise."""
        # a server expects masked frames, a client unmasked
        control = lone_control(data, not self._is_client)
        if control is None or control[0] != OP_PONG:
            return False
        self._last_frames = -1  # a frame arrived: the next keepalive check sees life
        if self._pong_hook:
            try:
                self._on_pong(control[1])
            except Exception as exc:
                self._input_failed(exc)
        return True


# ------------------------------------------------------------ bytes out
# Connection.send (the listener API) and WebSocketMixin.send (the handler
# API), installed as methods by fastws.protocol / fastws.websocket. In the
# extension they cost no Python frame per message.

def _send_message(self, data) -> bool:
    """Write one message's frame; True if the write buffer is above
    write_limit afterwards (the two ``send`` differ only in what they make of
    that). Small server frames are built and written here; the client side
    (masked), compressed messages and payloads of at least LARGE_PAYLOAD
    (written next to their header) go to ``_send_general``."""
    if not isinstance(self, ConnectionCore):
        raise TypeError(f"expected a fastws connection, got {type(self).__name__}")
    if self._state != OPEN:
        raise self._closed_error()
    if self._general_send or len(data) >= LARGE_PAYLOAD:
        self._send_general(data)
    else:
        _write_frame(self, build_frame(OP_TEXT if isinstance(data, str) else OP_BINARY, data))
    return bool(self._paused_writing)


def conn_send(self, data) -> bool:
    """Send one message: ``str`` as text, bytes-like as binary.

    Never blocks and never drops: the frame is queued on the transport.
    Returns False when the write buffer is above ``write_limit`` (wait for
    ``on_drain`` before sending more); raises ConnectionClosed once the
    connection is closing or closed.
    """
    if _send_message(self, data):
        return self._check_write_buffer()
    return True


def ws_send(self, data):
    """Send a message (``str``: text, bytes-like: binary). Use it as
    ``await ws.send(data)``: it waits only while the write buffer is above
    ``write_limit``.

    The frame is written at once; when no waiting is needed, the awaitable
    returned is an already-done one (no coroutine per message).
    """
    if _send_message(self, data):
        self._check_write_buffer()  # cuts off a peer over max_write_buffer
        return self._drain()
    return DONE


# ------------------------------------------------------------ the cyclic GC
def gc_untrack(obj) -> None:
    """Take ``obj`` out of the cyclic GC's lists while something else
    certainly holds it (the server's open connections: its ``connections``
    set holds each one), so that no collection walks it; ``gc_track`` puts
    it back when that hold ends, so a cycle through it is collected as
    before. The GC never frees what an untracked object refers to (its
    references count as from outside). Python code cannot untrack an
    object: here it stays tracked (the same behaviour, more GC work). See
    docs/design/memory.md#the-cyclic-gc."""


def gc_track(obj) -> None:
    """Undo ``gc_untrack`` (nothing to undo here)."""
