"""The send methods of a connection (``conn_send`` / ``ws_send`` of
fastws_ext.core and its twin fastws._py.core) on a connection whose I/O goes
to lists: the same frames, the same paths and the same errors from both
implementations. (data_received is tests/test_lone_control.py's.)"""
from __future__ import annotations

import pytest

from fastws._py.frames import build_frame
from fastws.exceptions import ConnectionClosed
from fastws.options import Options
from fastws.constants import CLOSING, LARGE_PAYLOAD, OPEN
from fastws.protocol import Connection


def list_connection_class(impl):
    """A connection on ``impl``'s ConnectionCore whose I/O goes to lists
    (the general paths are Connection's own methods)."""

    class ListConnection(impl.ConnectionCore):
        __slots__ = ("_state", "_write", "_opts", "_parser", "close_code", "close_reason",
                     "sent_close_code", "out", "lines", "events", "buffered", "_deflate")

        def __init__(self, is_client=False):
            self._is_client = is_client
            self._general_send = is_client
            self._deflate = None
            self._opts = Options()
            self._parser = None
            self.close_code = None
            self.close_reason = ""
            self.sent_close_code = None
            self.out = []
            self.lines = []
            self.events = []
            self.buffered = 0
            self._write = self.out.append
            self._state = OPEN
            self._paused_writing = False

        _send_general = Connection._send_general
        _check_write_buffer = Connection._check_write_buffer
        _closed_error = Connection._closed_error
        remote_address = None

        def _writelines(self, parts):
            self.lines.append(tuple(parts))

        def _write_buffer_size(self):
            return self.buffered

        def _abort_transport(self):
            self.events.append("aborted")

        def _drain(self):
            return "drain"

    return ListConnection


@pytest.mark.parametrize("data", [b"", b"x" * 125, b"y" * 126, b"z" * 70000, "h\u00e9llo", bytearray(b"ba"),
                                  memoryview(b"mv"), "t" * 20000])
def test_send_writes_the_same_frames(impl, data):
    conn = list_connection_class(impl)()
    assert impl.conn_send(conn, data) is True
    opcode = 1 if isinstance(data, str) else 2
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(data) >= LARGE_PAYLOAD:  # header + payload, no copy
        assert conn.out == [] and len(conn.lines) == 1
        assert b"".join(conn.lines[0]) == build_frame(opcode, raw)
    else:
        assert conn.out == [build_frame(opcode, raw)] and conn.lines == []


def test_client_frames_are_masked(impl):
    conn = list_connection_class(impl)(is_client=True)
    impl.conn_send(conn, b"abc")
    frame = conn.out[0]
    assert frame[0] == 0x82 and frame[1] == 0x80 | 3
    key = frame[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(frame[6:])) == b"abc"


def test_send_when_not_open_or_paused(impl):
    cls = list_connection_class(impl)
    conn = cls()
    conn._state = CLOSING
    with pytest.raises(ConnectionClosed):
        impl.conn_send(conn, b"x")
    with pytest.raises(ConnectionClosed):
        impl.ws_send(conn, b"x")
    assert conn.out == []

    conn = cls()
    assert impl.ws_send(conn, b"x") is impl.DONE
    conn._paused_writing = True  # above write_limit: False / a drain awaitable
    assert impl.conn_send(conn, b"y") is False
    assert impl.ws_send(conn, b"z") == "drain"
    assert len(conn.out) == 3
    conn.buffered = conn._opts.max_write_buffer + 1  # over the hard limit: cut off
    assert impl.conn_send(conn, b"w") is False
    assert "aborted" in conn.events


def test_only_connections_are_accepted(impl):
    for fn in (impl.conn_send, impl.ws_send):
        with pytest.raises(TypeError, match="fastws connection"):
            fn(object(), b"x")
