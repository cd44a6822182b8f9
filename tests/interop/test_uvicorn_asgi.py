"""fastws.uvicorn.WebSocketProtocol behaves as uvicorn's own WebSocket
implementations wherever the ASGI spec or uvicorn's settings decide (issue
#17): under a real uvicorn, with Starlette and raw ASGI apps, driven by the
websockets client and raw sockets. Some tests run the same app under
uvicorn's ``websockets-sansio`` implementation as the reference."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

import websockets.sync.client as ws_sync  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from util import UNIT, RawClient, http_request  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FASTWS = "fastws.uvicorn:WebSocketProtocol"
SANSIO = "websockets-sansio"

APP = textwrap.dedent('''
    import asyncio
    import json
    import time

    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    log = {}
    go = asyncio.Event()  # set by /go: the client has flooded

    async def flood_close(ws: WebSocket):
        # closes after the first message while the client floods more
        await ws.accept()
        await ws.receive_text()
        await go.wait()
        log["closed_at"] = time.monotonic()
        await ws.close(1000, "enough")

    async def flood_return(ws: WebSocket):
        # returns without closing after the first message
        await ws.accept()
        await ws.receive_text()
        await go.wait()
        log["returned_at"] = time.monotonic()

    async def blocked_send(ws: WebSocket):
        # sends until the write buffer is full, then waits in send
        await ws.accept()
        chunk = b"x" * 262144
        try:
            while True:
                task = asyncio.ensure_future(ws.send_bytes(chunk))
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if not done:
                    log["blocked"] = True
                await task
        except BaseException as exc:
            log["send_error"] = [type(exc).__name__, isinstance(exc, OSError), getattr(exc, "code", None)]

    async def disconnect(ws: WebSocket):
        # records the websocket.disconnect event verbatim
        name = ws.query_params["case"]
        await ws.accept()
        if name == "server":
            await ws.close(4002, "server bye")
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                log[name] = msg
                if name == "shutdown":  # the server is going away: keep it in a file
                    with open("shutdown.json", "w") as f:
                        json.dump(msg, f)
                return

    async def go_(ws: WebSocket):
        go.set()
        await ws.accept()
        await ws.close()

    async def last(ws: WebSocket):
        await ws.accept()
        await ws.send_json(log)
        await ws.close()

    async def echo(ws: WebSocket):
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            pass

    async def reject(ws: WebSocket):
        await ws.close()

    starlette = Starlette(routes=[
        WebSocketRoute("/flood_close", flood_close), WebSocketRoute("/flood_return", flood_return),
        WebSocketRoute("/blocked", blocked_send), WebSocketRoute("/disconnect", disconnect),
        WebSocketRoute("/last", last), WebSocketRoute("/go", go_), WebSocketRoute("/echo", echo),
        WebSocketRoute("/reject", reject),
    ])

    async def partial_response(scope, receive, send, fail):
        # websocket.http.response.start, a first chunk with more_body, then the end
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"part", "more_body": True})
        log["response_left_at"] = time.monotonic()
        if fail:
            raise RuntimeError("boom: the app failed in the middle of its response")

    async def app(scope, receive, send):
        path = scope.get("path")
        if scope["type"] == "websocket" and path == "/partial_return":
            return await partial_response(scope, receive, send, False)
        if scope["type"] == "websocket" and path == "/partial_raise":
            return await partial_response(scope, receive, send, True)
        return await starlette(scope, receive, send)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Uvicorn:
    """uvicorn in a subprocess serving APP, the worktree first on its path."""

    def __init__(self, tmp_path, *extra, ws=FASTWS):
        self.dir = tmp_path
        (tmp_path / "asgiapp.py").write_text(APP)
        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "asgiapp:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--ws", ws, "--log-level", "info", *extra],
            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20 * UNIT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("uvicorn exited: " + self.proc.stdout.read())
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("uvicorn did not start")

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log(self) -> dict:
        with ws_sync.connect(self.url("/last")) as ws:
            return json.loads(ws.recv(timeout=5 * UNIT))

    def wait_log(self, key: str, timeout: float = 10.0) -> dict:
        """The app's log once it holds ``key`` (polled, with a deadline)."""
        deadline = time.monotonic() + timeout * UNIT
        while True:
            log = self.log()
            if key in log or time.monotonic() > deadline:
                return log
            time.sleep(0.02)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read()


