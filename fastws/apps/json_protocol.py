"""The base of the JSON-over-text apps (chat, push): one JSON object with a
string ``"type"`` per text message, and a clear error reply for anything
else. See docs/guide/cli.md."""
from __future__ import annotations

import json

from ..exceptions import CLOSE_POLICY_VIOLATION, CLOSE_UNSUPPORTED_DATA
from ..listener import Listener

__all__ = ["JsonListener", "dumps", "MAX_ERRORS"]

MAX_ERRORS = 10  # refused requests in a row before closing with 1008


def dumps(obj) -> str:
    """Compact JSON text for the wire."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class JsonListener(Listener):
    """A listener for JSON-over-text protocols (the chat and push apps).

    ``decode(data)`` returns the message as a dict with a string ``"type"``, or
    None after answering the problem itself: binary data closes with 1003,
    bad JSON or a message that is not an object with a "type" gets an error
    message; ``MAX_ERRORS`` refusals in a row close with 1008. Never a
    traceback for bad input.
    """

    __slots__ = ("errors",)

    def __init__(self):
        self.errors = 0

    def decode(self, data):
        ws = self.ws
        if not ws.open:  # closing: no answer could be sent
            return None
        if not isinstance(data, str):
            ws.close(CLOSE_UNSUPPORTED_DATA, "text (JSON) messages only")
            return None
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            self.refuse("bad_json", "not valid JSON")
            return None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self.refuse("bad_request", 'expected a JSON object with a "type"')
            return None
        return msg

    def refuse(self, code: str, error: str) -> None:
        """Answer a bad request with an error message (or close after too many)."""
        self.errors += 1
        ws = self.ws
        if self.errors >= MAX_ERRORS:
            ws.close(CLOSE_POLICY_VIOLATION, "too many bad requests")
        elif ws.open:
            ws.send(dumps({"type": "error", "code": code, "error": error}))
