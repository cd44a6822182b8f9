"""Memory limits of the core, byte by byte (issue #14).

- While writing is paused (above ``write_limit``), pings are not answered at
  once: the latest one's payload is answered on drain (RFC 6455 5.5.3) and
  reading is held until then. Keepalive pings, close replies and the
  application's pings and pongs obey ``max_write_buffer`` (1008, abort).
- ``FrameParser.reserved``: a header announcing 16 MiB followed by 15 bytes
  reserves at most 64 KiB; memory grows as the payload arrives.

On lists with a fake clock (test_sansio.py's ``Wire``), for both
implementations. See docs/design/protocol.md#flow-control-of-what-we-write.
"""
from __future__ import annotations

import struct

import pytest
from test_sansio import Clock, Wire, advance, client_frame, close_payload, server_frame

from fastws.constants import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT


class HoldingWire(Wire):
    """A Wire that records what it asks of reading."""

    __slots__ = ()

    def __init__(self, clock, **options):
        if "max_write_buffer" in options:  # the fan-out's limit must fit under it
            options.setdefault("slow_consumer_limit", options.get("write_limit", 65536))
        Wire.__init__(self, clock, **options)

    def _hold_reading(self):
        self.io.append("hold reading")

    def _release_reading(self):
        self.io.append("release reading")


@pytest.fixture
def clock():
    return Clock()


def paused(conn, size):
    conn.buffered = size
    conn._writing_paused()


def drained(conn):
    conn.buffered = 0
    conn._writing_resumed()


# ------------------------------------------------------------ pongs while paused

def test_ten_thousand_pings_while_paused_make_one_pong_on_drain(clock):
    conn = HoldingWire(clock, ping_interval=None, write_limit=1024, max_write_buffer=4096)
    paused(conn, 2048)
    pings = b"".join(client_frame(OP_PING, b"%d" % i) for i in range(10_000))
    conn.data_received(pings)
    assert conn.take() == []  # nothing written while the peer does not read
    assert conn.io == ["hold reading"]  # once, at the first ping
    assert len(conn._app.events) == 10_000  # each ping still reaches on_ping
    drained(conn)
    # RFC 6455 5.5.3: only the most recent ping needs its pong.
    assert conn.take() == [server_frame(OP_PONG, b"9999")]
    assert conn.io == ["hold reading", "release reading"]
    assert conn._app.events[-1] == ("drain",)
    # Not paused: every ping is answered at once again.
    conn.data_received(client_frame(OP_PING, b"a") + client_frame(OP_PING, b"b"))
    assert conn.take() == [server_frame(OP_PONG, b"a"), server_frame(OP_PONG, b"b")]


def test_pings_in_small_reads_while_paused(clock):
    # As a flooding client's pings arrive, read after read (an idle
    # connection's lone pings included: they take the parser-less path).
    conn = HoldingWire(clock, ping_interval=None, write_limit=1024)
    paused(conn, 2048)
    for i in range(1000):
        conn.data_received(client_frame(OP_PING, bytes([i % 256])))
    assert conn.take() == [] and conn.io == ["hold reading"]
    drained(conn)
    assert conn.take() == [server_frame(OP_PONG, bytes([999 % 256]))]


def test_a_drain_without_held_ping_writes_nothing(clock):
    conn = HoldingWire(clock, ping_interval=None)
    paused(conn, 1 << 20)
    drained(conn)
    assert conn.take() == [] and conn.io == []
    assert conn._app.events == [("drain",)]


def test_data_between_pings_is_still_delivered_in_order(clock):
    conn = HoldingWire(clock, ping_interval=None)
    paused(conn, 1 << 20)
    conn.data_received(client_frame(OP_PING, b"1") + client_frame(OP_TEXT, b"hi")
                       + client_frame(OP_PING, b"2"))
    assert conn._app.events == [("ping", b"1"), ("message", "hi"), ("ping", b"2")]
    drained(conn)
    assert conn.take() == [server_frame(OP_PONG, b"2")]


def test_held_ping_not_answered_after_our_close(clock):
    # RFC 6455 5.5.1: nothing after our close frame.
    conn = HoldingWire(clock, ping_interval=None)
    paused(conn, 1 << 10)
    conn.data_received(client_frame(OP_PING, b"late"))
    conn.close(1001)
    assert conn.take() == [server_frame(OP_CLOSE, close_payload(1001))]
    drained(conn)
    assert conn.take() == []
    assert conn.io == ["hold reading", "release reading"]


