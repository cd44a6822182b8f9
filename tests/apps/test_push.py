"""The push service (fastws/push.py): websockets subscribers, http.client publishers."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastws.apps.push import MAX_ERRORS, MAX_TOPICS, push_app
from util import UNIT

TOKEN = "s3cret-token"


def _start(serve_thread, **kwargs):
    service, options = push_app(**kwargs)
    st = serve_thread(**options)
    service.attach(st.server)
    return st


@pytest.fixture
def push(serve_thread):
    return _start(serve_thread)


@pytest.fixture
def subscribers():
    opened = []

    def connect(port, query=""):
        ws = ws_sync.connect(f"ws://127.0.0.1:{port}/ws{query}", open_timeout=5 * UNIT).__enter__()
        opened.append(ws)
        return ws

    yield connect
    for ws in opened:
        ws.close()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def publish(port, topic, body, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, headers, data = request(port, "POST", f"/publish/{topic}", body, headers)
    return status, (json.loads(data) if status == 200 else data)


def recv(ws):
    return ws.recv(timeout=5 * UNIT)


def nothing(ws, wait=0.2):
    with pytest.raises(TimeoutError):
        ws.recv(timeout=wait * UNIT)


def ask(ws, obj):
    ws.send(json.dumps(obj))
    return json.loads(recv(ws))


def test_delivery_to_the_topic_subscribers_only(push, subscribers):
    a = subscribers(push.port, "?topics=news,sport")
    b = subscribers(push.port)
    assert ask(b, {"type": "subscribe", "topic": "news"}) == {"type": "subscribed", "topic": "news"}
    c = subscribers(push.port, "?topics=weather")
    d = subscribers(push.port)

    assert publish(push.port, "news", b"breaking") == (200, {"delivered": 2})
    assert recv(a) == "breaking" and recv(b) == "breaking"
    nothing(c)
    nothing(d)

    assert publish(push.port, "sport", "goal ⚽".encode()) == (200, {"delivered": 1})
    assert recv(a) == "goal ⚽"
    assert publish(push.port, "nobody-listens", b"x") == (200, {"delivered": 0})
    nothing(b)


def test_utf8_body_is_text_other_bytes_binary(push, subscribers):
    ws = subscribers(push.port, "?topics=t")
    publish(push.port, "t", b'{"n": 1}')
    assert recv(ws) == '{"n": 1}'
    publish(push.port, "t", b"\xff\x00\x80")
    assert recv(ws) == b"\xff\x00\x80"
    publish(push.port, "t", b"")
    assert recv(ws) == ""


def test_unsubscribe(push, subscribers):
    ws = subscribers(push.port, "?topics=a&topics=b")
    assert ask(ws, {"type": "unsubscribe", "topic": "a"}) == {"type": "unsubscribed", "topic": "a"}
    assert ask(ws, {"type": "unsubscribe", "topic": "never"}) == {"type": "unsubscribed", "topic": "never"}
    assert publish(push.port, "a", b"x") == (200, {"delivered": 0})
    assert publish(push.port, "b", b"y") == (200, {"delivered": 1})
    assert recv(ws) == "y"


def test_subscriptions_end_with_the_connection(push, subscribers):
    ws = subscribers(push.port, "?topics=gone")
    assert push.call(push.server.subscribers, "gone") == 1
    ws.close()
    deadline = time.monotonic() + 5 * UNIT
    while push.call(push.server.subscribers, "gone") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert publish(push.port, "gone", b"x") == (200, {"delivered": 0})


def test_token_required(serve_thread, subscribers):
    st = _start(serve_thread, token=TOKEN)
    ws = subscribers(st.port, "?topics=t")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        status, resp_headers, _ = request(st.port, "POST", "/publish/t", b"x", headers)
        assert status == 401, headers
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    # Authentication comes before the topic is looked at.
    assert request(st.port, "POST", "/publish/bad!topic", b"x")[0] == 401
    nothing(ws)
    assert publish(st.port, "t", b"ok", token=TOKEN) == (200, {"delivered": 1})
    assert request(st.port, "POST", "/publish/t", b"ok", {"Authorization": f"bearer   {TOKEN}"})[0] == 200
    assert recv(ws) == "ok"


@pytest.mark.parametrize("topic", ["", "a%20b", "a/b", "bad!", "x" * 129, "%FF", "caf%C3%A9"])
def test_bad_topic_400(push, topic):
    assert publish(push.port, topic, b"x")[0] == 400


def test_topic_charset_and_percent_encoding(push, subscribers):
    ws = subscribers(push.port, "?topics=user:42.inbox_A-z")
    assert publish(push.port, "user%3A42.inbox_A-z", b"pct") == (200, {"delivered": 1})
    assert recv(ws) == "pct"
    assert publish(push.port, "x" * 128, b"x") == (200, {"delivered": 0})
    assert publish(push.port, "t?ignored=1", b"x") == (200, {"delivered": 0})


def test_methods_405(push):
    for method, path, allow in (("GET", "/publish/t", "POST"), ("PUT", "/publish/t", "POST"),
                                ("DELETE", "/publish/t", "POST"), ("POST", "/healthz", "GET")):
        status, headers, _ = request(push.port, method, path, b"" if method != "GET" else None)
        assert status == 405 and headers["Allow"] == allow, (method, path)


def test_body_too_large_413(serve_thread, subscribers):
    st = _start(serve_thread, max_body=1024)
    ws = subscribers(st.port, "?topics=t")
    assert publish(st.port, "t", b"x" * 1025)[0] == 413
    assert publish(st.port, "t", b"x" * 1024) == (200, {"delivered": 1})
    assert recv(ws) == "x" * 1024
    # Over the HTTP request reader's own limit (1 MiB): refused from the head
    # alone (a client still sending the body could see a reset instead).
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall(b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2**20 + 1))
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")


def test_healthz_and_404(push):
    status, headers, body = request(push.port, "GET", "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert request(push.port, "GET", "/healthz?probe=1")[0] == 200
    assert request(push.port, "GET", "/")[0] == 404
    assert request(push.port, "POST", "/publish")[0] == 404


def test_websocket_path_and_query_validated(push):
    for query, status in (("/other", 404), ("/ws?topics=bad!", 400), ("/ws?topics=a,,b", 400),
                          ("/ws?topics=" + ",".join(f"t{i}" for i in range(MAX_TOPICS + 1)), 400)):
        with pytest.raises(InvalidStatus) as info:
            ws_sync.connect(f"ws://127.0.0.1:{push.port}{query}", open_timeout=5 * UNIT).__enter__()
        assert info.value.response.status_code == status, query
    ws_sync.connect(f"ws://127.0.0.1:{push.port}/ws?topics=", open_timeout=5 * UNIT).__enter__().close()


@pytest.mark.parametrize("raw,code", [
    ("{bad", "bad_json"),
    ("[" * 3000, "bad_json"),
    ("[]", "bad_request"),
    ('{"type": "publish", "topic": "t"}', "unknown_type"),
    ('{"type": "subscribe"}', "bad_topic"),
    ('{"type": "subscribe", "topic": "no spaces"}', "bad_topic"),
    ('{"type": "unsubscribe", "topic": 5}', "bad_topic"),
], ids=["truncated", "deep", "list", "unknown-type", "no-topic", "bad-topic", "topic-not-str"])
def test_bad_requests_get_errors(push, subscribers, raw, code):
    ws = subscribers(push.port)
    ws.send(raw)
    reply = json.loads(recv(ws))
    assert reply["type"] == "error" and reply["code"] == code
    assert ask(ws, {"type": "subscribe", "topic": "ok"})["type"] == "subscribed"


def test_topic_limit(push, subscribers):
    ws = subscribers(push.port, "?topics=" + ",".join(f"t{i}" for i in range(MAX_TOPICS)))
    assert ask(ws, {"type": "subscribe", "topic": "one-more"})["code"] == "too_many_topics"
    assert ask(ws, {"type": "subscribe", "topic": "t0"})["type"] == "subscribed"  # already held


def test_binary_1003_and_garbage_1008(push, subscribers):
    ws = subscribers(push.port)
    ws.send(b"\x01")
    with pytest.raises(ConnectionClosed) as info:
        recv(ws)
    assert info.value.rcvd.code == 1003
    ws = subscribers(push.port)
    for _ in range(MAX_ERRORS - 1):
        ws.send("x")
        assert json.loads(recv(ws))["code"] == "bad_json"
    ws.send("x")
    with pytest.raises(ConnectionClosed) as info:
        recv(ws)
    assert info.value.rcvd.code == 1008


def test_client_messages_limited_to_4k(push, subscribers):
    ws = subscribers(push.port)
    ws.send(json.dumps({"type": "subscribe", "topic": "x" * 5000}))
    with pytest.raises(ConnectionClosed) as info:
        recv(ws)
    assert info.value.rcvd.code == 1009


# ---------------------------------------------------------------- same origin (issue #14)

EVIL = "http://evil.example"


def test_cross_site_publish_refused_even_without_token(push, subscribers):
    """A page on another site can POST text/plain without a preflight: it must
    publish nothing (403), token or not."""
    ws = subscribers(push.port, "?topics=t")
    for headers in ({"Origin": EVIL, "Content-Type": "text/plain"},
                    {"Origin": "null", "Content-Type": "text/plain"},
                    {"Origin": f"http://localhost:{push.port}"}):  # another host name for the same port
        status, _, body = request(push.port, "POST", "/publish/t", b"forged", headers)
        assert status == 403 and b"cross-origin" in body, (headers, status, body)
    nothing(ws)
    # Same origin (a page served from this host:port) and no Origin (curl, backends) publish.
    own = {"Origin": f"http://127.0.0.1:{push.port}", "Content-Type": "text/plain"}
    assert request(push.port, "POST", "/publish/t", b"own", own)[0] == 200
    assert recv(ws) == "own"
    assert publish(push.port, "t", b"backend") == (200, {"delivered": 1})
    assert recv(ws) == "backend"


def test_cross_site_publish_refused_with_a_valid_token(serve_thread, subscribers):
    st = _start(serve_thread, token=TOKEN)
    ws = subscribers(st.port, "?topics=t")
    headers = {"Origin": EVIL, "Authorization": f"Bearer {TOKEN}"}
    assert request(st.port, "POST", "/publish/t", b"x", headers)[0] == 403
    nothing(ws)


def test_cross_site_websocket_refused(push):
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{push.port}/ws?topics=t", origin=EVIL, open_timeout=5 * UNIT)
    assert info.value.response.status_code == 403
    with ws_sync.connect(f"ws://127.0.0.1:{push.port}/ws?topics=t", origin=f"http://127.0.0.1:{push.port}",
                         open_timeout=5 * UNIT):
        pass
    with ws_sync.connect(f"ws://127.0.0.1:{push.port}/ws?topics=t", open_timeout=5 * UNIT):
        pass


def test_origins_open_it_up(serve_thread, subscribers):
    st = _start(serve_thread, origins=["https://app.example"])
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=t", origin="https://app.example",
                         open_timeout=5 * UNIT) as ws:
        assert request(st.port, "POST", "/publish/t", b"hi", {"Origin": "https://APP.example:443"})[0] == 200
        assert recv(ws) == "hi"
        assert request(st.port, "POST", "/publish/t", b"x", {"Origin": EVIL})[0] == 403
    anyone = _start(serve_thread, origins=["*"])
    assert request(anyone.port, "POST", "/publish/t", b"x", {"Origin": EVIL})[0] == 200
