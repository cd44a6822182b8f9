"""The notification push seed application: ``fastws push``.

Clients hold a WebSocket open at ``/ws`` and subscribe to topics; any backend
pushes to a topic with a plain HTTP ``POST /publish/<topic>`` on the same
port, and every subscriber of that topic gets the request body as one
message: a text message if the body is valid UTF-8, else a binary one.

Topics are 1-128 characters of ``A-Z a-z 0-9 . _ : -`` (in a URL path they
may be percent-encoded). A connection may hold up to ``MAX_TOPICS``.

WebSocket (``/ws``)
===================

Subscribe at connect time with a query string, ``/ws?topics=a,b`` (an invalid
topic refuses the upgrade with 400), and/or later with JSON text messages:

``{"type": "subscribe", "topic": T}``   -> ``{"type": "subscribed", "topic": T}``
``{"type": "unsubscribe", "topic": T}`` -> ``{"type": "unsubscribed", "topic": T}``

A refused request gets ``{"type": "error", "code": CODE, "error": TEXT}``
(CODE: ``bad_json``, ``bad_request``, ``unknown_type``, ``bad_topic``,
``too_many_topics``) and the connection stays open; a binary frame closes it
with 1003, a frame over 4 KiB with 1009, ``MAX_ERRORS`` refused requests in
a row with 1008. Published messages are the raw bodies, not wrapped in JSON;
the JSON replies above only ever answer the client's own requests.

HTTP
====

``POST /publish/<topic>``  the body goes to the topic's subscribers; 200
                           ``{"delivered": N}`` (N: subscribers reached, 0 if
                           none). With a token, ``Authorization: Bearer TOKEN``
                           is required (401 otherwise). 400 bad topic, 405
                           another method, 413 body over the limit (``max_body``,
                           at most the request reader's 1 MiB).
``GET /healthz``           200 ``ok``
anything else              404

One process, one set of subscribers: with several workers a publish would
reach only the subscribers of the worker that took the POST, so the command
refuses ``--workers`` above 1 until a shared broker exists.
"""
from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import parse_qs, unquote

from .exceptions import ConfigError
from .handshake import Response
from .apps import MAX_ERRORS, JsonListener, dumps

__all__ = ["PushListener", "PushService", "push_app", "valid_topic",
           "MAX_TOPICS", "MAX_ERRORS", "MAX_BODY", "CLIENT_MAX_SIZE"]

logger = logging.getLogger("fastws.push")

MAX_TOPICS = 64          # subscriptions per connection
MAX_BODY = 2**20         # the HTTP request reader's own body limit (handshake.RequestReader)
CLIENT_MAX_SIZE = 4096   # largest message a subscriber may send (JSON requests only)
WS_PATH = "/ws"
PUBLISH_PREFIX = "/publish/"

_TOPIC = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_topic(topic) -> bool:
    return isinstance(topic, str) and _TOPIC.fullmatch(topic) is not None



def _split_target(target: str):
    path, _, query = target.partition("?")
    return path, query


def query_topics(target: str):
    """The topics of ``?topics=a,b`` (the parameter may repeat): a list, or
    None if one is invalid or there are more than MAX_TOPICS."""
    _, query = _split_target(target)
    topics = []
    for value in parse_qs(query, keep_blank_values=True).get("topics", ()):
        for topic in value.split(","):
            if topic == "" and value == "":
                continue  # ?topics= with nothing: no topic
            if not valid_topic(topic):
                return None
            if topic not in topics:
                topics.append(topic)
    return topics if len(topics) <= MAX_TOPICS else None


class PushListener(JsonListener):
    """One subscriber connection."""

    __slots__ = ()

    def on_connect(self, ws) -> None:
        self.ws = ws
        # process_request has validated the query string already.
        for topic in query_topics(ws.path) or ():
            ws.subscribe(topic)

    def on_message(self, data) -> None:
        msg = self.decode(data)
        if msg is None:
            return
        ws = self.ws
        kind, topic = msg["type"], msg.get("topic")
        if kind not in ("subscribe", "unsubscribe"):
            self.refuse("unknown_type", f"unknown message type {kind[:40]!r}")
            return
        if not valid_topic(topic):
            self.refuse("bad_topic", "topic must be 1-128 characters of A-Z a-z 0-9 . _ : -")
            return
        if kind == "subscribe":
            if topic not in ws.topics and len(ws.topics) >= MAX_TOPICS:
                self.refuse("too_many_topics", f"at most {MAX_TOPICS} topics per connection")
                return
            ws.subscribe(topic)
            reply = "subscribed"
        else:
            ws.unsubscribe(topic)
            reply = "unsubscribed"
        self.errors = 0
        ws.send(dumps({"type": reply, "topic": topic}))


