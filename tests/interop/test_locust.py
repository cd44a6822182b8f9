"""fastws.syncclient and fastws.locust.

- The sync client against real servers: a `websockets` server in a thread, and
  fastws; and against a raw socket server that breaks the protocol on purpose
  (masked frames, bad opcodes, invalid UTF-8, oversized messages, a wrong
  Sec-WebSocket-Accept), checking the close code the client sends back.
- locust itself, headless in a subprocess (locust monkey-patches the process
  with gevent, so it never runs inside pytest): the example locustfile against
  a fastws echo server, asserting from locust's CSV output that connects,
  round trips, pings and receives were made and none failed; and a run against
  a server that breaks the protocol, asserting the failure and its close code.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from websockets.sync.server import serve as ws_sync_serve

from fastws import codec
from fastws.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
)
from fastws.apps import EchoListener
from fastws.syncclient import connect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ------------------------------------------------------- websockets server --
@pytest.fixture
def websockets_server():
    """A `websockets` (sync API) server in a thread; its handler echoes, and
    closes with 4002 "bye" when told "close-me"; records the close code it
    receives."""
    seen = {}

    def handler(ws):
        try:
            for message in ws:
                if message == "close-me":
                    ws.close(4002, "bye")
                    return
                ws.send(message)
        finally:
            seen["code"] = ws.close_code
            seen["reason"] = ws.close_reason

    def select(conn, offered):
        return "chat.v2" if "chat.v2" in offered else None

    server = ws_sync_serve(handler, "127.0.0.1", 0, select_subprotocol=select, compression=None,
                           max_size=None)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    port = server.socket.getsockname()[1]
    yield port, seen
    server.shutdown()
    t.join(5)


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_websockets_echo_ping_close(websockets_server):
    port, seen = websockets_server
    ws = connect(f"ws://127.0.0.1:{port}/x?y=1", subprotocols=["chat.v1", "chat.v2"])
    assert ws.subprotocol == "chat.v2"
    for msg in ["", "hé€😀", "x" * 70000, b"", b"\x00\xff" * 40000]:
        ws.send(msg)
        assert ws.recv(timeout=5) == msg
    rtt = ws.ping(timeout=5)
    assert 0 < rtt < 5
    ws.close(4001, "custom")
    assert ws.closed and ws.recv_code == 4001 and ws.close_code == 4001
    assert _wait(lambda: "code" in seen)
    assert seen == {"code": 4001, "reason": "custom"}
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=1)
    assert info.value.code == 4001
    with pytest.raises(ConnectionClosed):
        ws.send("late")


def test_websockets_server_closes(websockets_server):
    port, seen = websockets_server
    ws = connect(f"ws://127.0.0.1:{port}/")
    ws.send("close-me")
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert (info.value.code, info.value.reason) == (4002, "bye")
    assert ws.sent_code == 4002  # the close was answered with the same code
    assert _wait(lambda: "code" in seen) and seen["code"] == 4002


def test_background_reader_and_ping(websockets_server):
    port, _ = websockets_server
    ws = connect(f"ws://127.0.0.1:{port}/")
    got = []
    done = threading.Event()

    def on_message(m):
        got.append(m)
        if len(got) == 50:
            done.set()

    ws.start_reader(on_message)
    with pytest.raises(RuntimeError):
        ws.recv(timeout=1)
    for i in range(50):
        ws.send(str(i))
    assert ws.ping(timeout=5) > 0  # the reader sees the PONG and wakes us
    assert done.wait(5)
    assert got == [str(i) for i in range(50)]
    ws.close()
    assert ws.close_code == 1000


def test_handshake_refused_and_timeout():
    with pytest.raises(InvalidStatus) as info:
        # fastws serves 404 for a path the chat app does not know
        srv = _RawServer(lambda conn, key: conn.sendall(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
        try:
            connect(f"ws://127.0.0.1:{srv.port}/", timeout=5)
        finally:
            srv.close()
    assert info.value.status == 403


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OSError):
        connect(f"ws://127.0.0.1:{port}/", timeout=2)


# ------------------------------------------------------------------ fastws --
def test_fastws_echo_close_codes(serve_thread):
    closed = {}

    async def handler(ws):
        try:
            while True:
                msg = await ws.recv()
                if msg == "close-me":
                    await ws.close(4003, "go away")
                    return
                await ws.send(msg)
        except ConnectionClosed as exc:
            closed["code"] = exc.code

    st = serve_thread(handler)
    url = f"ws://127.0.0.1:{st.port}/"
    ws = connect(url)
    ws.send("a" * 200000)
    assert ws.recv(timeout=5) == "a" * 200000
    assert ws.ping() > 0
    ws.close(4005)
    assert ws.recv_code == 4005
    assert _wait(lambda: "code" in closed) and closed["code"] == 4005

    ws = connect(url)
    ws.send("close-me")
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert (info.value.code, info.value.reason) == (4003, "go away")


def test_fastws_source_address(serve_thread):
    st = serve_thread(EchoListener)
    ws = connect(f"ws://127.0.0.1:{st.port}/", source_address="127.0.0.7")
    assert ws.sock.getsockname()[0] == "127.0.0.7"
    ws.send("x")
    assert ws.recv(5) == "x"
    ws.close()


def test_fastws_too_big_for_server(serve_thread):
    st = serve_thread(EchoListener, max_size=1000)
    ws = connect(f"ws://127.0.0.1:{st.port}/")
    ws.send(b"x" * 2000)
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(timeout=5)
    assert info.value.code == 1009


def test_recv_timeout(serve_thread):
    st = serve_thread(EchoListener)
    ws = connect(f"ws://127.0.0.1:{st.port}/")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    assert time.monotonic() - t0 >= 0.19
    ws.send("still open")
    assert ws.recv(5) == "still open"
    ws.close()


# --------------------------------------------------------------- raw server --
class _RawServer:
    """Accepts one connection, reads the upgrade request, calls
    ``script(conn, key)`` in a thread; records what the client sends after."""

    def __init__(self, script):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.frames = []      # (opcode, payload, mask key) from the client
        self.error = None
        self.done = threading.Event()
        self._script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            self._script(conn, key)
            self._read_frames(conn)
            conn.close()
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    def _read_frames(self, conn):
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except (socket.timeout, OSError):
                return
            if not data:
                return
            buf += data
            while len(buf) >= 6:
                b1 = buf[1] & 0x7F
                assert buf[1] & 0x80, "client frame not masked"
                pos = 2
                if b1 == 126:
                    b1 = struct.unpack("!H", buf[2:4])[0]
                    pos = 4
                elif b1 == 127:
                    b1 = struct.unpack("!Q", buf[2:10])[0]
                    pos = 10
                if len(buf) < pos + 4 + b1:
                    break
                key = buf[pos:pos + 4]
                payload = codec.masked(buf[pos + 4:pos + 4 + b1], key)
                self.frames.append((buf[0] & 0x0F, payload, key))
                buf = buf[pos + 4 + b1:]

    def close(self):
        self.sock.close()


def _accept(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _ok(conn, key, accept=None):
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept or _accept(key)}\r\n\r\n").encode())


BAD_FRAMES = [
    # (what the server sends after the handshake, close code the client must send)
    (b"\x81\x82abcd" + codec.masked(b"hi", b"abcd"), 1002),   # masked server frame
    (b"\x83\x00", 1002),                                      # reserved opcode 3
    (b"\xc1\x02hi", 1002),                                    # RSV1 without extension
    (b"\x09\x00", 1002),                                      # fragmented PING
    (b"\x81\x02\xc3\x28", 1007),                              # invalid UTF-8 text
    (b"\x82\x7f" + struct.pack("!Q", 2**40), 1009),           # 1 TiB message (max_size)
]


@pytest.mark.parametrize("frame,code", BAD_FRAMES, ids=[str(i) for i in range(len(BAD_FRAMES))])
def test_protocol_errors_get_their_close_code(frame, code):
    srv = _RawServer(lambda conn, key: (_ok(conn, key), conn.sendall(frame)))
    try:
        ws = connect(f"ws://127.0.0.1:{srv.port}/")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1006 and info.value.sent_code == code
        assert ws.close_code == code
        assert srv.done.wait(5) and srv.error is None
        closes = [p for op, p, _ in srv.frames if op == 8]
        assert closes and struct.unpack("!H", closes[0][:2])[0] == code
    finally:
        srv.close()


def test_wrong_accept_key_is_refused():
    srv = _RawServer(lambda conn, key: _ok(conn, key, accept=_accept("wrong" + key)))
    try:
        with pytest.raises(InvalidResponse, match="Sec-WebSocket-Accept"):
            connect(f"ws://127.0.0.1:{srv.port}/", timeout=5)
    finally:
        srv.close()


def test_ping_answered_frames_masked_eof_is_1006():
    def script(conn, key):
        _ok(conn, key)
        conn.sendall(b"\x89\x03abc" + b"\x81\x05hello")  # PING "abc", then a text message
        time.sleep(0.3)
        conn.shutdown(socket.SHUT_WR)  # EOF without a CLOSE

    srv = _RawServer(script)
    try:
        ws = connect(f"ws://127.0.0.1:{srv.port}/")
        assert ws.recv(timeout=5) == "hello"
        ws.send("one")
        ws.send("two")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1006 and ws.close_code == 1006
        assert ws.pings_answered == 1
        assert srv.done.wait(5) and srv.error is None
        frames = srv.frames
        assert (10, b"abc") in [(op, p) for op, p, _ in frames]  # the PONG
        data = [(p, k) for op, p, k in frames if op == 1]
        assert [p for p, _ in data] == [b"one", b"two"]
        assert data[0][1] != data[1][1]  # a fresh mask key per frame
    finally:
        srv.close()


def test_server_close_without_status_is_answered():
    srv = _RawServer(lambda conn, key: (_ok(conn, key), conn.sendall(b"\x88\x00")))
    try:
        ws = connect(f"ws://127.0.0.1:{srv.port}/")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1005
        assert srv.done.wait(5)
        assert [(op, p) for op, p, _ in srv.frames] == [(8, b"")]
    finally:
        srv.close()


# ------------------------------------------------------------------ locust --
def _locust(args, cwd, timeout):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "locust", "--headless", "--ws-stats-interval", "0"] + args
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _rows(path):
    with open(path) as f:
        return {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}


def test_headless_locust_run_against_fastws(serve_thread, tmp_path):
    st = serve_thread(EchoListener)
    out = tmp_path / "run"
    proc = _locust(["-f", os.path.join(ROOT, "examples", "locustfile.py"),
                    "--host", f"ws://127.0.0.1:{st.port}", "-u", "200", "-r", "100", "-t", "10s",
                    "--csv", str(out), "--ws-stats-file", str(tmp_path / "ws.json")],
                   cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(f"{out}_stats.csv")
    total = rows[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0, proc.stderr[-3000:]
    assert int(rows[("CONNECT", "/")]["Request Count"]) == 200
    for key in [("REQ", "echo"), ("PING", "ping"), ("SEND", "send/recv"), ("RECV", "send/recv")]:
        assert int(rows[key]["Request Count"]) > 20, key
        assert int(rows[key]["Failure Count"]) == 0, key
    # Each user closed at the end (on_stop).  locust writes its last CSV row
    # before stopping the users, so the CLOSEs are in the final printed table.
    closes = [line.split() for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("CLOSE ") and "|" in line]
    assert closes and closes[-1][1:4] == ["/", "200", "0(0.00%)"], closes
    # round trips are real measurements, not zeros
    assert float(rows[("REQ", "echo")]["Average Response Time"]) > 0
    assert float(rows[("CONNECT", "/")]["Min Response Time"]) > 0
    # a receive has no latency to report: no response time at all, and a size
    assert float(rows[("RECV", "send/recv")]["Average Content Size"]) == 1024
    with open(f"{out}_failures.csv") as f:
        assert len(list(csv.DictReader(f))) == 0
    ws = json.loads((tmp_path / "ws.json").read_text())
    assert ws["opened"] == 200 and ws["peak_open"] == 200 and ws["open"] == 0
    assert ws["close_codes"] == {"1000": 200}
    assert ws["bytes_in"] > 0 and ws["bytes_out"] > ws["bytes_in"] * 0.5


LOCUSTFILE_BAD = '''
from locust import task, constant
from fastws.locust import WebSocketUser

class Bad(WebSocketUser):
    wait_time = constant(0.2)
    def on_start(self):
        self.connect("/")
    @task
    def once(self):
        self.recv(timeout=2, name="recv")
        self.connect("/")
'''


def test_headless_locust_reports_protocol_error(tmp_path):
    """A server that answers the handshake and then sends invalid UTF-8: each
    receive fails and the failure names the close code the client sent."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def serve():
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                conn.settimeout(2)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                key = [ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\r\n")
                       if ln.lower().startswith(b"sec-websocket-key:")][0]
                _ok(conn, key)
                conn.sendall(b"\x81\x02\xc3\x28")
                conn.recv(100)
            except OSError:
                pass
            finally:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    (tmp_path / "bad.py").write_text(LOCUSTFILE_BAD)
    out = tmp_path / "bad"
    try:
        proc = _locust(["-f", str(tmp_path / "bad.py"), "--host", f"ws://127.0.0.1:{port}",
                        "-u", "3", "-r", "3", "-t", "3s", "--csv", str(out)],
                       cwd=str(tmp_path), timeout=60)
    finally:
        stop.set()
        t.join(5)
        lsock.close()
    assert proc.returncode == 1  # locust's exit status when requests failed
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("CONNECT", "/")]["Failure Count"]) == 0
    assert int(rows[("RECV", "recv")]["Failure Count"]) > 0
    assert int(rows[("CLOSE", "protocol error")]["Failure Count"]) > 0
    with open(f"{out}_failures.csv") as f:
        errors = " ".join(r["Error"] for r in csv.DictReader(f))
    assert "1007" in errors, errors


