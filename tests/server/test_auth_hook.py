"""The authenticate hook: ``serve(app, authenticate=fn)`` and ``ws.user``.

Real clients (websockets' sync client, http.client) against a server in a
thread, with both API levels; the codec is the one fastws picked (run the file
again with FASTWS_PURE_PYTHON=1 for the twins). Waits are for conditions
(``wait_for``), never bare sleeps.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time

import pytest
import websockets.sync.client as wsclient
from websockets.exceptions import InvalidStatus

import fastws

from util import UNIT, http_request
from util import wait_until as wait_for

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class UserListener(fastws.Listener):
    """Sends its ws.user (JSON) on connect, then echoes."""

    def on_connect(self, ws):
        super().on_connect(ws)
        ws.send(json.dumps(ws.user))

    def on_message(self, data):
        self.ws.send(data)


async def user_handler(ws):
    await ws.send(json.dumps(ws.user))
    async for message in ws:
        await ws.send(message)


APPS = {"listener": UserListener, "handler": user_handler}


@pytest.fixture(params=sorted(APPS))
def start(request, serve_thread):
    """start(**options) -> ServerThread running the app of one API level."""
    def start(**options):
        return serve_thread(APPS[request.param], **options)
    return start


def connect(port, headers=None, **kw):
    return wsclient.connect(f"ws://127.0.0.1:{port}/chat?room=1", additional_headers=headers,
                            open_timeout=5 * UNIT, **kw)


def get(port, headers=None):
    """An upgrade request with http.client: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request("GET", "/chat", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                             "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13",
                                             **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def bearer(request):
    token = request.headers.get("Authorization")
    if token != "Bearer good":
        raise fastws.InvalidRequest(401, "Unauthorized", [("WWW-Authenticate", 'Bearer realm="fastws"')],
                                    "a valid token is required")
    return {"sub": "alice", "path": request.path}


async def async_bearer(request):
    await asyncio.sleep(0)
    return bearer(request)


# ------------------------------------------------------------------ identity
def test_no_hook_user_is_none(start):
    st = start()
    with connect(st.port) as ws:
        assert json.loads(ws.recv()) is None
        ws.send("x")
        assert ws.recv() == "x"


@pytest.mark.parametrize("hook", [bearer, async_bearer], ids=["sync", "async"])
def test_identity_is_ws_user(start, hook):
    st = start(authenticate=hook)
    with connect(st.port, {"Authorization": "Bearer good"}) as ws:
        assert json.loads(ws.recv()) == {"sub": "alice", "path": "/chat?room=1"}
        ws.send(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
    assert st.server.counters.upgraded == 1


def test_none_means_anonymous_accepted(start):
    st = start(authenticate=lambda request: None)
    with connect(st.port) as ws:
        assert json.loads(ws.recv()) is None


def test_hook_may_return_any_object(serve_thread):
    seen = []

    class Token:
        pass

    token = Token()

    async def handler(ws):
        seen.append(ws.user)
        await ws.close()

    st = serve_thread(handler, authenticate=lambda request: token)
    with connect(st.port) as ws:
        with pytest.raises(Exception):
            ws.recv()
    wait_for(lambda: seen)
    assert seen[0] is token


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("hook", [bearer, async_bearer], ids=["sync", "async"])
def test_invalid_request_refuses_with_its_status_headers_body(start, hook):
    st = start(authenticate=hook)
    status, headers, body = get(st.port)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="fastws"'
    assert body == b"a valid token is required\n"
    with pytest.raises(InvalidStatus) as info:
        connect(st.port, {"Authorization": "Bearer bad"})
    assert info.value.response.status_code == 401
    assert st.server.counters.upgraded == 0
    assert st.server.counters.refused_by.get("http_401") == 2


@pytest.mark.parametrize("status", [403, 429])
def test_any_status(start, status):
    def hook(request):
        raise fastws.InvalidRequest(status, "No", [("Retry-After", "7")], body="go away")

    st = start(authenticate=hook)
    code, headers, body = get(st.port)
    assert code == status and headers["Retry-After"] == "7" and body == b"go away\n"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_response_refuses(start, is_async):
    response = fastws.Response(403, "Forbidden", [("Content-Type", "application/json"), ("X-Why", "banned")],
                               b'{"error": "banned"}')
    if is_async:
        async def hook(request):
            return response
    else:
        def hook(request):
            return response
    st = start(authenticate=hook)
    status, headers, body = get(st.port)
    assert (status, headers["X-Why"], body) == (403, "banned", b'{"error": "banned"}')
    assert st.server.counters.refused_by.get("authenticate") == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_unexpected_exception_is_500_and_logged_without_traceback(start, is_async, caplog):
    def fail(request):
        raise RuntimeError("secret database password in this message")

    async def afail(request):
        raise RuntimeError("secret database password in this message")

    st = start(authenticate=afail if is_async else fail)
    with caplog.at_level(logging.ERROR, logger="fastws.server"):
        status, headers, body = get(st.port)
        wait_for(lambda: any("authenticate failed" in r.getMessage() for r in caplog.records))
    assert status == 500
    assert b"secret" not in body and b"Traceback" not in body and b"RuntimeError" not in body
    record = next(r for r in caplog.records if "authenticate failed" in r.getMessage())
    assert record.exc_info is not None and "secret" in str(record.exc_info[1])
    assert st.server.counters.refused_by.get("authenticate_error") == 1


# ------------------------------------------------------------------ order
def test_after_rfc_checks_and_origin_before_process_request(start):
    calls = []

    def hook(request):
        calls.append("authenticate")
        return "u"

    def process_request(request):
        calls.append("process_request")
        return [("X-Extra", "1")]

    st = start(authenticate=hook, process_request=process_request, origins=["https://good.example"])
    # RFC 6455 failure: no key -> 400, the hook is not called
    raw = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{st.port}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nOrigin: https://good.example\r\n\r\n").encode()
    assert http_request(st.port, raw)[0] == 400
    # origin policy -> 403, the hook is not called
    assert get(st.port, {"Origin": "https://evil.example"})[0] == 403
    assert calls == []
    with connect(st.port, {"Origin": "https://good.example"}) as ws:
        assert ws.response.headers["X-Extra"] == "1"
        assert json.loads(ws.recv()) == "u"
    assert calls == ["authenticate", "process_request"]


def test_plain_http_does_not_run_the_hook(start):
    calls = []
    st = start(authenticate=lambda r: calls.append(r) or "u")
    raw = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{st.port}\r\n\r\n".encode()
    assert http_request(st.port, raw)[0] == 426
    assert calls == []


def test_split_head_and_compression_paths(start):
    """The hook runs on every path: a head split over two reads, compression negotiated."""
    st = start(authenticate=bearer, compression="deflate")
    with connect(st.port, {"Authorization": "Bearer good"}, compression="deflate") as ws:
        assert json.loads(ws.recv())["sub"] == "alice"
        ws.send("z" * 500)
        assert ws.recv() == "z" * 500
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        head = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{st.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n").encode()
        sock.sendall(head)
        wait_for(lambda: st.server.counters.connections_total >= 2)
        sock.sendall(b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer good\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101")


# ------------------------------------------------------------------ inline vs task
def test_sync_hook_runs_inline_async_hook_in_one_task(start):
    seen = {}

    def sync_hook(request):
        seen["sync"] = asyncio.current_task()
        return "s"

    st = start(authenticate=sync_hook)
    with connect(st.port) as ws:
        assert json.loads(ws.recv()) == "s"
    assert seen["sync"] is None  # called in the read callback, no task

    async def async_hook(request):
        seen["async"] = asyncio.current_task()
        return "a"

    st2 = start(authenticate=async_hook)
    with connect(st2.port) as ws:
        assert json.loads(ws.recv()) == "a"
        ws.send("m")
        assert ws.recv() == "m"
    assert seen["async"] is not None and seen["async"].done()


# ------------------------------------------------------------------ slow hooks
def _tasks(st):
    return st.call(lambda: len(asyncio.all_tasks()))


def test_peer_leaving_cancels_the_hook_task(start):
    state = {"started": 0, "cancelled": 0}
    forever = []

    async def hook(request):
        state["started"] += 1
        try:
            await asyncio.get_running_loop().create_future()  # never resolves
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise

    st = start(authenticate=hook)
    before = _tasks(st)
    socks = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT)
        sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        socks.append(sock)
    wait_for(lambda: state["started"] == 3)
    assert _tasks(st) == before + 3
    for sock in socks:
        sock.close()
    wait_for(lambda: state["cancelled"] == 3)
    wait_for(lambda: _tasks(st) == before)
    wait_for(lambda: len(st.server.connections) == 0)
    assert st.server.counters.upgraded == 0
    assert forever == []


def test_handshake_timeout_covers_the_hook(start):
    state = {"cancelled": 0}

    async def hook(request):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise

    st = start(authenticate=hook, handshake_timeout=0.3, timer_tick=0.05)
    before = _tasks(st)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            assert sock.recv(4096) == b""  # aborted: no 101
        except ConnectionResetError:
            pass
    assert time.monotonic() - t0 < 3 * UNIT
    wait_for(lambda: state["cancelled"] == 1)
    wait_for(lambda: _tasks(st) == before)
    assert st.server.counters.events["handshake_timeout"] == 1


def test_server_close_cancels_pending_hooks(serve_thread):
    state = {"started": 0, "cancelled": 0}

    async def hook(request):
        state["started"] += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise

    st = serve_thread(UserListener, authenticate=hook)
    sock = socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT)
    sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    wait_for(lambda: state["started"] == 1)
    st.stop()
    sock.close()
    assert state["cancelled"] == 1


def test_frames_sent_while_the_hook_runs_are_kept(start):
    """A client that does not wait for the 101: its first frame is delivered after it."""
    gate = {}

    async def hook(request):
        gate["fut"] = asyncio.get_running_loop().create_future()
        await gate["fut"]
        return "late"

    st = start(authenticate=hook)
    from util import build_frame
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        wait_for(lambda: "fut" in gate)
        sock.sendall(build_frame(1, b"early", mask=True))
        wait_for(lambda: any(c._reader is not None and getattr(c._reader, "data", b"")
                             for c in list(st.server.connections)))
        st.loop.call_soon_threadsafe(gate["fut"].set_result, None)
        data = b""
        while data.count(b"early") < 1:
            chunk = sock.recv(4096)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 101") and b'"late"' in data


# ------------------------------------------------------------------ options
def test_authenticate_must_be_callable():
    with pytest.raises(fastws.ConfigError):
        fastws.Server(UserListener, authenticate="nope")


def test_run_knows_the_new_options():
    from fastws.runner import _SERVER_KEYS

    for key in ("authenticate", "rate_limit", "rate_limit_bytes", "limit_connections_per_ip",
                "limit_handshakes_per_ip", "forwarded_allow_ips"):
        assert key in _SERVER_KEYS


def test_no_hook_keeps_the_plain_connection_classes():
    from fastws.server import ServerConnection, ServerWebSocket

    # Each server's own subclass (its _server: fastws.server._server_class) of
    # the plain class itself: no admission mixin in between.
    for app, plain in ((UserListener, ServerConnection), (user_handler, ServerWebSocket)):
        server = fastws.Server(app)
        assert server._connection_class.__bases__ == (plain,) and server._connection_class._server is server
    guarded = fastws.Server(user_handler, authenticate=bearer)._connection_class
    assert issubclass(guarded, ServerWebSocket) and guarded.__bases__[0] is not ServerWebSocket
