"""Fuzz target: the chat and push JSON protocols (fastws/apps).

Arbitrary text and binary messages go to ``ChatListener``s (three
connections sharing one ``ChatRoom``) or ``PushListener``s on fake connection
objects that record sends, publishes and closes: no exception escapes a
callback, every reply and publish is one JSON object with a string "type"
that a UTF-8 text frame can carry, the only close codes are 1003 and 1008,
nothing is sent after a close, the room's names stay unique and a connection
holds at most MAX_TOPICS topics. Input: 1 config byte (app), then records
separated by newlines, each an op byte and a payload.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import expect  # noqa: E402

from fastws.apps import chat, push  # noqa: E402
from fastws.http import Request  # noqa: E402
from fastws.protocol import close_payload  # noqa: E402

# Op bytes: a/b/c text to connection 0/1/2, A/B/C binary, x/y/z close it
# (the peer went away: on_close), p: the path of connections made after it
# (push: its query string); any other byte picks one of these by value.
OPS = b"abcABCxyzp"


class FakeServer:
    """What the apps use of a fastws.Server (no broker, no authentication)."""

    broker = None
    authenticate = None
    authorize = None

    def __init__(self):
        self.published = []
        self.watching = set()  # (ws, topic): presence events asked for

    def watch_presence(self, ws, topic):  # no broker: this process's presence
        expect(topic in ws.topics, "presence watched on a topic not subscribed", topic)
        self.watching.add((ws, topic))

    def unwatch_presence(self, ws, topic):
        self.watching.discard((ws, topic))

    def publish(self, topic, data):
        self.published.append((topic, data))
        return 0

    def publish_as(self, ws, topic, data):  # no authorize hook: a plain publish
        return self.publish(topic, data)


class FakeWS:
    """What the apps use of a connection, recording what they do."""

    def __init__(self, server, path):
        self.server = server
        self.path = path
        self.user = None  # no authenticate hook
        self.open = True
        self.topics = set()
        self.sent = []
        self.closed_with = None

    def send(self, data):
        expect(self.open, "send after close", data)
        self.sent.append(data)
        return True

    def close(self, code=1000, reason=""):
        close_payload(code, reason)  # what the real close validates first
        if self.open:
            self.open = False
            self.closed_with = (code, reason)

    def subscribe(self, topic):
        expect(self.open, "subscribe after close", topic)
        self.topics.add(topic)

    def unsubscribe(self, topic):
        self.topics.discard(topic)

    def may(self, topic, action):
        return True  # no authorize hook


def valid_reply(text, where):
    expect(type(text) is str, where, "not text", text)
    text.encode("utf-8")  # UnicodeEncodeError: no text frame can carry it
    obj = json.loads(text)
    expect(type(obj) is dict and type(obj.get("type")) is str, where, "not an object with a type", obj)


def records(body):
    for line in body.split(b"\n"):
        if not line:
            continue
        op = line[0] if line[0] in OPS else OPS[line[0] % len(OPS)]
        yield chr(op), line[1:]


def check(data: bytes) -> None:
    if not data:
        return
    use_push = bool(data[0] & 1)
    server = FakeServer()
    room = chat.ChatRoom()
    service = push.PushService()
    service.attach(server)
    path = "/ws"
    conns = {}
    made = []

    def conn(index):
        if index not in conns:
            ws = FakeWS(server, path)
            if use_push:
                refused = service.process_request(Request("GET", path, []))
                if refused is not None:
                    return None
                listener = push.PushListener()
            else:
                listener = chat.ChatListener(room)
            listener.on_connect(ws)
            made.append(ws)
            if use_push:
                expect(len(ws.topics) <= push.MAX_TOPICS, "topics from the query", len(ws.topics))
            conns[index] = (ws, listener)
        return conns[index]

    for op, payload in records(data[1:]):
        if op == "p":
            path = payload.decode("latin-1")
            continue
        index = OPS.index(op.encode()) % 3
        got = conn(index)
        if got is None:
            continue
        ws, listener = got
        if op in "xyz":
            if ws.open:
                ws.open = False
                listener.on_close(1000, "")
            del conns[index]
            continue
        message = payload.decode("utf-8", "replace") if op in "abc" else payload
        if not ws.open:
            continue  # the server delivers nothing after a close
        listener.on_message(message)
        if use_push:
            expect(len(ws.topics) <= push.MAX_TOPICS, "too many topics", len(ws.topics))
        else:
            names = [n.casefold() for n in room.users()]
            expect(len(names) == len(set(names)), "duplicate names in the room", names)
    for ws in made:
        for text in ws.sent:
            valid_reply(text, "reply")
        expect(ws.closed_with is None or ws.closed_with[0] in (1003, 1008), "close code", ws.closed_with)
    for topic, text in server.published:
        expect(topic == chat.TOPIC, "published to", topic)
        valid_reply(text, "publish")


def main() -> None:
    _common.main(check, max_len=4096)


if __name__ == "__main__":
    main()