def test_headless_locust_chat_fanout_latency(serve_thread, tmp_path):
    """bench/locustfile.py ChatUser against the chat room: a background receive
    loop, login by request() matched in that loop, and every broadcast reported
    with the delay from its send timestamp (a real latency, never 0 for all)."""
    from fastws.apps.chat import chat_app

    st = serve_thread(**chat_app())  # its own max_size (the character limit's worst case)
    out = tmp_path / "chat"
    os.environ["FASTWS_CHAT_WAIT"] = "0.5"
    try:
        proc = _locust(["-f", os.path.join(ROOT, "bench", "load", "locustfile.py"), "ChatUser",
                        "--host", f"ws://127.0.0.1:{st.port}", "-u", "20", "-r", "20", "-t", "8s",
                        "--csv", str(out)], cwd=str(tmp_path), timeout=60)
    finally:
        del os.environ["FASTWS_CHAT_WAIT"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert int(rows[("CONNECT", "/ws")]["Request Count"]) == 20
    assert int(rows[("REQ", "chat login")]["Request Count"]) == 20
    sends = int(rows[("SEND", "chat send")]["Request Count"])
    fanout = rows[("RECV", "chat fanout")]
    # every message reaches every user logged in at that time: about 20 per send
    assert sends > 20 and int(fanout["Request Count"]) > sends * 5
    assert float(fanout["Max Response Time"]) > 0
    assert float(fanout["Average Content Size"]) > 40


# --------------------------------------------------------- locust PoolUser --
LOCUSTFILE_POOL = '''
from fastws.locust import PoolUser

class Pool(PoolUser):
    connections = 100          # x 2 users: 200 connections, two greenlets
    ping_interval = 1.0
    message_interval = 1.5     # an echo round trip per connection: RECV with its latency
    connect_rate = None
    source_addresses = 8
'''


def _pool_run(tmp_path, port, seconds=6):
    (tmp_path / "pool.py").write_text(LOCUSTFILE_POOL)
    out = tmp_path / "pool"
    proc = _locust(["-f", str(tmp_path / "pool.py"), "--host", f"ws://127.0.0.1:{port}",
                    "-u", "2", "-r", "2", "-t", f"{seconds}s", "--csv", str(out),
                    "--ws-stats-file", str(tmp_path / "ws.json")], cwd=str(tmp_path), timeout=90)
    return proc, out


def _check_pool_run(proc, out, tmp_path):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0, proc.stderr[-3000:]
    connect = rows[("CONNECT", "/")]
    assert int(connect["Request Count"]) == 200          # one CONNECT per connection of the pools
    assert float(connect["Min Response Time"]) > 0       # a measured connect + handshake, not 0
    pings = rows[("PING", "ping")]
    assert int(pings["Request Count"]) >= 200            # every connection pinged at least once
    assert float(pings["Average Response Time"]) > 0
    recv, send = rows[("RECV", "/")], rows[("SEND", "/")]
    assert int(send["Request Count"]) >= 200
    assert int(recv["Request Count"]) >= 150             # the echoes that came back before the end
    assert float(recv["Max Response Time"]) > 0          # a latency read from the echoed send time
    assert float(recv["Average Content Size"]) == 32
    closes = [line.split() for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("CLOSE ") and "|" in line]
    assert closes and closes[-1][1:4] == ["/", "200", "0(0.00%)"], closes
    with open(f"{out}_failures.csv") as f:
        assert len(list(csv.DictReader(f))) == 0
    ws = json.loads((tmp_path / "ws.json").read_text())
    assert ws["opened"] == 200 and ws["peak_open"] == 200 and ws["open"] == 0
    assert ws["close_codes"] == {"1000": 200}
    # (locust writes its CSV before the users stop: the echoes of the last moments are only here)
    assert ws["messages_in"] >= int(recv["Request Count"]) and ws["messages_out"] >= int(send["Request Count"])
    assert ws["messages_out"] >= ws["messages_in"] > 0
    with open(f"{out}_ws.csv") as f:   # the connection counts over time
        history = list(csv.DictReader(f))
    assert max(int(r["Open"]) for r in history) == 200
    assert int(history[-1]["Open"]) == 0 and int(history[-1]["Closed"]) == 200


def test_pool_user_against_fastws(serve_thread, tmp_path):
    """Two PoolUsers x 100 connections against fastws with a short server
    keepalive (ping every 0.3 s of silence, 1 s to answer): every event
    reported, no failure, so every server PING was answered in time; the
    connections came from the 8 loopback source addresses asked for."""
    sources = set()

    class Echo(EchoListener):
        __slots__ = ()

        def on_connect(self, ws):
            super().on_connect(ws)
            sources.add(ws.remote_address[0])

    st = serve_thread(Echo, ping_interval=0.3, ping_timeout=1.0)
    proc, out = _pool_run(tmp_path, st.port)
    _check_pool_run(proc, out, tmp_path)
    assert sources == {f"127.0.0.{i}" for i in range(2, 10)}, sources


LOCUSTFILE_OWN = '''
from fastws.locust import PoolUser

class Pool(PoolUser):
    connections = 150          # x 2 users in one process: 300 connections
    ping_interval = None
    connect_rate = None
    own_source_addresses = ["127.0.0.70", "127.0.0.71"]
'''


def test_pool_user_own_source_addresses(serve_thread, tmp_path):
    """``own_source_addresses``: the pool binds its sockets itself, the ports
    of the ephemeral range in order on the first address (no kernel port
    search), and a port some other socket holds is skipped, not an error."""
    peers = []

    class Echo(EchoListener):
        __slots__ = ()

        def on_connect(self, ws):
            super().on_connect(ws)
            peers.append(ws.remote_address[:2])

    lo, _hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    st = serve_thread(Echo)
    held = socket.socket()          # another socket holds the 11th port: skipped
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.70", lo + 10))
    held.listen(1)
    try:
        (tmp_path / "own.py").write_text(LOCUSTFILE_OWN)
        out = tmp_path / "own"
        proc = _locust(["-f", str(tmp_path / "own.py"), "--host", f"ws://127.0.0.1:{st.port}",
                        "-u", "2", "-r", "2", "-t", "4s", "--csv", str(out)], cwd=str(tmp_path), timeout=90)
    finally:
        held.close()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0, proc.stderr[-3000:]
    assert int(rows[("CONNECT", "/")]["Request Count"]) == 300
    assert {addr for addr, _port in peers} == {"127.0.0.70"}
    assert sorted(port for _addr, port in peers) == [p for p in range(lo, lo + 301) if p != lo + 10]


def test_example_locust_pool_with_own_source_address(serve_thread, tmp_path, monkeypatch):
    """examples/locust_pool.py as its docstring runs it, with a source address
    of its own (FASTWS_LOCUST_OWN_SOURCES): every connection from it."""
    peers = []

    class Echo(EchoListener):
        __slots__ = ()

        def on_connect(self, ws):
            super().on_connect(ws)
            peers.append(ws.remote_address[0])

    st = serve_thread(Echo)
    monkeypatch.setenv("FASTWS_POOL_CONNECTIONS", "60")
    monkeypatch.setenv("FASTWS_LOCUST_OWN_SOURCES", "127.0.0.80")
    out = tmp_path / "example"
    proc = _locust(["-f", os.path.join(ROOT, "examples", "locust_pool.py"), "--host", f"ws://127.0.0.1:{st.port}",
                    "-u", "2", "-r", "2", "-t", "4s", "--csv", str(out)], cwd=str(tmp_path), timeout=90)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0, proc.stderr[-3000:]
    assert int(rows[("CONNECT", "/")]["Request Count"]) == 120
    assert len(peers) == 120 and set(peers) == {"127.0.0.80"}


@pytest.fixture
def websockets_keepalive_echo():
    """A `websockets` echo server (sync API) in a thread that PINGs every 0.5 s
    and closes a connection whose PONG is not back within 1 s."""
    def handler(ws):
        for message in ws:
            ws.send(message)

    server = ws_sync_serve(handler, "127.0.0.1", 0, compression=None, ping_interval=0.5, ping_timeout=1.0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.socket.getsockname()[1]
    server.shutdown()
    t.join(5)


def test_pool_user_against_websockets(websockets_keepalive_echo, tmp_path):
    """The same pools against a foreign server (websockets): not tied to fastws."""
    proc, out = _pool_run(tmp_path, websockets_keepalive_echo)
    _check_pool_run(proc, out, tmp_path)


class _ScriptServer:
    """Accepts connections until closed; for each, reads the upgrade request,
    runs ``script(conn, key)`` and records what the client sends next (its
    first bytes) in ``received``."""

    def __init__(self, script):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self._script = script
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            key = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            self._script(conn, key)
            self.received.append(conn.recv(100))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


LOCUSTFILE_POOL_BAD = '''
from fastws.locust import PoolUser

class Pool(PoolUser):
    connections = 3
    ping_interval = None
    connect_rate = None
'''


def test_pool_user_reports_protocol_error_and_refusal(tmp_path):
    """A server that answers the handshake and then sends invalid UTF-8: the
    pool answers with CLOSE 1007 and reports the failure; a second server
    refuses with 403: CONNECT failures naming the status."""
    def bad_utf8(conn, key):
        _ok(conn, key)
        conn.sendall(b"\x81\x02\xc3\x28")

    bad = _ScriptServer(bad_utf8)
    refuse = _ScriptServer(lambda conn, key: conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
    (tmp_path / "bad.py").write_text(LOCUSTFILE_POOL_BAD)
    try:
        runs = {}
        for name, srv in (("bad", bad), ("refuse", refuse)):
            out = tmp_path / name
            proc = _locust(["-f", str(tmp_path / "bad.py"), "--host", f"ws://127.0.0.1:{srv.port}",
                            "-u", "1", "-r", "1", "-t", "5s", "--csv", str(out)], cwd=str(tmp_path), timeout=60)
            runs[name] = (proc, out)
    finally:
        bad.close()
        refuse.close()
    proc, out = runs["bad"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = _rows(f"{out}_stats.csv")
    why = (proc.stdout + proc.stderr)[-3000:]
    assert int(rows[("CONNECT", "/")]["Request Count"]) == 3, why
    assert int(rows[("CONNECT", "/")]["Failure Count"]) == 0, why
    assert int(rows[("CLOSE", "protocol error")]["Failure Count"]) == 3, why
    with open(f"{out}_failures.csv") as f:
        assert "sent 1007" in " ".join(r["Error"] for r in csv.DictReader(f))
    # the close frame the pool sent: masked (RFC 6455 5.3), code 1007
    assert len(bad.received) == 3, bad.received
    for data in bad.received:
        assert data[0] == 0x88 and data[1] & 0x80
        length = data[1] & 0x7F
        payload = bytes(b ^ data[2 + i % 4] for i, b in enumerate(data[6:6 + length]))
        assert struct.unpack("!H", payload[:2])[0] == 1007
    proc, out = runs["refuse"]
    why = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 1, why
    rows = _rows(f"{out}_stats.csv")
    assert int(rows[("CONNECT", "/")]["Failure Count"]) == 3, why
    with open(f"{out}_failures.csv") as f:
        assert "403" in " ".join(r["Error"] for r in csv.DictReader(f))


def test_pool_connections_in_the_web_ui(serve_thread, tmp_path):
    """The web UI's "WebSocket connections" tab: /stats/requests carries the
    open count (as locust's UI reads extended tables), and the CSV download."""
    import urllib.request

    from redis_util import free_port
    from util import wait_until

    st = serve_thread(EchoListener)
    (tmp_path / "pool.py").write_text(LOCUSTFILE_POOL)
    web = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(tmp_path / "pool.py"), "--autostart",
                             "-u", "2", "-r", "2", "-t", "30s", "--web-host", "127.0.0.1", "--web-port", str(web),
                             "--host", f"ws://127.0.0.1:{st.port}", "--ws-stats-interval", "0"],
                            cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def table():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats/requests", timeout=2) as r:
                data = json.loads(r.read())
        except OSError:
            return None
        tables = {t["key"]: t["data"] for t in data.get("extended_stats", [])}
        rows = {row["name"]: row["value"] for row in tables.get("fastws-connections", [])}
        return rows if rows.get("open") == 200 else None

    try:
        rows = wait_until(table, timeout=30, interval=0.2)
        assert rows["peak open"] == 200 and rows["opened"] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/fastws/connections.csv", timeout=5) as r:
            lines = r.read().decode().splitlines()
        assert lines[0].startswith("Timestamp,Open,Peak open") and lines[1].split(",")[1] == "200"
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5) as r:
            page = r.read().decode()
        assert '"extendedTabs"' in page and "WebSocket connections" in page  # the tab, in the UI's arguments
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