def test_client_side_coalesces_too(clock):
    conn = HoldingWire(clock, is_client=True, ping_interval=None)
    paused(conn, 1 << 20)
    for i in range(100):
        conn.data_received(server_frame(OP_PING, b"p%d" % i))
    assert conn.take() == []
    drained(conn)
    [frame] = conn.take()
    assert frame[0] == 0x80 | OP_PONG and frame[1] & 0x80  # a masked pong (RFC 6455 5.3)
    key, body = frame[2:6], frame[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == b"p99"


# ------------------------------------------------------------ max_write_buffer for every frame

def test_keepalive_ping_over_the_hard_limit_aborts_1008(clock):
    conn = HoldingWire(clock, ping_interval=2, ping_timeout=10, write_timeout=None,
                       write_limit=1024, max_write_buffer=4096)
    paused(conn, 5000)
    advance(conn, clock, 2.1)  # silent for ping_interval: a keepalive ping
    assert conn.take() == [b"\x89\x00"]
    assert conn.io == ["abort"] and conn.sent_close_code == 1008


def test_keepalive_ping_under_the_hard_limit_is_written(clock):
    conn = HoldingWire(clock, ping_interval=2, ping_timeout=10, write_timeout=None,
                       write_limit=1024, max_write_buffer=4096)
    paused(conn, 2000)
    advance(conn, clock, 2.1)
    assert conn.take() == [b"\x89\x00"] and conn.io == []


def test_close_reply_over_the_hard_limit_aborts_1008(clock):
    conn = HoldingWire(clock, ping_interval=None, write_limit=1024, max_write_buffer=4096)
    paused(conn, 5000)
    conn.data_received(client_frame(OP_CLOSE, close_payload(1000)))
    assert conn.take() == [server_frame(OP_CLOSE, close_payload(1000))]
    assert "abort" in conn.io and conn.sent_close_code == 1008


def test_server_close_waits_at_most_close_timeout_for_a_peer_that_does_not_read(clock):
    # The peer sends its close frame but reads nothing: closing TCP flushes
    # first, which would never end; close_timeout aborts.
    conn = HoldingWire(clock, ping_interval=None, close_timeout=2)
    paused(conn, 2000)
    conn.data_received(client_frame(OP_CLOSE, close_payload(1000)))
    assert conn.io == ["close"]
    advance(conn, clock, 2.1)
    assert conn.io == ["close", "abort"]


def test_application_ping_and_pong_obey_the_hard_limit(clock):
    for method in ("send_ping", "send_pong"):
        conn = HoldingWire(clock, ping_interval=None, write_limit=1024, max_write_buffer=4096)
        paused(conn, 5000)
        getattr(conn, method)(b"x")
        assert conn.io == ["abort"] and conn.sent_close_code == 1008, method


# ------------------------------------------------------------ no reservation from a declared length

def header(opcode: int, length: int) -> bytes:
    """A masked client frame header announcing ``length`` bytes (64-bit length)."""
    return bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length) + b"\x00\x00\x00\x00"


@pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT])
@pytest.mark.parametrize("max_size", [32 << 20, None])
def test_a_declared_16mib_frame_reserves_what_arrived(impl, opcode, max_size):
    events = []
    p = impl.FrameParser(events.append, lambda *a: events.append(a), expect_masked=True, max_size=max_size)
    p.feed(header(opcode, 16 << 20) + b"a" * 15)
    assert p.reserved <= 64 * 1024, p.reserved
    if p.wants_direct():  # the extension: the next read goes into the message
        view = p.get_buffer(-1)
        assert len(view) <= 64 * 1024
        p.buffer_updated(0)
        assert p.reserved <= 64 * 1024, p.reserved
    # The rest arrives: memory grows with it, geometrically, to the message.
    size, sent = 16 << 20, 15
    chunk = b"a" * (1 << 20)
    while sent < size:
        piece = chunk[: size - sent]
        p.feed(piece)
        sent += len(piece)
        assert p.reserved <= max(64 * 1024, 2 * sent + 64 * 1024), (sent, p.reserved)
    assert events == [("a" if opcode == OP_TEXT else b"a") * size]
    assert p.reserved <= 64 * 1024  # released when done (the result is the application's)


def test_three_hundred_half_frames_reserve_little(impl):
    parsers = []
    for _ in range(300):
        p = impl.FrameParser(lambda m: None, lambda *a: None, expect_masked=True, max_size=None)
        p.feed(header(OP_BINARY, 16 << 20) + b"x" * 15)
        parsers.append(p)
    assert sum(p.reserved for p in parsers) <= 300 * 64 * 1024
