"""fastws.syncclient on the protocol core.

``SyncWebSocket`` is ``fastws.protocol.Connection`` on a blocking socket: the
states, the closing handshake, the ping answers and the close code of each
protocol error are the core's, not a copy. The first tests check that at the
byte level over a socketpair (the far end plays the server, frames written by
hand): the frames the client answers with are built by the core
(``fastws.protocol.build_frame``), and the core's close timeout fires from the
reading loop's ManualDriver. The others run against a real ``websockets``
server (its asyncio server on its own loop in a thread). Both implementations
run this file (the FASTWS_PURE_PYTHON=1 pass of tests/run.sh).
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

import fastws.protocol
import fastws.syncclient
from fastws import codec
from fastws.constants import CLOSED, CLOSING, OP_CLOSE, OP_PONG, OPEN
from fastws.exceptions import ConnectionClosedError, ConnectionClosedOK
from fastws.options import Options
from fastws.protocol import Connection
from fastws.syncclient import SyncWebSocket, connect
from fastws.timers import ManualDriver


# ------------------------------------------------------------ helpers
def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def read_client_frames(sock, timeout=5.0) -> list:
    """(opcode, payload) of every frame the client wrote until it ended TCP."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    frames = []
    while buf:
        assert buf[1] & 0x80, "client frames are masked (RFC 6455 5.3)"
        n = buf[1] & 0x7F
        assert n < 126
        key, payload = buf[2:6], buf[6:6 + n]
        frames.append((buf[0] & 0x0F, codec.masked(payload, key)))
        buf = buf[6 + n:]
    return frames


@pytest.fixture
def pair():
    """(client, server end): a SyncWebSocket on one end of a socketpair."""
    a, b = socket.socketpair()
    ws = SyncWebSocket(a)
    yield ws, b
    ws.abort()
    b.close()


# ------------------------------------------------------------ it is the core
def test_it_is_the_protocol_core_with_no_state_machine_of_its_own(pair):
    ws, _ = pair
    assert issubclass(SyncWebSocket, Connection) and isinstance(ws, Connection)
    own = vars(SyncWebSocket)
    # the core's: states, closing handshake, ping answers, close codes
    for name in ("_on_control", "_fail", "_send_close", "_connection_lost", "_state", "close_code",
                 "sent_close_code", "close_reason", "subprotocol", "closed", "headers"):
        assert name not in own, name
    for name in ("build_frame", "FrameParser", "close_payload", "struct"):
        assert not hasattr(fastws.syncclient, name), name
    assert isinstance(ws._driver, ManualDriver) and ws._is_client and not ws.armed
    assert ws._state == OPEN and ws.open is True and ws.is_open and not ws.closed
    assert callable(SyncWebSocket.open)  # the class-level constructor
    assert not hasattr(ws, "__dict__")   # __slots__ all the way


def test_ping_answer_and_close_echo_are_built_by_the_core(pair, monkeypatch):
    ws, srv = pair
    built = []
    real = fastws.protocol.build_frame

    def spy(opcode, payload=b"", *args, **kwargs):
        built.append((opcode, bytes(payload), kwargs.get("mask")))
        return real(opcode, payload, *args, **kwargs)

    monkeypatch.setattr(fastws.protocol, "build_frame", spy)
    srv.sendall(server_frame(0x9, b"abc") + server_frame(0x1, b"hi")
                + server_frame(OP_CLOSE, struct.pack("!H", 4000) + b"bye"))
    srv.shutdown(socket.SHUT_WR)  # the server ends TCP after its CLOSE
    assert ws.recv(timeout=5) == "hi"
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert (info.value.code, info.value.reason, info.value.sent_code) == (4000, "bye", 4000)
    assert built == [(OP_PONG, b"abc", True), (OP_CLOSE, struct.pack("!H", 4000) + b"bye", True)]
    # the core echoes the reason too (RFC 6455 5.5.1)
    assert read_client_frames(srv) == [(OP_PONG, b"abc"), (OP_CLOSE, struct.pack("!H", 4000) + b"bye")]
    assert ws.pings_answered == 1 and ws.closed
    assert (ws.close_code, ws.recv_code, ws.recv_reason, ws.sent_code) == (4000, 4000, "bye", 4000)
    assert ws.close_reason == "bye" and ws.sent_close_code == 4000


@pytest.mark.parametrize("frame,code", [
    (b"\x83\x00", 1002),                                # reserved opcode
    (b"\x81\x02\xc3\x28", 1007),                        # invalid UTF-8
    (b"\x82\x7f" + struct.pack("!Q", 2**40), 1009),     # over max_size
])
def test_protocol_error_is_failed_by_the_core(pair, frame, code):
    ws, srv = pair
    srv.sendall(frame)
    srv.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1006 and info.value.sent_code == code
    assert ws.close_code == code and ws.recv_code is None and ws.sent_code == code
    assert ws.error is not None and getattr(ws.error, "code", None) == code
    # the core's _fail: CLOSE with the code, then a half-close (EOF)
    frames = read_client_frames(srv)
    assert len(frames) == 1 and frames[0][0] == OP_CLOSE
    assert struct.unpack("!H", frames[0][1][:2])[0] == code


