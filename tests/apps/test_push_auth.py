"""The push service with JWT (issue #15): the token's ``subs`` claim decides
which topics a subscriber gets (a refused one is an error message on the
open connection, from ``?topics=`` or a subscribe message), its ``pubs``
claim who may ``POST /publish/<topic>`` (401 without a valid token, 403
without the claim), the shared ``--token`` keeps working, and an expiring
token is refreshed in the push protocol or the connection closed with 4001.
websockets subscribers, http.client publishers, tokens made by PyJWT."""
from __future__ import annotations

import http.client
import json
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")

from fastws.apps.push import push_app  # noqa: E402
from fastws.auth import JWTAuth  # noqa: E402
from fastws.exceptions import CLOSE_TOKEN_EXPIRED  # noqa: E402
from util import UNIT  # noqa: E402

SECRET = "push-secret-push-secret-push-secret-push"
SHARED = "shared-backend-token"


def token(ttl: int = 300, sub: str = "alice", key: str = SECRET, **claims) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + ttl, **claims}, key, algorithm="HS256")


def start(serve_thread, token=None, refresh_grace=30.0, **options):
    auth = JWTAuth(secret=SECRET, topics_param=None)
    service, push_options = push_app(token, auth=auth, refresh_grace=refresh_grace)
    st = serve_thread(**push_options, **options)
    service.attach(st.server)
    return st


@pytest.fixture
def push(serve_thread):
    return start(serve_thread, token=SHARED)


@pytest.fixture
def connect():
    opened = []

    def make(port, tok, query=""):
        ws = ws_sync.connect(f"ws://127.0.0.1:{port}/ws{query}", open_timeout=5 * UNIT,
                             additional_headers={"Authorization": f"Bearer {tok}"}).__enter__()
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def recv(ws):
    data = ws.recv(timeout=5 * UNIT)
    try:
        return json.loads(data)
    except ValueError:
        return data


