"""The chat room's protocol (fastws/chat.py) with the websockets client."""
from __future__ import annotations

import http.client
import json
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastws.apps.chat import MAX_ERRORS, MAX_NAME, MAX_TEXT, chat_app
from util import UNIT


@pytest.fixture
def chat(serve_thread):
    return serve_thread(**chat_app(), max_size=4096)


class Client:
    def __init__(self, port, path="/ws", **kwargs):
        # __enter__: the sync client wants to be a context manager; close() ends it.
        self.ws = ws_sync.connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5 * UNIT, **kwargs).__enter__()

    def send(self, obj):
        self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    def recv(self):
        return json.loads(self.ws.recv(timeout=5 * UNIT))

    def nothing(self, wait=0.2):
        """No message arrives within ``wait`` seconds."""
        with pytest.raises(TimeoutError):
            self.ws.recv(timeout=wait * UNIT)

    def login(self, name):
        self.send({"type": "login", "name": name})
        return self.recv()

    def closed_with(self):
        with pytest.raises(ConnectionClosed) as info:
            while True:
                self.ws.recv(timeout=5 * UNIT)
        return info.value.rcvd.code if info.value.rcvd else None

    def close(self):
        self.ws.close()


@pytest.fixture
def connect(chat):
    clients = []

    def make(**kwargs):
        c = Client(chat.port, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_login_welcome_trims_and_lists_users(connect):
    a = connect()
    assert a.login("  alice\t") == {"type": "welcome", "name": "alice", "users": ["alice"]}
    b = connect()
    assert b.login("Bob") == {"type": "welcome", "name": "Bob", "users": ["alice", "Bob"]}
    assert a.recv() == {"type": "join", "name": "Bob"}
    b.nothing()  # the newcomer's own join is in its welcome only


def test_duplicate_name_refused_then_retry(connect):
    a, b = connect(), connect()
    a.login("alice")
    for taken in ("alice", "ALICE", " Alice "):
        reply = b.login(taken)
        assert reply["type"] == "error" and reply["code"] == "name_taken", reply
    assert b.login("alice2")["type"] == "welcome"
    assert a.recv() == {"type": "join", "name": "alice2"}


@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_NAME + 1), "a\nb", "bad\u202eid", 42, None, ["a"]])
def test_bad_names_refused(connect, name):
    c = connect()
    reply = c.login(name)
    assert reply["type"] == "error" and reply["code"] == "bad_name", reply
    assert c.login("fine")["type"] == "welcome"  # the connection stays usable


def test_longest_name_and_unicode_accepted(connect):
    c = connect()
    assert c.login("é" * MAX_NAME)["name"] == "é" * MAX_NAME
    assert connect().login("日本語 😀")["type"] == "welcome"


def test_message_broadcast_to_the_room_sender_included(connect):
    a, b, outsider = connect(), connect(), connect()
    a.login("alice")
    b.login("bob")
    a.recv()  # join bob
    before = int(time.time() * 1000)
    b.send({"type": "message", "text": "  hi <script>  "})
    for c in (a, b):
        msg = c.recv()
        assert msg["type"] == "message" and msg["name"] == "bob" and msg["text"] == "hi <script>"
        assert isinstance(msg["ts"], int) and before - 1000 <= msg["ts"] <= int(time.time() * 1000) + 1000
    outsider.nothing()  # not logged in: not in the room


def test_message_rules(connect):
    c = connect()
    c.send({"type": "message", "text": "too early"})
    assert c.recv()["code"] == "login_required"
    c.login("carol")
    assert c.login("carol again")["code"] == "already_logged_in"
    for text in ("", "   ", "x" * (MAX_TEXT + 1), 5, None):
        c.send({"type": "message", "text": text})
        assert c.recv()["code"] == "bad_text", text
    c.send('{"type": "message", "text": "lone \\ud800 surrogate"}')  # valid JSON, not valid text
    assert c.recv()["code"] == "bad_text"
    c.send({"type": "message", "text": "x" * MAX_TEXT})
    assert c.recv()["text"] == "x" * MAX_TEXT


