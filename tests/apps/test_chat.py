"""The chat room's protocol (fastws/chat.py) with the websockets client."""
from __future__ import annotations

import http.client
import json
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastws.apps.chat import BURST, CHAT_MAX_SIZE, MAX_ERRORS, MAX_NAME, MAX_TEXT, RATE_STRIKES, chat_app
from util import UNIT


@pytest.fixture
def chat(serve_thread):
    return serve_thread(**chat_app())


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


def test_over_long_text_gets_an_error_oversized_frame_closes_1009(connect):
    a, b = connect(), connect()
    a.login("alice")
    b.login("bob")
    a.recv()
    b.send({"type": "message", "text": "字" * (MAX_TEXT + 500)})  # too long, but under max_size
    assert b.recv()["code"] == "bad_text"
    b.send({"type": "message", "text": "still here"})
    assert b.recv()["text"] == "still here"
    b.send({"type": "message", "text": "x" * (CHAT_MAX_SIZE + 1)})  # over max_size: the frame itself
    assert b.closed_with() == 1009
    assert a.recv()["text"] == "still here"
    assert a.recv() == {"type": "leave", "name": "bob"}


def test_the_size_limit_covers_the_character_limit(connect):
    """1,400 CJK characters (under the 2,000 limit) were cut off with 1009:
    max_size must hold MAX_TEXT characters at their worst, JSON-escaped
    (json.dumps sends "\\u5b57", 6 bytes, and an emoji as two escapes)."""
    a, b = connect(), connect()
    a.login("alice")
    b.login("bob")
    a.recv()
    for text in ("字" * 1400, "字" * MAX_TEXT, "😀" * MAX_TEXT, "\t" * 10 + "é" * MAX_TEXT + " " * 500):
        b.send(json.dumps({"type": "message", "text": text}))  # ensure_ascii: the worst case on the wire
        for c in (a, b):
            assert c.recv()["text"] == text.strip()
    b.send(json.dumps({"type": "message", "text": "😀" * (MAX_TEXT + 1)}))
    assert b.recv()["code"] == "bad_text"


@pytest.mark.parametrize("name", [
    "Аlice",            # Cyrillic А
    "Ａｌｉｃｅ",        # full width
    "Alicé", "ALİCE", "Alice\u0301", "alice", " ALICE ",
    "AIice",            # capital I for l
    "A1ice", "Al ice",
    "Аlісе",            # Cyrillic а, і, с, е
    "Αlice",            # Greek Alpha
])
def test_lookalike_names_are_taken(connect, name):
    connect().login("Alice")
    reply = connect().login(name)
    assert reply["type"] == "error" and reply["code"] == "name_taken", (name, reply)


@pytest.mark.parametrize("name", [
    "Alice\u3164", "\u3164", "Alice\u2800", "Al\u200bice", "Alice\u200d", "\u2066Alice\u2069",
    "Alice\u00ad", "A\u202eecila", "Alice\ufeff", "Al\u2028ice", "Alice\x1b[0m", "Ali\u0000ce",
    "Alice\u180e", "Alice\U000e0041",
], ids=lambda n: n.encode("unicode_escape").decode())
def test_invisible_control_and_bidi_names_refused(connect, name):
    c = connect()
    reply = c.login(name)
    assert reply["type"] == "error" and reply["code"] == "bad_name" and reply["error"], (name, reply)
    assert c.login("Alice")["type"] == "welcome"


def test_names_are_stored_nfkc(connect):
    assert connect().login("Ｂｏｂ　Ｓｍｉｔｈ")["name"] == "Bob Smith"


@pytest.mark.parametrize("text", [
    "hi\nbob: I am bob", "hi\r\nbob", "line\u2028break", "para\u2029break", "x\x85y",
    "evil \u202egnp.exe", "iso \u2066late\u2069", "mark\u200f", "nul\x00", "esc \x1b[2J", "bell\x07",
    "zero\u200bwidth", "bom\ufeff",
], ids=lambda t: t.encode("unicode_escape").decode())
def test_text_cannot_fake_lines_or_speakers(connect, text):
    a, b = connect(), connect()
    a.login("alice")
    b.login("bob")
    a.recv()
    b.send({"type": "message", "text": text})
    reply = b.recv()
    assert reply["type"] == "error" and reply["code"] == "bad_text" and reply["error"], reply
    a.nothing(0.1)


def test_text_with_tabs_and_emoji_joiners_passes(connect):
    c = connect()
    c.login("carol")
    for text in ("a\tb", "👨\u200d👩\u200d👧 family", "می\u200cخواهم"):
        c.send({"type": "message", "text": text})
        assert c.recv()["text"] == text
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


