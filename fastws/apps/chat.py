"""The chat room seed application: ``fastws chat``.

A page at ``/`` (``static/chat.html``) and a WebSocket at ``/ws``; JSON
text frames both ways (login, then messages to the one room). Garbage is answered with an ``error`` and cut off
after ``MAX_ERRORS`` in a row (1008); a binary frame closes with 1003, an
oversized one with 1009; a foreign ``Origin`` gets 403. Names that look like
one in the room (``skeleton``), invisible or bidi characters in names and line
breaks or controls in text are refused; a token bucket limits each sender.

As in gorilla/websocket's chat example, ``ChatRoom`` is the one owner of the
user list, and fan-out goes through the server's topic ``"room"``. One
``ChatListener`` per connection: callbacks run synchronously in the event
loop, so the room needs no lock. With a JWT, its ``name`` (else ``sub``) is the name.
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

from ..exceptions import CLOSE_POLICY_VIOLATION
from ..http import Response
from .json_protocol import MAX_ERRORS, JsonListener, dumps
from .origin import OriginPolicy

__all__ = ["ChatRoom", "ChatListener", "chat_app", "skeleton", "MAX_NAME", "MAX_TEXT", "MAX_ERRORS", "TOPIC",
           "CHAT_MAX_SIZE", "RATE", "BURST", "RATE_STRIKES"]

logger = logging.getLogger("fastws.chat")

TOPIC = "room"
MAX_NAME = 32       # characters, after trimming
MAX_TEXT = 2000     # characters, after trimming
WS_PATH = "/ws"
# The largest client message must hold the longest text at its worst: every
# character JSON-escaped ("\\ud83d\\ude00", 12 bytes for one astral character
# as json.dumps sends it by default), plus the envelope and whitespace that
# trimming removes. So an over-long text gets a bad_text reply, not a 1009.
CHAT_MAX_SIZE = 32 * 1024
assert CHAT_MAX_SIZE >= 12 * MAX_TEXT + 1024
# Flood control, per connection: a token bucket of RATE messages a second
# with bursts of BURST. Over it a message is dropped with a rate_limited
# error (once); RATE_STRIKES more dropped before the bucket is full again
# close the connection with 1008.
RATE = 20.0
BURST = 40
RATE_STRIKES = 20

# ---------------------------------------------------------------- names and text

# Invisible characters that are not in category C (format/control), refused
# in names: Default_Ignorable_Code_Point letters and fillers (Hangul fillers,
# Mongolian vowel separator, Khmer inherent vowels, ...), the Braille blank
# and the line/paragraph separators.
_INVISIBLE = frozenset(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2028, 0x2029,
     0x2800, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0x200B, 0x2010),
     *range(0x202A, 0x202F), *range(0x2060, 0x2070), *range(0xFE00, 0xFE0E),
     *range(0xFFF0, 0xFFF9), *range(0x1BCA0, 0x1BCA4), *range(0x1D173, 0x1D17B),
     *range(0xE0000, 0xE1000)])

# A compact confusables table (after Unicode TR39's confusables.txt, the
# common Latin / Cyrillic / Greek look-alikes and digits), applied to the
# case-folded, accent-stripped name: each maps to the Latin letter it passes
# for. "i", "l", "1" and "|" all become "l" ("I" and "l" look the same in
# many fonts), "0" becomes "o", "rn" "m" and "vv" "w".
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "ь": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "н": "h",
    "і": "l", "ӏ": "l", "ј": "j", "к": "k", "м": "m", "п": "n", "о": "o", "р": "p",
    "ԛ": "q", "г": "r", "ѕ": "s", "т": "t", "у": "y", "ү": "y", "ԝ": "w", "х": "x",
    "з": "3", "ɜ": "3",
    # Greek
    "α": "a", "β": "b", "ϲ": "c", "ε": "e", "η": "n", "ι": "l", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ζ": "z",
    "ϳ": "j", "ω": "w",
    # Latin and digits
    "i": "l", "ı": "l", "1": "l", "|": "l", "ǀ": "l", "0": "o", "5": "s", "ß": "ss",
    "ſ": "l", "ɑ": "a", "ɡ": "g", "ʏ": "y",
})


def skeleton(name: str) -> str:
    """What a name looks like, for the uniqueness check: NFKC, case-folded,
    accents dropped, confusable letters mapped to one prototype, spaces
    removed. "Alice", "ALICE", "Аlice" (Cyrillic А), "Ａｌｉｃｅ" and "Alicé"
    share one skeleton."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    stripped = "".join(ch for ch in unicodedata.normalize("NFD", folded)
                       if not unicodedata.combining(ch))
    mapped = unicodedata.normalize("NFKC", stripped).casefold().translate(_CONFUSABLES)
    return "".join(mapped.split()).replace("rn", "m").replace("vv", "w")


def _name_problem(name: str):
    """Why a (NFKC-normalised, trimmed) name is refused, or None."""
    for ch in name:
        cp = ord(ch)
        category = unicodedata.category(ch)
        if category[0] == "C" or cp in _INVISIBLE:
            # Cc controls, Cf format (bidi overrides/isolates, zero-width
            # characters), Cs lone surrogates, Co private use, Cn unassigned.
            if category == "Cc":
                return "name must not contain control characters"
            if 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069 or cp in (0x200E, 0x200F, 0x061C):
                return "name must not contain bidirectional controls"
            return f"name must not contain invisible characters (U+{cp:04X})"
        if category == "Zs" and ch != " ":
            return f"name must not contain unusual spaces (U+{cp:04X})"
    if "  " in name:
        return "name must not contain two spaces in a row"
    return None


