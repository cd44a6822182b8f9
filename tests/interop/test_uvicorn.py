"""fastws.uvicorn.WebSocketProtocol under a real uvicorn, with a Starlette app,
driven by third-party clients (websockets, aiohttp) and a raw socket."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

import aiohttp  # noqa: E402
import websockets.sync.client as ws_sync  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from util import UNIT, RawClient, arun  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP = textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    last = {}

    async def echo(ws: WebSocket):
        offered = ws.scope["subprotocols"]
        await ws.accept(subprotocol="chat" if "chat" in offered else None,
                        headers=[(b"x-served-by", b"fastws")])
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                last["code"], last["reason"] = msg["code"], msg.get("reason", "")
                return
            text = msg.get("text")
            if text is None:
                await ws.send_bytes(msg["bytes"])
            elif text == "headers":
                await ws.send_json({"token": ws.headers.get("x-token"), "path": ws.url.path,
                                    "query": ws.url.query, "scheme": ws.url.scheme,
                                    "client": list(ws.client) if ws.client else None})
            elif text.startswith("close:"):
                await ws.close(int(text.split(":")[1]), "server bye")
                return
            else:
                await ws.send_text(text)

    async def last_close(ws: WebSocket):
        await ws.accept()
        await ws.send_json(last)
        await ws.close()

    async def reject(ws: WebSocket):
        await ws.close()

    async def deny(ws: WebSocket):
        await ws.send_denial_response(PlainTextResponse("no entry", status_code=401))

    async def crash(ws: WebSocket):
        raise RuntimeError("boom")

    app = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/last", last_close),
                            WebSocketRoute("/reject", reject), WebSocketRoute("/deny", deny),
                            WebSocketRoute("/crash", crash)])
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Uvicorn:
    def __init__(self, tmp_path, *extra):
        (tmp_path / "wsapp.py").write_text(APP)
        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, str(tmp_path)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "wsapp:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--ws", "fastws.uvicorn:WebSocketProtocol", "--log-level", "info", *extra],
            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20 * UNIT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("uvicorn exited: " + self.proc.stdout.read())
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("uvicorn did not start")

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
def uv(tmp_path):
    server = Uvicorn(tmp_path, "--ws-ping-interval", "1", "--ws-ping-timeout", "1")
    yield server
    log = server.stop()
    assert "Traceback" not in log or "boom" in log, log


def test_websockets_client_echo_subprotocol_headers(uv):
    url = f"ws://127.0.0.1:{uv.port}/ws?room=1"
    with ws_sync.connect(url, subprotocols=["other", "chat"], additional_headers={"X-Token": "t0k"}) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-served-by"] == "fastws"
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xff" * 1000)
        assert ws.recv(timeout=5) == b"\x00\xff" * 1000
        big = "x" * 200_000  # several TCP reads, a large frame
        ws.send(big)
        assert ws.recv(timeout=5) == big
        ws.send("headers")
        info = json.loads(ws.recv(timeout=5))
        assert info["token"] == "t0k" and info["path"] == "/ws" and info["query"] == "room=1"
        assert info["scheme"] == "ws" and info["client"][0] == "127.0.0.1"
    with ws_sync.connect(f"ws://127.0.0.1:{uv.port}/ws") as ws:
        assert ws.subprotocol is None


def test_aiohttp_client_echo_and_close_codes(uv):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{uv.port}/ws", protocols=("chat",)) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("one")
                assert (await ws.receive(timeout=5)).data == "one"
                await ws.send_bytes(b"two")
                assert (await ws.receive(timeout=5)).data == b"two"
                # server-initiated close with the app's code and reason
                await ws.send_str("close:4001")
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "server bye"
            # client-initiated close: the app sees the code and reason in websocket.disconnect
            async with session.ws_connect(f"http://127.0.0.1:{uv.port}/ws") as ws:
                await ws.close(code=4002, message=b"client bye")
                assert ws.close_code == 4002
            async with session.ws_connect(f"http://127.0.0.1:{uv.port}/last") as ws:
                assert json.loads((await ws.receive(timeout=5)).data) == {"code": 4002, "reason": "client bye"}
    arun(main())


def test_close_before_accept_is_http_403(uv):
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{uv.port}/reject")
    assert info.value.response.status_code == 403

    async def main():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(f"http://127.0.0.1:{uv.port}/reject")
            assert info.value.status == 403
    arun(main())


def test_denial_response_and_app_error(uv):
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{uv.port}/deny")
    assert info.value.response.status_code == 401 and info.value.response.body == b"no entry"
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{uv.port}/crash")
    assert info.value.response.status_code == 500


def test_keepalive_ping_and_timeout(uv):
    # A client that answers pings (websockets does) stays connected past several intervals.
    with ws_sync.connect(f"ws://127.0.0.1:{uv.port}/ws") as ws:
        time.sleep(3.5 * UNIT)
        ws.send("still")
        assert ws.recv(timeout=5) == "still"
    # A client that never answers: a ping comes, then a close with 1011.
    raw = RawClient(uv.port, "/ws", timeout=15)
    assert raw.status == 101
    fin, opcode, payload = raw.recv_frame()
    assert opcode == 0x9  # ping after at most ping_interval of silence
    assert raw.recv_close()[0] == 1011
    raw.close()


def test_shutdown_sends_1012(tmp_path):
    server = Uvicorn(tmp_path)
    try:
        with ws_sync.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            server.proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        assert server.proc.wait(15) == 0
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def test_max_size_closes_1009(tmp_path):
    server = Uvicorn(tmp_path, "--ws-max-size", "1000")
    try:
        with ws_sync.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            # compressed (uvicorn negotiates permessage-deflate by default): a
            # few bytes on the wire, 1001 once inflated
            assert ws.protocol.extensions
            ws.send("y" * 1000)
            assert ws.recv(timeout=5) == "y" * 1000
            ws.send("y" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    finally:
        server.stop()