@pytest.fixture
def make_server(tmp_path_factory):
    servers = []

    def make(*extra, ws=FASTWS):
        server = Uvicorn(tmp_path_factory.mktemp("uv"), *extra, ws=ws)
        servers.append(server)
        return server

    yield make
    for server in servers:
        log = server.stop()
        assert "Traceback" not in log or "boom" in log, log


# ---------------------------------------------------------------- 1. close with unread messages
@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
@pytest.mark.parametrize("path, key", [("/flood_close", "closed_at"), ("/flood_return", "returned_at")])
def test_close_with_unread_messages_is_prompt(make_server, path, key, ws):
    # uvicorn's own: about 0.01 s; fastws before the fix: close_timeout (10 s)
    server = make_server("--ws-max-queue", "4", ws=ws)
    with ws_sync.connect(server.url(path), close_timeout=30 * UNIT) as client:
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                client.send("m" * 1000)  # far more than max_queue: reading pauses
            with ws_sync.connect(server.url("/go")) as go:  # now the app closes
                with pytest.raises(ConnectionClosed):
                    go.recv(timeout=5 * UNIT)
            while True:
                client.recv(timeout=30 * UNIT)
        client.recv_events_thread.join(30 * UNIT)  # ends when the server closed TCP
        closed = time.monotonic()
    start = server.wait_log(key)[key]
    print(f"{ws} {path}: TCP closed {closed - start:.3f}s after the app's close")
    assert closed - start < 1.0 * UNIT, f"TCP closed {closed - start:.3f}s after the app's close"


# ---------------------------------------------------------------- 2. unfinished HTTP response
@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
@pytest.mark.parametrize("path", ["/partial_return", "/partial_raise"])
def test_unfinished_http_response_ends_the_connection(make_server, path, ws):
    server = make_server(ws=ws)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30 * UNIT)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  % path).encode())
    data = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            data += chunk
    closed = time.monotonic()
    start = server.wait_log("response_left_at")["response_left_at"]
    print(f"{ws} {path}: TCP closed {closed - start:.3f}s after the app left")
    assert closed - start < 1.0 * UNIT, f"TCP closed {closed - start:.3f}s after the app left"
    assert b"101" not in data.split(b"\r\n", 1)[0]


# ---------------------------------------------------------------- 3. blocked send, peer gone
@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
def test_blocked_send_raises_oserror_when_peer_goes(make_server, ws):
    server = make_server(ws=ws)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10 * UNIT)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /blocked HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert sock.recv(12).endswith(b"101")
    assert server.wait_log("blocked").get("blocked"), "the app's send never blocked"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    # Starlette turns the OSError of ASGI 2.4 into WebSocketDisconnect(1006)
    assert server.wait_log("send_error").get("send_error") == ["WebSocketDisconnect", False, 1006]


# ---------------------------------------------------------------- 4. uvicorn's headers, deflate
def _head(data: bytes) -> dict:
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return fields


