"""The per-message connection methods (fastws_ext.conn and its twin
fastws._py.conn) on a Connection whose I/O goes to lists: the same frames,
the same paths and the same errors from both implementations."""
from __future__ import annotations

import os

import pytest

from fastws import protocol
from fastws._py.frames import build_frame
from fastws.exceptions import ConnectionClosed, ProtocolError
from fastws.options import Options
from fastws.protocol import CLOSING, LARGE_PAYLOAD, OPEN, Connection


class ListConnection(Connection):
    __slots__ = ("out", "lines", "events", "buffered")

    def __init__(self, is_client=False):
        Connection.__init__(self, Options(), is_client)
        self.out = []
        self.lines = []
        self.events = []
        self.buffered = 0
        self._write = self.out.append
        self._state = OPEN

    def _writelines(self, parts):
        self.lines.append(tuple(parts))

    def _write_buffer_size(self):
        return self.buffered

    def _data_without_parser(self, data):
        self.events.append(("no parser", data))

    def _input_failed(self, exc):
        self.events.append(("failed", type(exc).__name__))

    def _drain(self):
        return "drain"

    def _abort_transport(self):
        self.events.append("aborted")


class FakeParser:
    def __init__(self, exc=None):
        self.fed = []
        self.exc = exc

    def feed(self, data):
        self.fed.append(data)
        if self.exc is not None:
            raise self.exc


@pytest.fixture
def conn_impl(impl):
    impl.conn_bind(Connection, LARGE_PAYLOAD, impl.DONE)
    yield impl
    # leave the running implementation bound as fastws.protocol bound it
    protocol.codec.conn_bind(Connection, LARGE_PAYLOAD, protocol.codec.DONE)


@pytest.mark.parametrize("data", [b"", b"x" * 125, b"y" * 126, b"z" * 70000, "h\u00e9llo", bytearray(b"ba"),
                                  memoryview(b"mv"), "t" * 20000])
def test_send_writes_the_same_frames(conn_impl, data):
    conn = ListConnection()
    assert conn_impl.conn_send(conn, data) is True
    opcode = 1 if isinstance(data, str) else 2
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(data) >= LARGE_PAYLOAD:  # header + payload, no copy
        assert conn.out == [] and len(conn.lines) == 1
        assert b"".join(conn.lines[0]) == build_frame(opcode, raw)
    else:
        assert conn.out == [build_frame(opcode, raw)] and conn.lines == []


def test_client_frames_are_masked(conn_impl):
    conn = ListConnection(is_client=True)
    conn_impl.conn_send(conn, b"abc")
    frame = conn.out[0]
    assert frame[0] == 0x82 and frame[1] == 0x80 | 3
    key = frame[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(frame[6:])) == b"abc"


def test_send_when_not_open_or_paused(conn_impl):
    conn = ListConnection()
    conn._state = CLOSING
    with pytest.raises(ConnectionClosed):
        conn_impl.conn_send(conn, b"x")
    with pytest.raises(ConnectionClosed):
        conn_impl.ws_send(conn, b"x")
    assert conn.out == []

    conn = ListConnection()
    assert conn_impl.ws_send(conn, b"x") is conn_impl.DONE
    conn._paused_writing = True  # above write_limit: False / a drain awaitable
    assert conn_impl.conn_send(conn, b"y") is False
    assert conn_impl.ws_send(conn, b"z") == "drain"
    assert len(conn.out) == 3
    conn.buffered = conn._opts.max_write_buffer + 1  # over the hard limit: cut off
    assert conn_impl.conn_send(conn, b"w") is False
    assert "aborted" in conn.events


def test_data_received_paths(conn_impl):
    conn = ListConnection()
    conn_impl.conn_data_received(conn, b"early")
    assert conn.events == [("no parser", b"early")]
    conn._parser = parser = FakeParser()
    conn_impl.conn_data_received(conn, b"abc")
    assert parser.fed == [b"abc"]
    conn._parser = FakeParser(ProtocolError(1002, "bad"))
    conn_impl.conn_data_received(conn, b"x")  # never raises: goes to _input_failed
    assert conn.events[-1] == ("failed", "ProtocolError")


def test_real_parser_through_data_received(conn_impl):
    conn = ListConnection()
    got = []
    conn._parser = conn_impl.FrameParser(got.append, lambda op, p: got.append((op, p)), expect_masked=True)
    frame = build_frame(2, b"payload", mask_key=os.urandom(4))
    conn_impl.conn_data_received(conn, frame[:3])
    conn_impl.conn_data_received(conn, frame[3:])
    assert got == [b"payload"]


def test_only_connections_are_accepted(conn_impl):
    for fn in (conn_impl.conn_send, conn_impl.ws_send, conn_impl.conn_data_received):
        with pytest.raises(TypeError, match="fastws connection"):
            fn(object(), b"x")
