"""The one exception tree of fastws.

``FastWSError`` is the root: ``InvalidURI`` > ``InvalidProxy``, ``HandshakeError``
(``InvalidRequest``, ``InvalidResponse`` > ``InvalidStatus``, ``ProxyError``),
``ProtocolError`` (``FrameError`` 1002, ``InvalidUTF8`` 1007, ``MessageTooBig``
1009), ``ConnectionClosed`` (``ConnectionClosedOK``, ``ConnectionClosedError``),
``BrokerError`` > ``BrokerUnavailable``, ``Forbidden`` (also a
PermissionError: the ``authorize`` hook said no) and ``ConfigError`` (also a
ValueError). Protocol errors are raised by the frame parser (the extension
and its twin raise exactly these classes) and turned into a close frame by
the connection: they never reach the event loop. ``.reason`` is short and
safe to send to the peer. The drawn tree, with what each class means, is on
the docs page.
See docs/guide/handler-api.md#errors.
"""

from __future__ import annotations

from typing import Any, Iterable

# RFC 6455 7.4.1 close codes, defined in fastws.constants (re-exported here
# and by the package, as fastws.CLOSE_NORMAL and so on).
from .constants import (
    CLOSE_ABNORMAL,
    CLOSE_BAD_GATEWAY,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_MANDATORY_EXTENSION,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNSUPPORTED_DATA,
)

__all__ = [
    "FastWSError",
    "InvalidURI",
    "InvalidProxy",
    "HandshakeError",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidStatus",
    "ProxyError",
    "ProtocolError",
    "FrameError",
    "InvalidUTF8",
    "MessageTooBig",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "ConfigError",
    "BrokerError",
    "BrokerUnavailable",
    "NotReplicated",
    "Forbidden",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_MANDATORY_EXTENSION",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TRY_AGAIN_LATER",
    "is_valid_close_code",
]


def is_valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: may this code appear in a close frame on the wire?

    1000-1003 and 1007-1014 are defined; 1004, 1005, 1006 and 1015 are reserved
    and MUST NOT be sent; 3000-4999 are for libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FastWSError(Exception):
    """Base class of every exception fastws raises on purpose."""


class ConfigError(FastWSError, ValueError):
    """An option is out of range or malformed (raised at start-up)."""


class InvalidURI(FastWSError, ValueError):
    """fastws.connect() was given a URL that is not ws:// or wss://."""


class InvalidProxy(InvalidURI):
    """A client was given a proxy URL it cannot use (``proxy=`` or the
    environment's ``HTTPS_PROXY``/``ALL_PROXY``/...): a scheme other than
    http, socks5, socks5h, socks4, socks4a; no host; a bad port; a path; a
    user without a password."""


class HandshakeError(FastWSError):
    """The opening handshake failed."""


class InvalidRequest(HandshakeError):
    """The server refuses an HTTP request: answer with ``status`` and close.

    ``headers`` is a list of extra ``(name, value)`` response headers (for
    example ``Sec-WebSocket-Version: 13`` with 426); ``body`` is the response
    body sent to the client (plain text, no internals).
    """

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = (),
                 body: str | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        self.body = reason if body is None else body


class InvalidResponse(HandshakeError):
    """The client got something other than a valid 101 Switching Protocols."""


class InvalidStatus(InvalidResponse):
    """The server answered the upgrade with a status other than 101."""

    def __init__(self, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status}")
        self.status = status
        self.headers = list(headers)
        self.body = body


class ProxyError(HandshakeError):
    """The proxy did not open the tunnel to the server: it answered CONNECT
    with a status other than 2xx (``status``; 407: it wants credentials or
    refused them), a SOCKS proxy refused (``code``: the SOCKS reply code, if
    any), or it ended the connection or broke its protocol before the tunnel
    was open. ``transient``: whether a reconnecting client tries again (a 5xx
    or 429 from the proxy, a SOCKS "connection refused" / "host
    unreachable", a proxy that closed early: yes; 407, 403, a bad answer:
    no). A proxy that cannot be reached raises the OSError of the connect."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class ProtocolError(FastWSError):
    """The peer violated RFC 6455; ``code`` is the close code to answer with."""

    code = CLOSE_PROTOCOL_ERROR

    def __init__(self, reason: str = "protocol error", code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class FrameError(ProtocolError):
    """A framing rule of RFC 6455 section 5 was broken (close code 1002)."""

    code = CLOSE_PROTOCOL_ERROR


class InvalidUTF8(ProtocolError):
    """A text message or a close reason is not valid UTF-8 (close code 1007)."""

    code = CLOSE_INVALID_DATA


class MessageTooBig(ProtocolError):
    """A message is larger than max_size (close code 1009)."""

    code = CLOSE_MESSAGE_TOO_BIG


class ConnectionClosed(FastWSError):
    """The connection is closed: no more messages can be sent or received.

    ``code``/``reason`` are those of the close frame received from the peer
    (1006 and "" when the TCP connection ended without one); ``sent_code`` is
    the code fastws sent, if any.
    """

    def __init__(self, code: int = CLOSE_ABNORMAL, reason: str = "", sent_code: int | None = None):
        self.code = code
        self.reason = reason
        self.sent_code = sent_code
        text = f"connection closed: {code}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or without a close frame."""


class BrokerError(FastWSError):
    """The pub/sub broker (fastws.broker) could not do what was asked."""


class BrokerUnavailable(BrokerError):
    """The broker is not connected to Redis: the publish (or history read) was
    not accepted and nothing was sent; the caller may retry later. An HTTP
    front end answers 503 (``fastws push`` does)."""


class NotReplicated(BrokerError):
    """The message was published (``published``: its ``Published``) but fewer
    than ``wanted`` replicas (``acked``) confirmed it within the broker's
    ``wait_timeout``: if its master fails now, the message may be lost.
    Raised only with ``RedisBroker(..., wait_replicas=N)``; do not simply
    retry (that would publish it twice). ``fastws push`` answers 504."""

    def __init__(self, published: Any, acked: int, wanted: int, timeout: float) -> None:
        super().__init__(f"message {published[0]} was published but only {acked} of {wanted} replicas "
                         f"confirmed it within {timeout} s")
        self.published = published
        self.acked = acked
        self.wanted = wanted


class Forbidden(FastWSError, PermissionError):
    """The server's ``authorize`` hook refused an action on a topic
    (``ws.subscribe``, ``server.publish_as``); ``topic`` and ``action``
    (``"subscribe"`` or ``"publish"``) say which. Also a PermissionError."""

    def __init__(self, topic: str, action: str):
        super().__init__(f"{action} to topic {topic!r} not allowed")
        self.topic = topic
        self.action = action


def connection_closed(code: int, reason: str = "", sent_code: int | None = None) -> ConnectionClosed:
    """The right ConnectionClosed subclass for a close code."""
    cls = ConnectionClosedOK if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) else ConnectionClosedError
    return cls(code, reason, sent_code)