# Message text: no character that can break a line or reorder the line on
# the screen (Cc but tab, Cf but the joiners ZWNJ/ZWJ that emoji and several
# scripts need, the line/paragraph separators), no lone surrogate.
_TEXT_ALLOWED_FORMAT = frozenset("\t\u200c\u200d")


def _text_problem(text: str):
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp") and ch not in _TEXT_ALLOWED_FORMAT:
            cp = ord(ch)
            if category == "Cs":
                return "text must be valid Unicode (no lone surrogates)"
            if ch in "\n\r\x85" or category in ("Zl", "Zp"):
                return "text must be one line (no line breaks)"
            if 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069 or cp in (0x200E, 0x200F, 0x061C):
                return f"text must not contain bidirectional controls (U+{cp:04X})"
            return f"text must not contain control or format characters (U+{cp:04X})"
    return None


class ChatRoom:
    """The one owner of who is in the room: ``skeleton(name) -> listener``
    (names that look alike share a key). Lives in the event loop's thread;
    no locking needed."""

    __slots__ = ("_members",)

    def __init__(self):
        self._members: dict = {}

    def __len__(self) -> int:
        return len(self._members)

    def users(self) -> list:
        return sorted((listener.name for listener in self._members.values()), key=str.casefold)

    def check_name(self, name):
        """``(name normalised, None)`` if it may log in, else ``(None, (code, error))``."""
        if not isinstance(name, str):
            return None, ("bad_name", "name must be a string")
        name = unicodedata.normalize("NFKC", name).strip()
        if not 1 <= len(name) <= MAX_NAME:
            return None, ("bad_name", f"name must be 1-{MAX_NAME} characters")
        problem = _name_problem(name)
        if problem is not None:
            return None, ("bad_name", problem)
        key = skeleton(name)
        if not key:
            return None, ("bad_name", "name must contain a visible character")
        if key in self._members:
            taken = self._members[key].name
            like = "is taken" if taken == name else f"is taken: it looks like \"{taken}\", who is here"
            return None, ("name_taken", f"the name \"{name}\" {like}; choose another")
        return name, None

    def add(self, listener) -> None:
        self._members[skeleton(listener.name)] = listener

    def remove(self, listener) -> bool:
        key = skeleton(listener.name)
        if self._members.get(key) is listener:
            del self._members[key]
            return True
        return False


class ChatListener(JsonListener):
    """One connection to the chat room."""

    __slots__ = ("room", "name", "_tokens", "_stamp", "_dropped")

    def __init__(self, room: ChatRoom):
        super().__init__()
        self.room = room
        self.name = None      # set once logged in
        self._tokens = float(BURST)  # the flood-control bucket
        self._stamp = time.monotonic()
        self._dropped = 0     # messages dropped since the bucket was last full

    # ------------------------------------------------------------ callbacks
    def on_message(self, data) -> None:
        if not self._admit():
            return
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

    # ------------------------------------------------------------ flood control
    def _admit(self) -> bool:
        """Take a token for this message; False if it is dropped (a
        rate_limited error the first time, 1008 after RATE_STRIKES)."""
        now = time.monotonic()
        tokens = self._tokens + (now - self._stamp) * RATE
        self._stamp = now
        if tokens >= BURST:
            tokens = float(BURST)
            self._dropped = 0  # calm again: a later burst is warned again
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        ws = self.ws
        if not ws.open:
            return False
        self._dropped += 1
        if self._dropped > RATE_STRIKES:
            ws.close(CLOSE_POLICY_VIOLATION, "sending too fast")
        elif self._dropped == 1:
            ws.send(dumps({"type": "error", "code": "rate_limited",
                           "error": f"slow down: at most {RATE:g} messages a second (bursts of {BURST}); "
                                    "this message was dropped"}))
        return False

    # ------------------------------------------------------------ requests
    def _login(self, name) -> None:
        if self.name is not None:
            self.refuse("already_logged_in", "already logged in")
            return
        user = self.ws.user
        if isinstance(user, dict):
            # Authenticated (a JWT's claims): the token names the user; the
            # login message's name is ignored. The name rules still apply.
            name = user.get("name") or user.get("sub")
            if not isinstance(name, str):
                self.refuse("bad_name", "the token has no name or sub claim to use as a name")
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
        if not isinstance(text, str):
            self.refuse("bad_text", f"text must be a string of 1-{MAX_TEXT} characters")
            return
        text = text.strip()
        if not 1 <= len(text) <= MAX_TEXT:
            self.refuse("bad_text", f"text must be 1-{MAX_TEXT} characters (got {len(text)})")
            return
        problem = _text_problem(text)  # "\ud800" is valid JSON but no UTF-8 text frame could carry it
        if problem is not None:
            self.refuse("bad_text", problem)
            return
        self.errors = 0
        ws = self.ws
        ws.server.publish_as(ws, TOPIC, dumps({
            "type": "message", "name": self.name, "text": text, "ts": int(time.time() * 1000),
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

    def authorize(ws, topic, action):
        # The room's one topic, for everyone admitted (a JWT's subs/pubs
        # claims are not needed for it); nothing else.
        return topic == TOPIC

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

    return {"app": factory, "process_request": process_request, "http_handler": http_handler,
            "max_size": CHAT_MAX_SIZE, "authorize": authorize}