def test_eof_without_close_is_1006(pair):
    ws, srv = pair
    srv.sendall(server_frame(0x2, b"\x00\x01"))
    srv.shutdown(socket.SHUT_WR)
    assert ws.recv(timeout=5) == b"\x00\x01"
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1006 and info.value.sent_code is None
    assert ws.close_code == 1006 and ws.closed


def test_close_timeout_fires_from_the_read_loop(pair):
    """The server sends CLOSE but never ends TCP: the core's close timeout
    (armed on the ManualDriver) ends the connection, with no recv timeout."""
    ws, srv = pair
    ws._opts = Options(close_timeout=0.3, ping_interval=None)
    srv.sendall(server_frame(OP_CLOSE, struct.pack("!H", 1000)))
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosedOK) as info:
        ws.recv()  # no timeout of its own
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 3, elapsed
    assert info.value.code == 1000 and ws.closed and ws.close_code == 1000


def test_close_without_answer_gives_up_after_timeout(pair):
    ws, srv = pair
    t0 = time.monotonic()
    ws.close(4001, "x", timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    assert ws.closed and ws.sent_code == 4001 and ws.recv_code is None and ws.close_code == 1006
    assert read_client_frames(srv) == [(OP_CLOSE, struct.pack("!H", 4001) + b"x")]


def test_client_close_waits_for_the_server_to_end_tcp(pair):
    ws, srv = pair
    states = []
    ws.on_close = lambda w: states.append(w._state)

    def server():
        buf = srv.recv(100)
        assert buf[0] == 0x80 | OP_CLOSE
        srv.sendall(server_frame(OP_CLOSE, struct.pack("!H", 1000)))
        time.sleep(0.2)
        srv.close()  # RFC 6455 7.1.1: the server ends TCP first

    t = threading.Thread(target=server)
    t.start()
    t0 = time.monotonic()
    ws.close()
    t.join(5)
    assert time.monotonic() - t0 >= 0.15
    assert ws.closed and states == [CLOSED] and ws.close_code == 1000


# ------------------------------------------------------------ a real websockets server
@pytest.fixture(scope="module")
def ws_server():
    """A websockets asyncio server on its own loop in a thread: echoes;
    "close:<code>:<reason>" makes it close; "ping" makes it ping."""
    from websockets.asyncio.server import serve

    received = []

    async def handler(ws):
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    await ws.close(int(code), reason)
                    return
                if message == "ping":
                    await ws.ping(b"srv")
                await ws.send(message)
        finally:
            received.append((ws.close_code, ws.close_reason))

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def main():
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["stop"] = loop.create_future()
            ready.set()
            await holder["stop"]

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert ready.wait(5)
    yield f"ws://127.0.0.1:{holder['port']}", received
    loop.call_soon_threadsafe(holder["stop"].set_result, None)
    t.join(5)
    loop.close()


def test_websockets_echo_ping_and_client_close(ws_server):
    url, received = ws_server
    ws = connect(url + "/echo")
    assert ws.open and ws.response_headers is ws.headers and ws.headers["Upgrade"].lower() == "websocket"
    for msg in ["héllo", b"\x00" * 70000, ""]:
        assert ws.send(msg) > len(msg)
        assert ws.recv(timeout=5) == msg
    ws.send("ping")  # the server pings us: the core answers
    assert ws.recv(timeout=5) == "ping"
    assert 0 < ws.ping(timeout=5) < 5
    assert ws.messages_out == 4 and ws.messages_in == 4 and ws.bytes_in > 70000 < ws.bytes_out
    ws.close(4100, "done")
    assert ws.closed and not ws.open and ws.close_code == 4100 and ws.recv_code == 4100
    assert _wait(lambda: (4100, "done") in received)
    with pytest.raises(ConnectionClosedError):
        ws.send("late")


def test_websockets_server_close_is_echoed(ws_server):
    url, received = ws_server
    ws = connect(url)
    ws.send("close:4200:see you")
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert (info.value.code, info.value.reason, info.value.sent_code) == (4200, "see you", 4200)
    assert ws.closed and ws.close_code == 4200 and ws.error is None
    assert _wait(lambda: any(code == 4200 for code, _ in received))


def test_websockets_background_reader(ws_server):
    url, _ = ws_server
    ws = connect(url)
    got, closed = [], []
    done = threading.Event()

    def on_message(m):
        got.append(m)
        if len(got) == 20:
            done.set()

    ws.on_close = closed.append
    ws.start_reader(on_message)
    for i in range(20):
        ws.send(str(i))
    assert ws.ping(timeout=5) > 0
    assert done.wait(5) and got == [str(i) for i in range(20)]
    ws.close()
    assert ws.closed and ws.close_code == 1000 and closed == [ws]
    assert ws._reader.join(5) is None and not ws._reader.is_alive()


def test_state_while_closing(ws_server):
    url, _ = ws_server
    ws = connect(url)
    seen = []
    ws.on_close = lambda w: seen.append((w._state, w.close_code))
    Connection.close(ws, 1000)  # the core's close: CLOSING until the server answers
    assert ws._state == CLOSING and not ws.open and not ws.closed and ws.sent_code == 1000
    with pytest.raises(ConnectionClosedOK):
        ws.recv(timeout=5)  # reads the rest of the closing handshake
    assert seen == [(CLOSED, 1000)]


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()
