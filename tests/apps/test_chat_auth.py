"""The chat room with JWT authentication (issue #15): the user's name comes
from the token (``name``, else ``sub``); the login message's name is ignored;
the name rules (NFKC, look-alikes) still apply. Real tokens made by PyJWT,
the websockets client on 127.0.0.1."""
from __future__ import annotations

import json
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")

from fastws.apps.chat import chat_app  # noqa: E402
from fastws.auth import JWTAuth  # noqa: E402
from util import UNIT  # noqa: E402

SECRET = "chat-secret-chat-secret-chat-secret!"


def token(**claims) -> str:
    return jwt.encode({"exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def chat(serve_thread):
    return serve_thread(**chat_app(), authenticate=JWTAuth(secret=SECRET))


@pytest.fixture
def connect(chat):
    opened = []

    def make(tok=None):
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        ws = ws_sync.connect(f"ws://127.0.0.1:{chat.port}/ws", open_timeout=5 * UNIT,
                             additional_headers=headers).__enter__()
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def login(ws, name="anything"):
    ws.send(json.dumps({"type": "login", "name": name}))
    return json.loads(ws.recv(timeout=5 * UNIT))


def test_the_token_names_the_user_and_the_login_name_is_ignored(connect):
    ws = connect(token(sub="u-1", name="Alice"))
    assert login(ws, "Mallory") == {"type": "welcome", "name": "Alice", "users": ["Alice"]}


def test_sub_when_there_is_no_name_claim(connect):
    ws = connect(token(sub="bob"))
    assert login(ws, None)["name"] == "bob"


def test_messages_carry_the_token_name(connect):
    ws = connect(token(sub="u-1", name="Alice"))
    login(ws)
    ws.send(json.dumps({"type": "message", "text": "hi"}))
    msg = json.loads(ws.recv(timeout=5 * UNIT))
    assert (msg["type"], msg["name"], msg["text"]) == ("message", "Alice", "hi")


def test_name_rules_still_apply(connect):
    # NFKC: the full-width name is stored as plain ASCII.
    a = connect(token(sub="u-1", name="\uff21\uff4c\uff49\uff43\uff45"))
    assert login(a)["name"] == "Alice"
    # A look-alike of a name in the room (Cyrillic A) is taken, whatever the login says.
    b = connect(token(sub="u-2", name="\u0410lice"))
    reply = login(b, "Zed")
    assert (reply["type"], reply["code"]) == ("error", "name_taken")
    # Invisible characters in the token's name: bad_name.
    c = connect(token(sub="u-3", name="Bo\u200bb"))
    reply = login(c, "Bob")
    assert (reply["type"], reply["code"]) == ("error", "bad_name")


def test_a_token_without_a_usable_name(connect):
    ws = connect(token(name=42))
    reply = login(ws, "Alice")
    assert (reply["type"], reply["code"]) == ("error", "bad_name")


def test_no_token_no_chat(chat):
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{chat.port}/ws", open_timeout=5 * UNIT)
    assert info.value.response.status_code == 401


def test_without_authentication_the_login_name_counts(serve_thread):
    st = serve_thread(**chat_app())
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws", open_timeout=5 * UNIT) as ws:
        assert login(ws, "Carol")["name"] == "Carol"
