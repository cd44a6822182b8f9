"""The protocol core byte by byte, with no socket, no event loop and a fake clock.

``fastws.protocol.Connection`` is sans-I/O: bytes in (``data_received``),
bytes out (``_write`` and four I/O methods), and a timer driver given to it.
Here the I/O methods write to lists and the driver is a ``ManualDriver`` over
a clock the test moves, so the closing handshake (RFC 6455 7) and keepalive
(the rules in fastws/_py/core.py) are checked to the byte and to the tick.
Both implementations run this file: the extension in the main pass, the
twins in the FASTWS_PURE_PYTHON=1 pass of tests/run.sh.
"""
from __future__ import annotations

import struct

import pytest

from fastws.constants import CLOSED, CLOSING, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, OPEN
from fastws.options import Options
from fastws.protocol import Connection
from fastws.timers import ManualDriver

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A masked frame as a client sends it (RFC 6455 5.3), payload < 126 bytes."""
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + MASK + masked


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def unmask(frame: bytes) -> tuple:
    """(opcode, payload) of one masked frame < 126 bytes (what a client writes)."""
    assert frame[1] & 0x80, "client frames are masked (RFC 6455 5.3)"
    key, body = frame[2:6], frame[6:]
    assert len(body) == frame[1] & 0x7F
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Recorder:
    """A listener that records what the core tells the application."""

    def __init__(self):
        self.events = []

    def on_message(self, data):
        self.events.append(("message", data))

    def on_ping(self, payload):
        self.events.append(("ping", payload))

    def on_pong(self, payload):
        self.events.append(("pong", payload))

    def on_drain(self):
        self.events.append(("drain",))

    def on_close(self, code, reason):
        self.events.append(("close", code, reason))


class Wire(Connection):
    """The core on lists: ``out`` holds what it writes, ``io`` what it asks of TCP."""

    __slots__ = ("out", "io", "buffered", "_write")  # _write: Connection's I/O seam, as a slot

    def __init__(self, clock, *, is_client=False, **options):
        options.setdefault("timer_tick", 0.05)
        Connection.__init__(self, Options(**options), is_client, ManualDriver(clock, tick=0.05))
        self.out = []
        self.io = []
        self.buffered = 0
        self._write = self.out.append
        self._app = Recorder()
        self._open()

    def _message_callback(self):
        return self._app.on_message

    def _writelines(self, parts):
        self.out.append(b"".join(parts))

    def _write_eof(self):
        self.io.append("eof")

    def _close_transport(self):
        self.io.append("close")

    def _abort_transport(self):
        self.io.append("abort")

    def _write_buffer_size(self):
        return self.buffered

    def _handshake_bytes(self, data):
        raise AssertionError("the handshake is not part of these tests")

    def take(self) -> list:
        out = self.out[:]
        self.out.clear()  # the same list: _write is its append
        return out


@pytest.fixture
def clock():
    return Clock()


def advance(conn, clock, seconds):
    """Move the clock in small steps, firing the timer as the loop's wheel would."""
    end = clock.t + seconds
    while clock.t < end:
        clock.t = min(end, clock.t + 0.05)
        conn._driver.advance()


# ------------------------------------------------------------ RFC 6455 5.5.2-5.5.3: ping and pong

def test_a_ping_is_answered_with_a_pong_carrying_its_payload(clock):
    conn = Wire(clock, ping_interval=None)
    conn.data_received(client_frame(OP_PING, b"hello"))
    assert conn.take() == [server_frame(OP_PONG, b"hello")]
    assert conn._app.events == [("ping", b"hello")]


def test_a_message_is_delivered_and_sent_back_unmasked(clock):
    conn = Wire(clock, ping_interval=None)
    conn.data_received(client_frame(OP_TEXT, "héllo".encode()))
    assert conn._app.events == [("message", "héllo")]
    assert conn.send(b"\x00\x01") is True
    assert conn.take() == [server_frame(OP_BINARY, b"\x00\x01")]


# ------------------------------------------------------------ RFC 6455 7: the closing handshake

def test_peer_closes_first_server_echoes_and_closes_tcp(clock):
    conn = Wire(clock, ping_interval=None)
    conn.data_received(client_frame(OP_CLOSE, close_payload(1000, b"bye")))
    # RFC 6455 5.5.1: "the endpoint MUST send a Close frame in response";
    # 7.1.1: the server closes the TCP connection first.
    assert conn.take() == [server_frame(OP_CLOSE, close_payload(1000, b"bye"))]
    assert conn.io == ["close"]
    assert (conn.close_code, conn.close_reason, conn.state) == (1000, "bye", "CLOSING")
    conn._connection_lost()
    assert conn._state == CLOSED
    assert conn._app.events == [("close", 1000, "bye")]


def test_empty_close_is_answered_with_an_empty_close(clock):
    conn = Wire(clock, ping_interval=None)
    conn.data_received(client_frame(OP_CLOSE))
    assert conn.take() == [server_frame(OP_CLOSE)]
    assert conn.close_code == 1005  # RFC 6455 7.1.5: no status code was present