def test_join_and_leave(connect):
    a, b = connect(), connect()
    a.login("alice")
    b.login("bob")
    assert a.recv() == {"type": "join", "name": "bob"}
    b.close()
    assert a.recv() == {"type": "leave", "name": "bob"}
    # The name is free again, and the list no longer has bob.
    c = connect()
    assert c.login("bob") == {"type": "welcome", "name": "bob", "users": ["alice", "bob"]}
    assert a.recv() == {"type": "join", "name": "bob"}


def test_leaving_without_login_tells_no_one(connect):
    a, b = connect(), connect()
    a.login("alice")
    b.close()
    a.nothing()


@pytest.mark.parametrize("raw,code", [
    ("{not json", "bad_json"),
    ("", "bad_json"),
    ("[" * 3000, "bad_json"),  # nested too deep for the decoder: no traceback, no 1011
    ("[1, 2]", "bad_request"),
    ("42", "bad_request"),
    ('{"name": "x"}', "bad_request"),
    ('{"type": 7}', "bad_request"),
    ('{"type": "shout", "text": "x"}', "unknown_type"),
], ids=["truncated", "empty", "deep", "list", "number", "no-type", "type-not-str", "unknown-type"])
def test_garbage_gets_an_error_and_the_connection_stays(connect, raw, code):
    c = connect()
    c.send(raw)
    reply = c.recv()
    assert reply["type"] == "error" and reply["code"] == code and reply["error"]
    assert c.login("still here")["type"] == "welcome"


def test_endless_garbage_is_cut_off_1008(connect):
    c = connect()
    for _ in range(MAX_ERRORS - 1):
        c.send("nope")
        assert c.recv()["code"] == "bad_json"
    c.send("nope")
    assert c.closed_with() == 1008


def test_binary_closes_1003(connect):
    c = connect()
    c.send(b"\x00\x01")
    assert c.closed_with() == 1003


def test_oversized_message_closes_1009(connect):
    a, b = connect(), connect()
    a.login("alice")
    b.login("bob")
    a.recv()
    b.send({"type": "message", "text": "x" * 5000})  # over max_size (4 KiB)
    assert b.closed_with() == 1009
    assert a.recv() == {"type": "leave", "name": "bob"}


def test_other_websocket_paths_404(chat):
    for path in ("/", "/chat", "/ws/x"):
        with pytest.raises(InvalidStatus) as info:
            Client(chat.port, path=path)
        assert info.value.response.status_code == 404
    Client(chat.port, path="/ws?x=1").close()  # a query string is fine


def test_cross_origin_websocket_refused(chat):
    for origin in ("http://evil.example", "null", f"http://localhost:{chat.port}", "https://127.0.0.1"):
        with pytest.raises(InvalidStatus) as info:
            Client(chat.port, origin=origin)
        assert info.value.response.status_code == 403, origin
    Client(chat.port, origin=f"http://127.0.0.1:{chat.port}").close()
    Client(chat.port).close()  # no Origin: not a browser


def test_origins_open_the_chat_to_other_pages(serve_thread):
    st = serve_thread(**chat_app(origins=["https://app.example"]))
    Client(st.port, origin="https://app.example").close()
    Client(st.port, origin=f"http://127.0.0.1:{st.port}").close()  # its own page still works
    with pytest.raises(InvalidStatus):
        Client(st.port, origin="http://evil.example")
    anyone = serve_thread(**chat_app(origins=["*"]))
    Client(anyone.port, origin="http://evil.example").close()


def _get(port, path, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_http_page_and_errors(chat):
    status, headers, body = _get(chat.port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body.startswith(b"<!DOCTYPE html>") and b'new WebSocket' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    assert b"http://" not in body and b"https://" not in body  # no external resources
    assert _get(chat.port, "/?v=2")[0] == 200
    assert _get(chat.port, "/nope")[0] == 404
    assert _get(chat.port, "/ws")[0] == 404  # plain HTTP to the WebSocket path
    status, headers, _ = _get(chat.port, "/", "POST")
    assert status == 405 and headers["Allow"] == "GET"
