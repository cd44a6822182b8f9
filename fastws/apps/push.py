"""The notification push seed application: ``fastws push``.

Clients hold a WebSocket open at ``/ws`` and subscribe to topics (``?topics=a,b``
or ``{"type": "subscribe", "topic": T}``); any backend pushes to a topic with
``POST /publish/<topic>`` on the same port, and every subscriber gets the body
as one message (text if it is valid UTF-8, else binary). With ``--redis URL``
publishes go through the broker (several workers allowed); with ``--history N``
messages arrive wrapped with their id and a client resumes with ``since=ID``.
Without a broker ``--workers`` above 1 is refused: a publish would reach only
the worker that took the POST. With a JWT (``push_app(auth=JWTAuth(...))``)
the token's ``subs``/``pubs`` claims decide who subscribes (a refused topic is
a ``forbidden`` error message) and publishes (403), and an expired token is
refreshed in the protocol (``{"type": "refresh"}``) or closed with 4001. Presence
(``GET /presence/<topic>``, join/leave events): docs/guide/presence.md; docs/guide/cli.md#fastws-push.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
from urllib.parse import parse_qs, unquote

from ..exceptions import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    Forbidden,
    InvalidRequest,
    NotReplicated,
)
from ..http import Response
from ..presence import MAX_MEMBERS
from .json_protocol import MAX_ERRORS, JsonListener, dumps
from .origin import OriginPolicy

__all__ = ["PushListener", "PushService", "push_app", "valid_topic", "envelope", "ask_refresh",
           "MAX_TOPICS", "MAX_ERRORS", "MAX_BODY", "CLIENT_MAX_SIZE"]

logger = logging.getLogger("fastws.push")

MAX_TOPICS = 64          # subscriptions per connection
MAX_BODY = 2**20         # the HTTP request reader's own body limit (handshake.RequestReader)
CLIENT_MAX_SIZE = 4096   # largest message a subscriber may send (JSON requests only)
WS_PATH = "/ws"
PUBLISH_PREFIX = "/publish/"
PRESENCE_PREFIX = "/presence/"

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


_MAX_ID = 2**63 - 1


def valid_since(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID


def query_since(target: str):
    """``?since=ID``: None if absent, the id, or False if malformed."""
    _, query = _split_target(target)
    values = parse_qs(query, keep_blank_values=True).get("since")
    if not values:
        return None
    if len(values) > 1 or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 19:
        return False
    since = int(values[0])
    return since if since <= _MAX_ID else False


def envelope(topic: str, msg_id: int, data) -> str:
    """A published message with its id (push with history)."""
    if isinstance(data, str):
        return dumps({"type": "message", "topic": topic, "id": msg_id, "data": data})
    return dumps({"type": "message", "topic": topic, "id": msg_id,
                  "base64": base64.b64encode(data).decode("ascii")})


_tasks: set = set()  # resumes in progress (a task needs a reference until it ends)


def _spawn(coro) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _history(ws):
    broker = ws.server.broker
    return broker if broker is not None and getattr(broker, "history_size", 0) else None


def _forbidden(topic: str) -> str:
    return dumps({"type": "error", "code": "forbidden", "topic": topic,
                  "error": "not allowed to subscribe to this topic"})


def ask_refresh(ws) -> None:
    """The push app's ``on_token_expired``: ask the client for a new token
    (``{"type": "refresh"}``); the server closes with 4001 unless one comes
    within ``token_refresh_grace``."""
    ws.send(dumps({"type": "refresh"}))


class PushListener(JsonListener):
    """One subscriber connection."""

    __slots__ = ()
    presence = False  # opt-in to presence events allowed (push_app(presence=True) makes a subclass)

    def on_connect(self, ws) -> None:
        self.ws = ws
        # process_request has validated the query string already.
        topics = query_topics(ws.path) or ()
        if topics and ws.server.authorize is not None:
            allowed = []
            for topic in topics:  # a refused topic: an error message, the others go on
                if ws.may(topic, "subscribe"):
                    allowed.append(topic)
                else:
                    ws.send(_forbidden(topic))
            topics = allowed
        since = query_since(ws.path)
        if since is None:
            for topic in topics:
                ws.subscribe(topic)
        elif topics:
            _spawn(self._resume_all(topics, since))

    async def _resume_all(self, topics, since) -> None:
        ws = self.ws
        broker = _history(ws)
        for topic in topics:
            try:
                await broker.resume(ws, topic, since, self._send_message, self._gap)
            except Forbidden:  # the token was refreshed meanwhile, without this topic
                if ws.open:
                    ws.send(_forbidden(topic))
                continue
            except BrokerUnavailable:
                if ws.open:
                    ws.close(CLOSE_TRY_AGAIN_LATER, "message broker unavailable")
                return
            except Exception:
                logger.exception("resuming %r from %d failed", topic, since)
                if ws.open:
                    ws.close(CLOSE_INTERNAL_ERROR, "internal error")
                return
            if not ws.open:
                return

    def _send_message(self, topic, msg_id, data) -> None:
        self.ws.send(envelope(topic, msg_id, data))

    def _gap(self, topic, lost) -> None:
        self.ws.send(dumps({"type": "gap", "topic": topic, "lost": lost}))

    async def _resume_one(self, topic, since) -> None:
        ws = self.ws
        try:
            result = await _history(ws).resume(ws, topic, since, self._send_message, self._gap)
        except Forbidden:
            if ws.open:
                ws.send(_forbidden(topic))
            return
        except BrokerUnavailable:
            if ws.open:
                ws.send(dumps({"type": "error", "code": "unavailable", "topic": topic,
                               "error": "the message broker is unavailable; try again later"}))
            return
        except BrokerError as exc:
            if ws.open:
                ws.send(dumps({"type": "error", "code": "bad_request", "topic": topic, "error": str(exc)}))
            return
        if ws.open:
            ws.send(dumps({"type": "subscribed", "topic": topic, "replayed": result.replayed,
                           "last": result.last}))

    def on_message(self, data) -> None:
        msg = self.decode(data)
        if msg is None:
            return
        kind = msg["type"]
        if kind == "refresh":
            self._refresh(msg.get("token"))
            return
        if kind not in ("subscribe", "unsubscribe"):
            self.refuse("unknown_type", f"unknown message type {kind[:40]!r}")
            return
        presence = msg.get("presence", False)
        if not isinstance(presence, bool):
            self.refuse("bad_request", "presence must be true or false")
            return
        if presence and kind != "subscribe":
            self.refuse("bad_request", "presence goes with subscribe")
            return
        if presence and not self.presence:
            self.refuse("no_presence", "this server sends no presence events (fastws push --presence)")
            return
        if "topic" in msg or "topics" not in msg:
            self._one(kind, msg.get("topic"), msg.get("since"), presence)
            return
        topics = msg["topics"]  # {"type": "subscribe", "topics": [...]}: each answered
        if not isinstance(topics, list) or not 1 <= len(topics) <= MAX_TOPICS or "since" in msg:
            self.refuse("bad_request", f"topics must be a list of 1-{MAX_TOPICS} topics (since: one topic only)")
            return
        for topic in topics:
            if not self.ws.open:
                return
            self._one(kind, topic, None, presence)

    def _one(self, kind: str, topic, since, presence: bool = False) -> None:
        ws = self.ws
        if not valid_topic(topic):
            self.refuse("bad_topic", "topic must be 1-128 characters of A-Z a-z 0-9 . _ : -")
            return
        if kind == "subscribe":
            if topic not in ws.topics and len(ws.topics) >= MAX_TOPICS:
                self.refuse("too_many_topics", f"at most {MAX_TOPICS} topics per connection")
                return
            if since is not None:
                if presence:
                    self.refuse("bad_request", "since and presence: one or the other in a subscribe")
                    return
                if not valid_since(since):
                    self.refuse("bad_request", "since must be a message id (a whole number >= 0)")
                    return
                if _history(ws) is None:
                    self.refuse("no_history", "this server keeps no history (fastws push --redis URL --history N)")
                    return
                if not ws.may(topic, "subscribe"):
                    self._refuse_topic(topic)
                    return
                self.errors = 0
                _spawn(self._resume_one(topic, since))
                return
            was = topic in ws.topics
            try:
                ws.subscribe(topic)
            except Forbidden:
                self._refuse_topic(topic)
                return
            if presence:
                try:
                    ws.server.watch_presence(ws, topic)
                except BrokerError as exc:  # a broker without presence=True: not subscribed either
                    if not was:
                        ws.unsubscribe(topic)
                    self.refuse("no_presence", str(exc))
                    return
            reply = "subscribed"
        else:
            ws.server.unwatch_presence(ws, topic)
            ws.unsubscribe(topic)
            reply = "unsubscribed"
        self.errors = 0
        ws.send(dumps({"type": reply, "topic": topic}))

    def _refuse_topic(self, topic: str) -> None:
        """A refused subscription: an error message, counted as a refused
        request (MAX_ERRORS in a row close with 1008)."""
        self.errors += 1
        ws = self.ws
        if self.errors >= MAX_ERRORS:
            ws.close(CLOSE_POLICY_VIOLATION, "too many bad requests")
        elif ws.open:
            ws.send(_forbidden(topic))

    # ------------------------------------------------------------ token refresh
    def _refresh(self, token) -> None:
        auth = self.ws.server.authenticate
        if getattr(auth, "verify", None) is None or not isinstance(self.ws.user, dict):
            self.refuse("bad_request", "this server takes no tokens (no JWT configured)")
            return
        if not isinstance(token, str) or not token:
            self.refuse("bad_request", 'refresh needs "token": a JWT')
            return
        _spawn(self._verify_refresh(auth, token))

    async def _verify_refresh(self, auth, token: str) -> None:
        ws = self.ws
        try:
            claims = await auth.verify(token)
        except InvalidRequest as exc:
            if ws.open:
                ws.send(dumps({"type": "error", "code": "bad_token", "error": _description(exc)}))
            return
        old = ws.user
        if not ws.open or not isinstance(old, dict):
            return
        if claims.get("sub") != old.get("sub"):
            ws.send(dumps({"type": "error", "code": "bad_token",
                           "error": "the new token is for another subject (sub)"}))
            return
        server = ws.server
        server.set_user(ws, claims)
        self.errors = 0
        ws.send(dumps({"type": "refreshed", "exp": claims.get("exp")}))
        if server.authorize is not None:
            for topic in sorted(ws.topics):  # what the new token no longer allows
                if not ws.may(topic, "subscribe"):
                    ws.unsubscribe(topic)
                    ws.send(dumps({"type": "unsubscribed", "topic": topic, "reason": "forbidden"}))


def _description(exc: InvalidRequest) -> str:
    """The fixed phrase of a JWTAuth refusal (``token expired``, ...)."""
    for name, value in exc.headers:
        if name.lower() == "www-authenticate" and 'error_description="' in value:
            return value.split('error_description="', 1)[1].rstrip('"')
    return "invalid token"


def _text(status: int, reason: str, body: str, headers=()) -> Response:
    return Response(status, reason, list(headers), body.encode("utf-8"))


def _json(status: int, reason: str, obj, headers=()) -> Response:
    return Response(status, reason, [("Content-Type", "application/json"), *headers],
                    (dumps(obj) + "\n").encode("utf-8"))


class PushService:
    """The HTTP side of the push service; it publishes through the ``Server``
    given to ``attach`` (``fastws.run(..., on_server=service.attach)``)."""

    __slots__ = ("server", "_token", "max_body", "origins", "auth", "presence")

    def __init__(self, token: str | None = None, max_body: int = MAX_BODY, origins=None, auth=None,
                 presence: bool = False):
        if token is not None:
            if not isinstance(token, str) or not token or not all(0x21 <= ord(c) <= 0x7E for c in token):
                raise ConfigError("token must be a non-empty string of printable ASCII without spaces")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or not 1 <= max_body <= MAX_BODY:
            raise ConfigError(f"the largest publish body (max_body, --max-size) must be 1..{MAX_BODY} "
                              f"bytes, the HTTP request reader's limit; got {max_body!r}")
        if auth is not None and not callable(getattr(auth, "verify", None)):
            raise ConfigError("auth must be a fastws.auth.JWTAuth (or have async verify(token) and allowed())")
        self.auth = auth  # JWTAuth: POST /publish takes a JWT whose pubs claim allows the topic
        self.presence = bool(presence)  # GET /presence/<topic>, presence events
        self.server = None
        self._token = token.encode("ascii") if token is not None else None
        self.max_body = max_body
        try:
            self.origins = OriginPolicy(origins)  # a foreign Origin: 403 on /ws and /publish
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"origins: {exc}") from None

    def attach(self, server) -> None:
        self.server = server

    def _authorized(self, request) -> bool:
        if self._token is None:
            return self.auth is None
        scheme, _, credentials = (request.headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time, so the token cannot be guessed byte by byte from timings.
        return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogatepass"), self._token)

    async def _publish_with_jwt(self, request, topic: str) -> Response:
        """A publish under JWT: 401 without a valid bearer JWT, 403 unless
        its publish claim (``pubs``) allows the topic."""
        refused = await self._jwt_allows(request, topic, "publish")
        if refused is not None:
            return refused
        result = self._publish(topic, request.body)
        return result if isinstance(result, Response) else await result

    def process_request(self, request):
        path, _ = _split_target(request.path)
        if path != WS_PATH:
            return _text(404, "Not Found", f"no WebSocket here; connect to {WS_PATH}?topics=...\n")
        if not self.origins.allows(request):
            return _text(403, "Forbidden", "cross-origin WebSocket refused\n")
        if query_topics(request.path) is None:
            return _text(400, "Bad Request",
                         f"topics: at most {MAX_TOPICS}, each 1-128 characters of A-Z a-z 0-9 . _ : -\n")
        since = query_since(request.path)
        if since is False:
            return _text(400, "Bad Request", "since must be a message id (a whole number >= 0)\n")
        if since is not None:
            broker = getattr(self.server, "broker", None)
            if broker is None or not getattr(broker, "history_size", 0):
                return _text(400, "Bad Request", "since needs history: fastws push --redis URL --history N\n")
        return None

    def http_handler(self, request):
        path, _ = _split_target(request.path)
        if path == "/healthz":
            if request.method != "GET":
                return _text(405, "Method Not Allowed", "GET only\n", [("Allow", "GET")])
            return _text(200, "OK", "ok\n")
        if path.startswith(PRESENCE_PREFIX) and self.presence:
            return self._presence(request, path)
        if not path.startswith(PUBLISH_PREFIX):
            return _text(404, "Not Found", "not found\n")
        if request.method != "POST":
            return _text(405, "Method Not Allowed", "POST only\n", [("Allow", "POST")])
        # Before the token: a web page elsewhere can POST text/plain here
        # without a preflight; with a foreign Origin nothing is published.
        if not self.origins.allows(request):
            return _text(403, "Forbidden", "cross-origin publish refused\n")
        shared = self._authorized(request)  # the shared --token (or no authentication at all)
        if not shared and self.auth is None:
            return _text(401, "Unauthorized", "a valid bearer token is required\n",
                         [("WWW-Authenticate", 'Bearer realm="fastws push"')])
        topic = unquote(path[len(PUBLISH_PREFIX):], errors="replace")  # U+FFFD is no topic character
        if not valid_topic(topic):
            return _text(400, "Bad Request", "topic must be 1-128 characters of A-Z a-z 0-9 . _ : -\n")
        if not shared:
            return self._publish_with_jwt(request, topic)
        return self._publish(topic, request.body)

    def _presence(self, request, path: str):
        """``GET /presence/<topic>[?limit=N]``: the topic's subscribers on
        every process, behind the publish token (or a JWT allowed to
        subscribe to the topic)."""
        if request.method != "GET":
            return _text(405, "Method Not Allowed", "GET only\n", [("Allow", "GET")])
        if not self.origins.allows(request):
            return _text(403, "Forbidden", "cross-origin request refused\n")
        topic = unquote(path[len(PRESENCE_PREFIX):], errors="replace")
        shared = self._authorized(request)
        if not shared and self.auth is None:
            return _text(401, "Unauthorized", "a valid bearer token is required\n",
                         [("WWW-Authenticate", 'Bearer realm="fastws push"')])
        if not valid_topic(topic):
            return _text(400, "Bad Request", "topic must be 1-128 characters of A-Z a-z 0-9 . _ : -\n")
        _, query = _split_target(request.path)
        values = parse_qs(query, keep_blank_values=True).get("limit", ["1000"])
        if len(values) != 1 or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 5 \
                or int(values[0]) > MAX_MEMBERS:
            return _text(400, "Bad Request", f"limit must be a whole number 0..{MAX_MEMBERS}\n")
        return self._read_presence(request, topic, int(values[0]), shared)

    async def _read_presence(self, request, topic: str, limit: int, shared: bool) -> Response:
        if not shared:
            refused = await self._jwt_allows(request, topic, "subscribe")
            if refused is not None:
                return refused
        try:
            result = await self.server.presence(topic, limit)
        except BrokerUnavailable as exc:
            logger.debug("presence of %r: %s", topic, exc)
            return _json(503, "Service Unavailable", {"error": "the message broker is unavailable"},
                         [("Retry-After", "1")])
        except BrokerError as exc:
            logger.error("presence of %r failed: %s", topic, exc)
            return _json(502, "Bad Gateway", {"error": "the message broker refused the request"})
        return _json(200, "OK", {"topic": topic, "total": result.total,
                                 "members": [{"id": m.id, "user": m.user} for m in result.members]})

    async def _jwt_allows(self, request, topic: str, action: str):
        """None if the request's bearer JWT allows ``action`` on ``topic``,
        else the refusal (401, 400 or 403)."""
        auth = self.auth
        tokens = [value.strip().partition(" ")[2].strip(" \t")
                  for value in request.headers.get_all("authorization")
                  if value.strip().partition(" ")[0].lower() == "bearer"]
        if not tokens or not tokens[0]:
            return _text(401, "Unauthorized", "a valid bearer token is required\n",
                         [("WWW-Authenticate", f'Bearer realm="{auth.realm}"')])
        if len(set(tokens)) > 1:
            return _text(400, "Bad Request", "several bearer tokens\n")
        try:
            claims = await auth.verify(tokens[0])
        except InvalidRequest as exc:
            return Response(exc.status, exc.reason, exc.headers, f"{exc.body}\n".encode("utf-8"))
        if not auth.allowed(claims, topic, action):
            return _text(403, "Forbidden", f"this token may not {action} to this topic\n",
                         [("WWW-Authenticate", f'Bearer realm="{auth.realm}", error="insufficient_scope", '
                                               'error_description="topic not allowed"')])
        return None

    def _publish(self, topic: str, body):
        if len(body) > self.max_body:
            return _text(413, "Content Too Large", f"body over {self.max_body} bytes\n")
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            data = bytes(body)
        server = self.server
        if server is not None and server.broker is not None:
            return self._publish_via_broker(server.broker, topic, data)
        delivered = server.publish(topic, data) if server is not None else 0
        return _json(200, "OK", {"delivered": delivered})

    async def _publish_via_broker(self, broker, topic, data) -> Response:
        try:
            published = await broker.publish(topic, data)
        except BrokerUnavailable as exc:
            logger.debug("publish to %r refused: %s", topic, exc)  # the broker logged the outage once
            return _json(503, "Service Unavailable", {"error": "the message broker is unavailable; "
                                                      "the message was not published"},
                         [("Retry-After", "1")])
        except NotReplicated as exc:
            logger.warning("publish to %r: %s", topic, exc)
            return _json(504, "Gateway Timeout", {"error": "published, but no replica confirmed it in time: a "
                                                  "failover now could lose it", "id": exc.published.id,
                                                  "processes": exc.published.processes})
        except BrokerError as exc:
            logger.error("publish to %r failed: %s", topic, exc)
            return _json(502, "Bad Gateway", {"error": "the message broker refused the message"})
        return _json(200, "OK", {"id": published.id, "processes": published.processes})


def push_app(token: str | None = None, max_body: int = MAX_BODY, origins=None, auth=None,
             refresh_grace: float | None = 30.0, presence: bool = False):
    """``(service, options)``: ``options`` are the keyword arguments of
    ``fastws.serve``/``fastws.run`` (``app``, ``process_request``,
    ``http_handler``, ``max_size`` for what subscribers send); give the
    started server to ``service.attach`` (``fastws.run(..., on_server=service.attach)``).
    ``origins``: pages allowed to subscribe and publish besides the same
    origin (``["*"]``: any); a foreign ``Origin`` gets 403.

    ``auth``: a ``fastws.auth.JWTAuth`` (build it with ``topics_param=None``,
    so a refused ``?topics=`` is an error message, not a 403): it is the
    server's ``authenticate``, its ``subs``/``pubs`` claims decide who
    subscribes and publishes, and an expiring token is refreshed in the push
    protocol within ``refresh_grace`` seconds (else close 4001).

    ``presence``: serve ``GET /presence/<topic>`` and send join/leave events
    to subscribers that ask (``"presence": true`` in a subscribe); across
    processes with a ``RedisBroker(..., presence=True)``."""
    service = PushService(token, max_body, origins, auth, presence)
    app = type("PushListener", (PushListener,), {"__slots__": (), "presence": True}) if presence else PushListener
    options = {"app": app, "process_request": service.process_request,
               "http_handler": service.http_handler, "max_size": CLIENT_MAX_SIZE}
    if auth is not None:
        options.update(authenticate=auth, on_token_expired=ask_refresh, token_refresh_grace=refresh_grace)
    return service, options