def test_we_close_first_then_the_peers_close_ends_it(clock):
    conn = Wire(clock, ping_interval=None, close_timeout=2)
    conn.close(1001, "going")
    assert conn.take() == [server_frame(OP_CLOSE, close_payload(1001, b"going"))]
    assert conn._state == CLOSING and conn.io == []
    conn.data_received(client_frame(OP_CLOSE, close_payload(1001)))
    assert conn.take() == []  # no second close frame
    assert conn.io == ["close"]
    conn.close(1000)  # closing already: nothing more
    assert conn.take() == []


def test_close_timeout_aborts_when_the_peer_never_answers(clock):
    conn = Wire(clock, ping_interval=None, close_timeout=2)
    conn.close()
    conn.take()
    advance(conn, clock, 1.9)
    assert conn.io == []
    advance(conn, clock, 0.2)  # within a tick of the deadline
    assert conn.io == ["abort"]


def test_protocol_error_sends_1002_half_closes_and_times_out(clock):
    conn = Wire(clock, ping_interval=None, close_timeout=3)
    conn.data_received(b"\x81\x05hello")  # unmasked frame from a client: RFC 6455 5.1
    [frame] = conn.take()
    assert frame[:4] == bytes([0x88, frame[1]]) + struct.pack("!H", 1002)
    assert conn.io == ["eof"] and conn._state == CLOSING
    conn.data_received(client_frame(OP_TEXT, b"ignored"))  # nothing more is read
    assert conn._app.events == []
    advance(conn, clock, 3.1)
    assert conn.io == ["eof", "abort"]


def test_invalid_utf8_closes_with_1007(clock):
    conn = Wire(clock, ping_interval=None)
    conn.data_received(client_frame(OP_TEXT, b"\xff"))
    [frame] = conn.take()
    assert frame[2:4] == struct.pack("!H", 1007)


def test_client_waits_for_the_server_to_close_tcp(clock):
    conn = Wire(clock, is_client=True, ping_interval=None, close_timeout=2)
    conn.data_received(server_frame(OP_CLOSE, close_payload(1000)))
    [frame] = conn.take()
    assert unmask(frame) == (OP_CLOSE, close_payload(1000))
    # RFC 6455 7.1.1: the client waits for the server's TCP close...
    assert conn.io == []
    advance(conn, clock, 2.1)
    assert conn.io == ["abort"]  # ... for close_timeout at most


# ------------------------------------------------------------ keepalive (fastws/_py/core.py)

def test_silent_peer_is_pinged_then_failed_with_1011(clock):
    conn = Wire(clock, ping_interval=10, ping_timeout=4)
    advance(conn, clock, 4.9)
    assert conn.take() == []          # the first check comes at ping_interval / 2
    advance(conn, clock, 0.2)
    assert conn.take() == [b"\x89\x00"]  # silent since: an empty ping
    advance(conn, clock, 3.7)
    assert conn.take() == []
    advance(conn, clock, 0.4)         # ping_timeout after the ping, no pong
    [frame] = conn.take()
    assert frame == server_frame(OP_CLOSE, close_payload(1011, b"keepalive ping timeout"))
    assert conn.io == ["eof"]


def test_answered_ping_schedules_the_next_one_interval_later(clock):
    conn = Wire(clock, ping_interval=10, ping_timeout=4)
    advance(conn, clock, 5.1)
    assert conn.take() == [b"\x89\x00"]
    sent = clock.t
    conn.data_received(client_frame(OP_PONG))
    advance(conn, clock, 9.0)
    assert conn.take() == []
    advance(conn, clock, 10.2 - (clock.t - sent))  # the next ping: ping_interval after the first
    assert conn.take() == [b"\x89\x00"]
    assert conn._state == OPEN


def test_a_talking_peer_is_not_pinged(clock):
    conn = Wire(clock, ping_interval=10, ping_timeout=4)
    for _ in range(8):
        advance(conn, clock, 3)
        conn.data_received(client_frame(OP_BINARY, b"x"))
    assert conn.take() == []
    assert [e for e in conn._app.events if e[0] == "message"] == [("message", b"x")] * 8


def test_idle_timeout_closes_a_connection_that_sends_no_message(clock):
    # The idle clock is checked every idle_timeout: a check that finds a new
    # message since the last one re-arms, one that finds none closes.
    conn = Wire(clock, ping_interval=None, idle_timeout=5)
    advance(conn, clock, 3)
    conn.data_received(client_frame(OP_TEXT, b"hi"))
    advance(conn, clock, 6.9)
    assert conn.take() == []          # the check at 5 s saw the message
    advance(conn, clock, 0.2)         # the check at 10 s sees none
    assert conn.take() == [server_frame(OP_CLOSE, close_payload(1000, b"idle timeout"))]


def test_write_timeout_cuts_off_a_peer_that_does_not_read(clock):
    conn = Wire(clock, ping_interval=None, write_timeout=3)
    conn.buffered = 1 << 20
    conn._writing_paused()
    advance(conn, clock, 2.9)
    assert conn.io == []
    advance(conn, clock, 0.2)
    assert conn.io == ["abort"] and conn.sent_close_code == 1013