def test_default_headers_on_101_and_http_responses(make_server):
    server = make_server("--header", "X-Extra:yes")
    raw = RawClient(server.port, "/echo")
    assert raw.status == 101
    head = _head(raw.head + b"\r\n\r\n")
    raw.close()
    assert head.get("server") == ["uvicorn"] and "date" in head and head.get("x-extra") == ["yes"], head
    status, head, _ = http_request(server.port, (
        b"GET /reject HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    head = _head(head)
    assert status == 403 and head.get("server") == ["uvicorn"] and "date" in head, head
    assert head.get("x-extra") == ["yes"], head


def test_no_server_no_date_header(make_server):
    server = make_server("--no-server-header", "--no-date-header")
    raw = RawClient(server.port, "/echo")
    assert raw.status == 101
    head = _head(raw.head + b"\r\n\r\n")
    raw.close()
    assert "server" not in head and "date" not in head, head
    status, head, _ = http_request(server.port, (
        b"GET /reject HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
    head = _head(head)
    assert status == 403 and "server" not in head and "date" not in head, head


@pytest.mark.parametrize("flag, on", [((), True), (("--ws-per-message-deflate", "false"), False)])
def test_per_message_deflate(make_server, flag, on):
    server = make_server(*flag)
    with ws_sync.connect(server.url("/echo")) as ws:  # offers permessage-deflate
        assert bool(ws.protocol.extensions) is on
        text = "compressible " * 1000
        ws.send(text)
        assert ws.recv(timeout=5 * UNIT) == text
        ws.send("short")
        assert ws.recv(timeout=5 * UNIT) == "short"


# ---------------------------------------------------------------- 5. keepalive precision
@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
@pytest.mark.parametrize("timeout", [0.5, 1.3])
def test_ping_timeout_precision(make_server, ws, timeout):
    # before: the wheel ticked every 1 s, so these fired at 1.0 s and 2.0 s
    server = make_server("--ws-ping-interval", "1", "--ws-ping-timeout", str(timeout), ws=ws)
    raw = RawClient(server.port, "/echo", timeout=15)
    assert raw.status == 101
    fin, opcode, payload = raw.recv_frame()
    pinged = time.monotonic()
    assert opcode == 0x9
    assert raw.recv_close()[0] == 1011  # never answered
    waited = time.monotonic() - pinged
    raw.close()
    print(f"{ws}: ping timeout {timeout}: 1011 {waited:.3f}s after the ping")
    assert timeout - 0.02 <= waited < timeout + 0.2 * UNIT, f"1011 came {waited:.3f}s after the ping"


# ---------------------------------------------------------------- 6. websocket.disconnect
def _disconnect_events(server) -> dict:
    url = server.url("/disconnect?case=")
    with ws_sync.connect(url + "client") as ws:
        ws.close(4001, "client bye")
    raw = RawClient(server.port, "/disconnect?case=nostatus")
    raw.send(0x8, b"")
    assert raw.wait_eof()
    raw.close()
    raw = RawClient(server.port, "/disconnect?case=drop")
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    with ws_sync.connect(url + "server") as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5 * UNIT)
    events = {}
    for case in ("client", "nostatus", "drop", "server"):
        events[case] = server.wait_log(case).get(case)
    return events


@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
def test_disconnect_event_keys(make_server, ws):
    events = _disconnect_events(make_server(ws=ws))
    assert events["client"] == {"type": "websocket.disconnect", "code": 4001, "reason": "client bye"}
    assert events["nostatus"] == {"type": "websocket.disconnect", "code": 1005, "reason": ""}
    # no close frame: no reason; the code is RFC 6455 7.1.5's 1006 under fastws
    # (uvicorn's sansio and wsproto implementations say 1005, its legacy one 1006)
    assert events["drop"] == {"type": "websocket.disconnect", "code": 1006 if ws == FASTWS else 1005}
    assert events["server"] == {"type": "websocket.disconnect", "code": 4002, "reason": "server bye"}


@pytest.mark.parametrize("ws", [FASTWS, SANSIO])
def test_disconnect_event_on_shutdown(make_server, ws):
    server = make_server(ws=ws)
    with ws_sync.connect(server.url("/disconnect?case=shutdown")) as client:
        server.proc.send_signal(signal.SIGINT)
        with pytest.raises(ConnectionClosed) as info:
            client.recv(timeout=10 * UNIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    assert server.proc.wait(15 * UNIT) == 0
    event = json.loads((server.dir / "shutdown.json").read_text())
    assert event == {"type": "websocket.disconnect", "code": 1012}
