"""The chat room seed application: ``fastws chat``.

A browser page at ``/`` (``fastws/static/chat.html``, self-contained) and a
WebSocket at ``/ws``; messages are JSON text frames both ways (login, then
messages to the one room). Garbage is answered with an ``error`` and cut off
after ``MAX_ERRORS`` in a row (1008); a binary frame closes with 1003, an
oversized one with 1009; a foreign ``Origin`` gets 403.

As in gorilla/websocket's chat example, ``ChatRoom`` is the one owner of the
user list, and fan-out goes through the server's topic ``"room"``. One
``ChatListener`` per connection: callbacks run synchronously in the event
loop, so the room needs no lock.
See docs/guide/cli.md#fastws-chat.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
import unicodedata
from importlib import resources

from ..http import Response
from .json_protocol import MAX_ERRORS, JsonListener, dumps
from .origin import OriginPolicy

__all__ = ["ChatRoom", "ChatListener", "chat_app", "MAX_NAME", "MAX_TEXT", "MAX_ERRORS", "TOPIC"]

logger = logging.getLogger("fastws.chat")

TOPIC = "room"
MAX_NAME = 32       # characters, after trimming
MAX_TEXT = 2000     # characters, after trimming
WS_PATH = "/ws"



def _has_control(text: str) -> bool:
    # Cc (C0/C1 controls), Cf (format: bidi overrides, zero-width joiners...),
    # Cs (lone surrogates, which json.loads lets through) and Co/Cn.
    return any(unicodedata.category(ch)[0] == "C" for ch in text)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class ChatRoom:
    """The one owner of who is in the room: ``name -> listener``, keyed by the
    case-folded name. Lives in the event loop's thread; no locking needed."""

    __slots__ = ("_members",)

    def __init__(self):
        self._members: dict = {}

    def __len__(self) -> int:
        return len(self._members)

    def users(self) -> list:
        return sorted((listener.name for listener in self._members.values()), key=str.casefold)

    def check_name(self, name):
        """``(name trimmed, None)`` if it may log in, else ``(None, (code, error))``."""
        if not isinstance(name, str):
            return None, ("bad_name", "name must be a string")
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME:
            return None, ("bad_name", f"name must be 1-{MAX_NAME} characters")
        if _has_control(name):
            return None, ("bad_name", "name must not contain control characters")
        if name.casefold() in self._members:
            return None, ("name_taken", f"the name \"{name}\" is taken; choose another")
        return name, None

    def add(self, listener) -> None:
        self._members[listener.name.casefold()] = listener

    def remove(self, listener) -> bool:
        key = listener.name.casefold()
        if self._members.get(key) is listener:
            del self._members[key]
            return True
        return False


class ChatListener(JsonListener):
    """One connection to the chat room."""

    __slots__ = ("room", "name")

    def __init__(self, room: ChatRoom):
        super().__init__()
        self.room = room
        self.name = None      # set once logged in

    # ------------------------------------------------------------ callbacks
    def on_message(self, data) -> None:
        msg = self.decode(data)
        if msg is None:
            return
        kind = msg["type"]
        if kind == "login":
            self._login(msg.get("name"))
        elif kind == "message":
            self._say(msg.get("text"))
        else:
            self.refuse("unknown_type", f"unknown message type {kind[:40]!r}")

    def on_close(self, code: int, reason: str) -> None:
        if self.name is not None and self.room.remove(self):
            # The server drops a closed connection's subscriptions itself.
            self.ws.server.publish(TOPIC, dumps({"type": "leave", "name": self.name}))

    # ------------------------------------------------------------ requests
    def _login(self, name) -> None:
        if self.name is not None:
            self.refuse("already_logged_in", "already logged in")
            return
        name, error = self.room.check_name(name)
        if error is not None:
            self.refuse(*error)
            return
        self.errors = 0
        self.name = name
        ws = self.ws
        # Tell the room first, then subscribe: the newcomer's own join is in
        # its welcome, not sent to it twice.
        ws.server.publish(TOPIC, dumps({"type": "join", "name": name}))
        self.room.add(self)
        ws.subscribe(TOPIC)
        ws.send(dumps({"type": "welcome", "name": name, "users": self.room.users()}))

    def _say(self, text) -> None:
        if self.name is None:
            self.refuse("login_required", "log in first")
            return
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= MAX_TEXT:
            self.refuse("bad_text", f"text must be 1-{MAX_TEXT} characters")
            return
        if _has_surrogate(text):  # "\ud800" is valid JSON but no UTF-8 text frame could carry it
            self.refuse("bad_text", "text must be valid Unicode (no lone surrogates)")
            return
        self.errors = 0
        self.ws.server.publish(TOPIC, dumps({
            "type": "message", "name": self.name, "text": text.strip(), "ts": int(time.time() * 1000),
        }))



# ---------------------------------------------------------------- HTTP side

def _page():
    """The page and its Content-Security-Policy: the inline script and style
    are allowed by their SHA-256, nothing else may load."""
    html = resources.files("fastws.apps").joinpath("static/chat.html").read_bytes()
    text = html.decode("utf-8")
    hashes = {}
    for tag in ("script", "style"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        hashes[tag] = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() + "'"
            for b in blocks
        )
    csp = (f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


def _path_of(target: str) -> str:
    return target.split("?", 1)[0]


def _text(status: int, reason: str, body: str, headers=()) -> Response:
    return Response(status, reason, list(headers), body.encode("utf-8"))


def chat_app(room: ChatRoom | None = None, origins=None) -> dict:
    """The keyword arguments of ``fastws.run``/``fastws.serve`` for the chat:
    ``app``, ``process_request``, ``http_handler``, ``max_size``.

    ``origins``: pages allowed to open the WebSocket besides the chat's own
    (``["*"]``: any); a foreign ``Origin`` gets 403."""
    if room is None:
        room = ChatRoom()
    policy = OriginPolicy(origins)
    html, csp = _page()
    page_headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-cache"),
    ]

    def factory():
        return ChatListener(room)

    def process_request(request):
        if _path_of(request.path) != WS_PATH:
            return _text(404, "Not Found", f"no WebSocket here; connect to {WS_PATH}\n")
        if not policy.allows(request):
            return _text(403, "Forbidden", "cross-origin WebSocket refused\n")
        return None

    def http_handler(request):
        path = _path_of(request.path)
        if path not in ("/", "/index.html"):
            return _text(404, "Not Found", "not found\n")
        if request.method != "GET":
            return _text(405, "Method Not Allowed", "GET only\n", [("Allow", "GET")])
        return Response(200, "OK", page_headers, html)

    return {"app": factory, "process_request": process_request, "http_handler": http_handler}