def _text(status: int, reason: str, body: str, headers=()) -> Response:
    return Response(status, reason, list(headers), body.encode("utf-8"))


def _json(status: int, reason: str, obj, headers=()) -> Response:
    return Response(status, reason, [("Content-Type", "application/json"), *headers],
                    (dumps(obj) + "\n").encode("utf-8"))


class PushService:
    """The HTTP side of the push service; it publishes through the ``Server``
    given to ``attach`` (``fastws.run(..., on_server=service.attach)``)."""

    __slots__ = ("server", "_token", "max_body")

    def __init__(self, token: str | None = None, max_body: int = MAX_BODY):
        if token is not None:
            if not isinstance(token, str) or not token or not all(0x21 <= ord(c) <= 0x7E for c in token):
                raise ConfigError("token must be a non-empty string of printable ASCII without spaces")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or not 1 <= max_body <= MAX_BODY:
            raise ConfigError(f"the largest publish body (max_body, --max-size) must be 1..{MAX_BODY} "
                              f"bytes, the HTTP request reader's limit; got {max_body!r}")
        self.server = None
        self._token = token.encode("ascii") if token is not None else None
        self.max_body = max_body

    def attach(self, server) -> None:
        self.server = server

    def _authorized(self, request) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = (request.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time, so the token cannot be guessed byte by byte from timings.
        return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogatepass"), self._token)

    def process_request(self, request):
        path, _ = _split_target(request.path)
        if path != WS_PATH:
            return _text(404, "Not Found", f"no WebSocket here; connect to {WS_PATH}?topics=...\n")
        if query_topics(request.path) is None:
            return _text(400, "Bad Request",
                         f"topics: at most {MAX_TOPICS}, each 1-128 characters of A-Z a-z 0-9 . _ : -\n")
        return None

    def http_handler(self, request):
        path, _ = _split_target(request.path)
        if path == "/healthz":
            if request.method != "GET":
                return _text(405, "Method Not Allowed", "GET only\n", [("Allow", "GET")])
            return _text(200, "OK", "ok\n")
        if not path.startswith(PUBLISH_PREFIX):
            return _text(404, "Not Found", "not found\n")
        if request.method != "POST":
            return _text(405, "Method Not Allowed", "POST only\n", [("Allow", "POST")])
        if not self._authorized(request):
            return _text(401, "Unauthorized", "a valid bearer token is required\n",
                         [("WWW-Authenticate", 'Bearer realm="fastws push"')])
        topic = unquote(path[len(PUBLISH_PREFIX):], errors="replace")  # U+FFFD is no topic character
        if not valid_topic(topic):
            return _text(400, "Bad Request", "topic must be 1-128 characters of A-Z a-z 0-9 . _ : -\n")
        body = request.body
        if len(body) > self.max_body:
            return _text(413, "Content Too Large", f"body over {self.max_body} bytes\n")
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            data = bytes(body)
        delivered = self.server.publish(topic, data) if self.server is not None else 0
        return _json(200, "OK", {"delivered": delivered})


def push_app(token: str | None = None, max_body: int = MAX_BODY):
    """``(service, options)``: ``options`` are the keyword arguments of
    ``fastws.serve``/``fastws.run`` (``app``, ``process_request``,
    ``http_handler``, ``max_size`` for what subscribers send); give the
    started server to ``service.attach`` (``fastws.run(..., on_server=service.attach)``)."""
    service = PushService(token, max_body)
    return service, {"app": PushListener, "process_request": service.process_request,
                     "http_handler": service.http_handler, "max_size": CLIENT_MAX_SIZE}