def test_rejoin_with_the_same_name_after_a_disconnect(connect):
    """bob drops (no closing handshake, as when a phone loses the network or
    a tab is killed) and comes back at once with the same name: alice sees
    him leave and join again, and his welcome lists both."""
    a = connect()
    a.login("alice")
    for rejoin in range(3):
        b = connect()
        assert b.login("bob") == {"type": "welcome", "name": "bob", "users": ["alice", "bob"]}, rejoin
        assert a.recv() == {"type": "join", "name": "bob"}
        if rejoin % 2:
            b.close()
        else:
            b.ws.socket.close()  # gone without a close frame
        assert a.recv() == {"type": "leave", "name": "bob"}
    c = connect()
    assert c.login("carol")["users"] == ["alice", "carol"]


def _member(port, name):
    """A logged-in member with a small receive buffer, as a phone on a slow
    link: what it does not read piles up in the server's write buffer."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(5 * UNIT)
    sock.connect(("127.0.0.1", port))
    c = Client(port, sock=sock)
    assert c.login(name)["type"] == "welcome"
    return c


def test_flooder_is_warned_then_closed_and_no_one_else_is_cut_off(serve_thread):
    """One member sends 500 messages as fast as it can; five others read at
    a human pace (but 10x the allowed rate). Before flood control the five
    were cut off as slow consumers (1013) and the flooder stayed."""
    import threading

    st = serve_thread(**chat_app(), write_limit=16 * 1024, slow_consumer_limit=256 * 1024)
    members = [_member(st.port, f"m{i}") for i in range(5)]
    flooder = _member(st.port, "flood")
    for i, m in enumerate(members):  # the joins after its own
        for _ in range(len(members) - i):
            assert m.recv()["type"] == "join"
    got = [[] for _ in members]
    closed = [None] * len(members)
    done = threading.Event()

    def read_slowly(i, m):
        while not done.is_set():
            try:
                got[i].append(json.loads(m.ws.recv(timeout=0.2 * UNIT)))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                closed[i] = exc.rcvd.code if exc.rcvd else 1006
                return
            time.sleep(0.005)

    readers = [threading.Thread(target=read_slowly, args=(i, m), daemon=True) for i, m in enumerate(members)]
    for t in readers:
        t.start()

    def flood():
        for n in range(500):
            try:
                flooder.send({"type": "message", "text": f"{n:03d} " + "x" * 1900})
            except ConnectionClosed:
                return

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    errors, code = [], None
    try:
        while True:
            msg = json.loads(flooder.ws.recv(timeout=10 * UNIT))
            if msg["type"] == "error":
                errors.append(msg["code"])
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    sender.join(10 * UNIT)
    assert errors == ["rate_limited"] and code == 1008, (errors, code)

    # Every member is still there, got the flooder's leave, and hears the room.
    deadline = time.monotonic() + 10 * UNIT
    while time.monotonic() < deadline and not all(any(m.get("type") == "leave" for m in g) for g in got):
        assert closed == [None] * len(members), closed
        time.sleep(0.05)
    assert closed == [None] * len(members), closed
    members[0].send({"type": "message", "text": "calm again"})
    while time.monotonic() < deadline and not all(any(m.get("text") == "calm again" for m in g) for g in got):
        time.sleep(0.05)
    done.set()
    for t in readers:
        t.join(5 * UNIT)
    assert closed == [None] * len(members), closed
    for g in got:
        texts = [m["text"] for m in g if m["type"] == "message"]
        assert texts[-1] == "calm again"
        assert BURST - 5 <= len(texts) - 1 <= BURST + 20, len(texts)  # the burst and a little refill
        assert {"type": "leave", "name": "flood"} in g
    for m in members:
        m.close()
    flooder.close()


def test_rate_limit_warns_once_and_forgives_a_calm_member(connect):
    c = connect()
    c.login("eager")  # the login takes a token too
    for _ in range(BURST - 1):
        c.send({"type": "message", "text": "x"})
    for _ in range(BURST - 1):
        assert c.recv()["type"] == "message"
    for _ in range(RATE_STRIKES):  # over the bucket (but for what refilled meanwhile): one warning
        c.send({"type": "message", "text": "too fast"})
    replies = []
    while True:
        try:
            replies.append(c.recv() if not replies else json.loads(c.ws.recv(timeout=0.3 * UNIT)))
        except TimeoutError:
            break
    assert [r.get("code") for r in replies if r["type"] == "error"] == ["rate_limited"], replies
    assert len(replies) < RATE_STRIKES  # the others were dropped
    time.sleep(BURST / 20 + 0.2)  # the bucket fills up again: forgiven
    c.send({"type": "message", "text": "calm"})
    assert c.recv()["text"] == "calm"