def publish(port, topic, body, bearer=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request("POST", f"/publish/{topic}", body=body,
                     headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_subscribed(st, topic, n=1):
    deadline = time.monotonic() + 5 * UNIT
    while st.call(st.server.subscribers, topic) < n:
        assert time.monotonic() < deadline, f"no subscriber on {topic}"


# ---------------------------------------------------------------- subscribing

def test_query_topics_refused_ones_get_an_error_not_a_close(push, connect):
    ws = connect(push.port, token(subs=["news.*"]), "?topics=news.eu,secret,news.fr")
    assert recv(ws) == {"type": "error", "code": "forbidden", "topic": "secret",
                        "error": "not allowed to subscribe to this topic"}
    wait_subscribed(push, "news.fr")
    assert push.call(push.server.subscribers, "secret") == 0
    status, _, body = publish(push.port, "news.eu", "hello", SHARED)
    assert status == 200 and json.loads(body) == {"delivered": 1}
    assert recv(ws) == "hello"


def test_subscribe_messages_topics_list_and_single(push, connect):
    ws = connect(push.port, token(subs="a b.*"))
    ws.send(json.dumps({"type": "subscribe", "topics": ["a", "c", "b.1"]}))
    assert recv(ws) == {"type": "subscribed", "topic": "a"}
    assert recv(ws)["code"] == "forbidden"
    assert recv(ws) == {"type": "subscribed", "topic": "b.1"}
    ws.send(json.dumps({"type": "subscribe", "topic": "c"}))
    reply = recv(ws)
    assert (reply["type"], reply["code"], reply["topic"]) == ("error", "forbidden", "c")
    ws.send(json.dumps({"type": "unsubscribe", "topics": ["a"]}))
    assert recv(ws) == {"type": "unsubscribed", "topic": "a"}
    ws.send(json.dumps({"type": "subscribe", "topics": "a"}))
    assert recv(ws)["code"] == "bad_request"


def test_without_jwt_every_topic_is_open(serve_thread):
    service, options = push_app()
    st = serve_thread(**options)
    service.attach(st.server)
    assert st.server.authorize is None
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=anything", open_timeout=5 * UNIT) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["x", "y"]}))
        assert recv(ws) == {"type": "subscribed", "topic": "x"}
        assert recv(ws) == {"type": "subscribed", "topic": "y"}


def test_no_token_no_websocket(push):
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{push.port}/ws?topics=a", open_timeout=5 * UNIT)
    assert info.value.response.status_code == 401


# ---------------------------------------------------------------- publishing

def test_publish_needs_a_jwt_with_the_publish_claim(push, connect):
    ws = connect(push.port, token(subs="*"), "?topics=news")
    wait_subscribed(push, "news")
    status, headers, _ = publish(push.port, "news", "x")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="fastws"'
    status, headers, body = publish(push.port, "news", "x", "not-a-jwt")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, _, _ = publish(push.port, "news", "x", token(pubs="news", key="another-secret-another-secret-xx"))
    assert status == 401
    status, _, _ = publish(push.port, "news", "x", token(ttl=-10, pubs="news"))
    assert status == 401
    status, headers, _ = publish(push.port, "news", "x", token(pubs=["other.*"]))
    assert status == 403 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    status, _, body = publish(push.port, "news", "by jwt", token(pubs=["news", "other.*"]))
    assert status == 200 and json.loads(body) == {"delivered": 1}
    assert recv(ws) == "by jwt"
    # The shared token still publishes anything; a bad topic is still 400.
    status, _, body = publish(push.port, "news", "by backend", SHARED)
    assert status == 200 and recv(ws) == "by backend"
    assert publish(push.port, "bad%20topic", "x", token(pubs="*"))[0] == 400


def test_jwt_only_no_shared_token(serve_thread, connect):
    st = start(serve_thread)
    assert publish(st.port, "t", "x", SHARED)[0] == 401
    assert publish(st.port, "t", "x", token(pubs="t"))[0] == 200


# ---------------------------------------------------------------- refresh

def test_refresh_keeps_the_connection(serve_thread, connect):
    st = start(serve_thread, refresh_grace=5.0, timer_tick=0.05)
    ws = connect(st.port, token(ttl=2, subs=["a", "b"]), "?topics=a,b")
    assert recv(ws) == {"type": "refresh"}
    # Another subject is refused; the connection stays.
    ws.send(json.dumps({"type": "refresh", "token": token(sub="mallory", subs="*")}))
    reply = recv(ws)
    assert (reply["type"], reply["code"]) == ("error", "bad_token")
    ws.send(json.dumps({"type": "refresh", "token": "garbage"}))
    assert recv(ws) == {"type": "error", "code": "bad_token", "error": "malformed token"}
    # The new token allows "a" only: "b" is dropped.
    new = token(ttl=300, subs=["a"])
    ws.send(json.dumps({"type": "refresh", "token": new}))
    reply = recv(ws)
    assert reply["type"] == "refreshed" and reply["exp"] == jwt.decode(new, SECRET, algorithms=["HS256"])["exp"]
    assert recv(ws) == {"type": "unsubscribed", "topic": "b", "reason": "forbidden"}
    assert st.call(st.server.subscribers, "b") == 0
    assert publish(st.port, "a", "after refresh", token(pubs="a"))[0] == 200
    assert recv(ws) == "after refresh"
    users = st.call(lambda: [c.user for c in st.server.connections if c.user is not None])
    assert [u["exp"] for u in users] == [reply["exp"]]


def test_no_refresh_closes_4001(serve_thread, connect):
    st = start(serve_thread, refresh_grace=0.3, timer_tick=0.05)
    ws = connect(st.port, token(ttl=2, subs="a"), "?topics=a")
    assert recv(ws) == {"type": "refresh"}
    with pytest.raises(ConnectionClosed) as info:
        recv(ws)
    assert info.value.rcvd.code == CLOSE_TOKEN_EXPIRED and info.value.rcvd.reason == "token expired"


def test_refresh_without_jwt_is_a_bad_request(serve_thread):
    service, options = push_app()
    st = serve_thread(**options)
    service.attach(st.server)
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws", open_timeout=5 * UNIT) as ws:
        ws.send(json.dumps({"type": "refresh", "token": token()}))
        assert recv(ws)["code"] == "bad_request"


# ---------------------------------------------------------------- the command

def test_the_command_passes_the_jwt_to_the_push_app(monkeypatch):
    import fastws.cli as cli

    seen = {}

    def fake_run(**options):
        seen.update(options)
        return 0

    monkeypatch.setattr("fastws.runner.run", fake_run)
    assert cli.main(["push", "--port", "0", "--jwt-secret", SECRET, "--refresh-grace", "7"]) == 0
    auth = seen["authenticate"]
    assert isinstance(auth, JWTAuth) and auth.topics_param is None
    assert seen["token_refresh_grace"] == 7.0 and seen["on_token_expired"].__name__ == "ask_refresh"
