"""The WebSocket opening handshake (RFC 6455 section 4), sans-I/O.

Bytes go in, objects and bytes come out: nothing here touches a socket, a
clock other than the ``Date`` header, or asyncio. Server side:
``RequestReader`` + ``check_request`` + ``accept_response``/``error_response``
(the general way, which decides and refuses) and ``upgrade_reader()`` (the
fast path for a whole valid head in the first read, which only ever says
"taken" or "not mine"). Client side: ``make_key``, ``build_request``,
``ResponseReader``, ``check_response``. The same rules hold on every path;
the tests compare each short cut with the general way.
See docs/design/handshake.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from urllib.parse import urlsplit

from . import deflate
from .codec import UpgradeReader
from .codec import accept_101 as _accept_101
from .exceptions import ConfigError, InvalidRequest, InvalidResponse, InvalidStatus, InvalidURI
from .http import (
    BAD_VALUE,
    FIELD_CONNECTION,
    FIELD_CONTENT_LENGTH,
    FIELD_HOST,
    FIELD_KEY,
    FIELD_ORIGIN,
    FIELD_PROTOCOL,
    FIELD_TRANSFER_ENCODING,
    FIELD_UPGRADE,
    FIELD_VERSION,
    SERVER,
    TARGET,
    TOKEN,
    Headers,
    Request,
    Response,
    check_field,
    check_value,
    has_token,
    http_date,
    lists_token,
    phrase,
    tokens,
    upgrade_fields,
)

__all__ = [
    "GUID",
    "parse_uri",
    "accept_key",
    "is_upgrade_request",
    "check_request",
    "accept_response",
    "error_response",
    "make_key",
    "build_request",
    "check_response",
    "upgrade_reader",
    "read_upgrade",
    "quick_request",
    "accept_101",
    "negotiate_deflate",
    "response_deflate",
    "HostAllowlist",
    "allowed_hosts_option",
]

#: RFC 6455 1.3 / 4.2.2: the GUID appended to Sec-WebSocket-Key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------
# Server side: RFC 6455 4.2
# --------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """RFC 6455 4.2.2 item 5.4: "The value of this header field is constructed
    by concatenating /key/ [...] with the string
    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", taking the SHA-1 hash of this
    concatenated value to obtain a 20-byte value and base64-encoding [...]
    this 20-byte hash."
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def is_upgrade_request(request) -> bool:
    """Whether the request asks for a WebSocket: an ``Upgrade`` field listing
    the token ``websocket`` (ASCII case-insensitive; comma lists and several
    field lines allowed). Anything else is plain HTTP."""
    return lists_token(upgrade_fields(request)[FIELD_UPGRADE], "websocket")




_UPGRADE_HEADERS = (("Upgrade", "websocket"), ("Connection", "Upgrade"))
_ONLY_13 = ["13"]


# --------------------------------------------------------------------------
# The server's short cut: the whole head of a valid upgrade in the first read
# --------------------------------------------------------------------------


def upgrade_reader():
    """A new ``UpgradeReader`` (fastws_ext.upgrade, twin fastws._py.upgrade):
    ``.read(data, max_head, max_headers)`` is ``read_upgrade`` keeping one
    llhttp parser from head to head, ``.accept(key)`` is ``accept_101(key)``.
    One per server (one event loop; not shared between threads)."""
    return UpgradeReader(_switching_head_bytes)


def read_upgrade(data: bytes, max_head: int = 8192, max_headers: int = 100):
    """The server's short cut for what it mostly sees: the first read holds
    the whole head of a valid WebSocket upgrade request (maybe with frames
    behind it).

    Returns ``(path, packed, key, leftover)`` when llhttp parsed the head as
    an upgrade and every check of ``check_request`` before the origin policy
    passes on it (GET, HTTP/1.1, one non-empty Host, Upgrade: websocket,
    Connection listing upgrade, Sec-WebSocket-Version: 13, one valid
    Sec-WebSocket-Key, no Content-Length or Transfer-Encoding), each checked
    field on one field line: ``path`` is the request target (str),
    ``packed`` the field lines as received (what ``Headers.pack()`` gives),
    ``key`` the Sec-WebSocket-Key (bytes) and ``leftover`` the bytes behind
    the head. ``quick_request(path, packed)`` is then the request
    ``RequestReader(max_head, max_headers).feed(data)`` returns. Returns
    None for anything else (a partial head, plain HTTP, an error, a checked
    field line repeated, an unusual spelling): the general way
    (``RequestReader``, ``check_request``) then reads the same bytes and
    decides, so nothing is refused here and the results never differ.

    llhttp still parses and validates the whole head; what is saved is a
    Python call and a ``bytes`` object per field line, the ``Request`` and
    the checks' Python work (see ``UpgradeReader``, which a server keeps to
    reuse its parser).
    """
    return UpgradeReader().read(data, max_head, max_headers)


def quick_request(path: str, packed: bytes | int) -> Request:
    """The ``Request`` of a head ``read_upgrade`` took, from its ``path``
    and ``packed`` field lines: what the general way's ``RequestReader``
    gives for the same bytes (GET, HTTP/1.1, no body; the headers decoded
    on first use). Made only when a hook or the access log needs it."""
    return Request("GET", path, Headers.unpack(packed))


def accept_101(key: bytes) -> bytes:
    """``accept_response(check_request(...)[1])`` for a request without a
    subprotocol, from the Sec-WebSocket-Key ``read_upgrade`` returned (24
    bytes). The server's ``UpgradeReader.accept`` answers the same."""
    return _accept_101(key, _switching_head_bytes())


def check_request(request, *, origins=None, subprotocols=None, allowed_hosts=None):
    """Validate a WebSocket upgrade request (RFC 6455 4.2.1).

    Returns ``(subprotocol or None, headers of the 101 response)``; the
    headers hold ``Sec-WebSocket-Accept`` and, when one was selected,
    ``Sec-WebSocket-Protocol``. Raises ``InvalidRequest`` with the status and
    headers to refuse with, checking in this order:

    ====  =====================================================================
    405   method not GET (``Allow: GET``)
    400   HTTP version below 1.1; 505 for HTTP/2 and above on an HTTP/1 wire
    400   no ``Host``, or several; or one outside ``allowed_hosts``
    426   ``Upgrade`` without the token ``websocket`` (``Upgrade: websocket``,
          ``Connection: Upgrade``)
    400   ``Connection`` without the token ``upgrade``
    426   ``Sec-WebSocket-Version`` not exactly ``13`` (``Sec-WebSocket-Version:
          13``, ``Upgrade: websocket``, ``Connection: Upgrade``)
    400   ``Sec-WebSocket-Key`` missing, several, or not base64 of 16 bytes
    400   a request body (``Content-Length`` other than 0, ``Transfer-Encoding``)
    403   origin refused by ``origins``
    ====  =====================================================================

    ``origins``: None allows any origin; a list/tuple/set/frozenset of allowed
    serialized origins, compared ASCII case-insensitively, where an entry
    ``None`` admits requests without ``Origin`` (otherwise they are refused);
    or a callable ``(origin or None) -> bool``. A request with several
    ``Origin`` lines is refused whenever a policy is set.

    ``allowed_hosts``: None (any Host) or a ``HostAllowlist``.

    ``subprotocols``: the server's, in order of preference. The first one the
    client offered is selected; none in common selects None (the handshake
    still succeeds, as RFC 6455 4.2.2 allows: the server may refuse itself).
    """
    # Every rule reads the handful of fields Headers._fields() collected in
    # one pass over the field lines (values decoded and OWS-stripped, one
    # list entry per field line), in the order of the table above.

    # RFC 6455 4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if request.method != "GET":
        raise InvalidRequest(405, "Method Not Allowed", [("Allow", "GET")])
    if request.version != "1.1":
        _check_version(request.version)
    fields = upgrade_fields(request)

    # RFC 6455 4.2.1 item 2: "A |Host| header field containing the server's
    # authority." RFC 9112 3.2: a server MUST respond with 400 to a request
    # lacking Host or with more than one Host field line.
    hosts = fields[FIELD_HOST]
    if hosts is None or len(hosts) != 1 or not hosts[0]:
        raise InvalidRequest(400, "Bad Request", body="Missing or duplicate Host header")
    if allowed_hosts is not None and not allowed_hosts.allows(hosts[0]):
        raise allowed_hosts.refusal()

    # RFC 6455 4.2.1 item 3: "An |Upgrade| header field containing the value
    # "websocket", treated as an ASCII case-insensitive value."
    # RFC 9110 15.5.22: a server MUST send an Upgrade header field in a 426.
    if not lists_token(fields[FIELD_UPGRADE], "websocket"):
        raise InvalidRequest(
            426, "Upgrade Required", _UPGRADE_HEADERS,
            body="This service requires use of the WebSocket protocol",
        )

    # RFC 6455 4.2.1 item 4: "A |Connection| header field that includes the
    # token "Upgrade", treated as an ASCII case-insensitive value."
    if not lists_token(fields[FIELD_CONNECTION], "upgrade"):
        raise InvalidRequest(400, "Bad Request", body="Missing Connection: upgrade")

    # RFC 6455 4.2.1 item 6: "A |Sec-WebSocket-Version| header field, with a
    # value of 13." 4.2.2: "If this version does not match a version
    # understood by the server, the server MUST abort the WebSocket handshake
    # [...] and instead send an appropriate HTTP error code (such as 426
    # Upgrade Required) and a |Sec-WebSocket-Version| header field indicating
    # the version(s) the server is capable of understanding."
    if fields[FIELD_VERSION] != _ONLY_13:
        raise InvalidRequest(
            426, "Upgrade Required",
            [("Sec-WebSocket-Version", "13"), *_UPGRADE_HEADERS],
            body="Unsupported WebSocket version",
        )

    # RFC 6455 4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a
    # base64-encoded [...] value that, when decoded, is 16 bytes in length."
    keys = fields[FIELD_KEY]
    if keys is None or len(keys) != 1 or not _valid_key(keys[0]):
        raise InvalidRequest(400, "Bad Request", body="Invalid Sec-WebSocket-Key")
    key = keys[0]

    # Not RFC 6455 but RFC 9112 6.3 / 9110 9.3.1: the server switches
    # protocols right after the head, so a declared body would be read as
    # frames (and a proxy that framed it differently could be desynchronized).
    lengths = fields[FIELD_CONTENT_LENGTH]
    if (lengths is not None and lengths[0] != "0") or fields[FIELD_TRANSFER_ENCODING] is not None:
        raise InvalidRequest(400, "Bad Request", body="Unexpected request body")

    # RFC 6455 4.2.1 item 7 / 4.2.2 /origin/: "If the server does not wish to
    # accept this connection, it MUST return an appropriate HTTP error code
    # (e.g., 403 Forbidden) and abort the WebSocket handshake".
    if origins is not None and not _origin_allowed(fields[FIELD_ORIGIN] or [], origins):
        raise InvalidRequest(403, "Forbidden", body="Forbidden origin")

    response_headers = [("Sec-WebSocket-Accept", accept_key(key))]

    # RFC 6455 4.2.2 /subprotocol/: "The value chosen MUST be derived from the
    # client's handshake [...] if the server does not wish to agree to one of
    # the suggested subprotocols, it MUST NOT send back a
    # |Sec-WebSocket-Protocol| header field in its response."
    subprotocol = None
    if subprotocols:
        offered = tokens(fields[FIELD_PROTOCOL] or ())
        if offered:
            for candidate in subprotocols:
                if candidate in offered:
                    subprotocol = candidate
                    response_headers.append(("Sec-WebSocket-Protocol", candidate))
                    break
    return subprotocol, response_headers


def _check_version(version: str) -> None:
    """Refuse an HTTP version other than 1.1 unless it is a later 1.x."""
    major, _, minor = version.partition(".")
    try:
        parsed = (int(major), int(minor or 0))
    except ValueError:
        raise InvalidRequest(400, "Bad Request", body="Invalid HTTP version") from None
    if parsed < (1, 1):
        raise InvalidRequest(400, "Bad Request", body="HTTP/1.1 required")
    if parsed[0] > 1:
        # RFC 9112 2.3: 505 for a major version the server does not support.
        raise InvalidRequest(505, "HTTP Version Not Supported")


def _valid_key(key: str) -> bool:
    if len(key) != 24:  # base64 of 16 bytes, padded
        return False
    try:
        # What base64.b64decode(key, validate=True) does, without its wrapper.
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return False


def _origin_allowed(values: list, origins) -> bool:
    if len(values) > 1:
        return False
    origin = values[0] if values else None
    if callable(origins):
        return bool(origins(origin))
    if isinstance(origins, (str, bytes)):
        raise ConfigError("origins must be a list of origins or a callable, not a string")
    if origin is None:
        return None in origins
    origin = origin.lower()
    return any(o is not None and o.lower() == origin for o in origins)


# Host allowlist (DNS rebinding): Django's ALLOWED_HOSTS rules.

# A host name (letters, digits, "-", ".", "_") or a bracketed IPv6 literal,
# then an optional port: what a Host field may hold once lower-cased.
_HOST_RE = re.compile(r"([a-z0-9_.-]+|\[[a-f0-9:.]+\])(?::([0-9]{1,5}))?")
_ENTRY_RE = re.compile(r"(\*\.|\.)?([a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[a-f0-9:.]+\])")


def _split_host(value: str):
    """The host part of a Host field value, lower-cased, without the port and
    a trailing dot; None if it is no host name or IP literal."""
    match = _HOST_RE.fullmatch(value.strip().lower())
    if match is None:
        return None
    host = match.group(1)
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


class HostAllowlist:
    """The ``Host`` values a server answers (``allowed_hosts``), so that a web
    page on an attacker's domain that re-resolves to this server (DNS
    rebinding) gets 400. Entries, compared case-insensitively and without the
    port: ``"example.com"`` exactly, ``".example.com"`` that domain and every
    subdomain, ``"*.example.com"`` its subdomains only, ``"[::1]"`` an IPv6
    literal, ``"*"`` any host. See docs/guide/cli.md."""

    __slots__ = ("entries", "_any", "_exact", "_suffixes")

    def __init__(self, hosts):
        if isinstance(hosts, (str, bytes)):
            raise ConfigError("allowed_hosts must be a list of host names, not a single string")
        try:
            entries = list(hosts)
        except TypeError:
            raise ConfigError(f"allowed_hosts must be a list of host names, got {hosts!r}") from None
        if not entries:
            raise ConfigError("allowed_hosts is empty: no request could be answered "
                              "(None allows any host, [\"*\"] says so explicitly)")
        self.entries = tuple(entries)
        self._any = False
        exact, suffixes = set(), []
        for entry in entries:
            if not isinstance(entry, str):
                raise ConfigError(f"allowed_hosts entries must be strings, got {entry!r}")
            text = entry.strip().lower()
            if text == "*":
                self._any = True
                continue
            text = text[:-1] if text.endswith(".") else text
            match = _ENTRY_RE.fullmatch(text)
            if match is None:
                raise ConfigError(f"allowed_hosts: {entry!r} is not a host name (no port, no scheme), "
                                  f"'.example.com', '*.example.com', '[::1]' or '*'")
            wildcard, name = match.groups()
            if wildcard is None:
                exact.add(name)
            else:
                if name.startswith("["):
                    raise ConfigError(f"allowed_hosts: {entry!r}: an IP address has no subdomains")
                suffixes.append("." + name)
                if wildcard == ".":
                    exact.add(name)
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)

    def allows(self, value) -> bool:
        """Whether a ``Host`` field value (port allowed) is one of the entries."""
        if self._any:
            return True
        if not value:
            return False
        host = _split_host(value)
        if host is None:
            return False
        return host in self._exact or (bool(self._suffixes) and host.endswith(self._suffixes))

    @staticmethod
    def refusal() -> InvalidRequest:
        return InvalidRequest(400, "Bad Request", body="Host not allowed")

    def __repr__(self):
        return f"HostAllowlist({list(self.entries)!r})"


def allowed_hosts_option(value):
    """The server option ``allowed_hosts``: None (any host) or a list of
    entries, validated once at start-up into a ``HostAllowlist``."""
    if value is None or isinstance(value, HostAllowlist):
        return value
    return HostAllowlist(value)


def accept_response(headers_101, extra_headers=()) -> bytes:
    """The ``101 Switching Protocols`` response (RFC 6455 4.2.2 items 1-3:
    status 101, ``Upgrade: websocket``, ``Connection: Upgrade``) with
    ``headers_101`` from ``check_request`` and the application's
    ``extra_headers``. Upgrade/Connection in the given headers are ignored.

    The bytes are those of ``Response(101, ...).to_bytes()``, with the same
    refusal (ValueError) of a header name that is not a token or a value
    with control characters; the usual headers are written after a status
    line, ``Date`` and ``Server`` made once a second. Headers that
    ``to_bytes`` treats specially (Date, Server, Content-Length, ...) go
    through ``to_bytes`` itself.
    """
    items = (*headers_101, *extra_headers)
    lines = [_switching_head()]
    for name, value in items:
        if type(name) is not str or name not in _PLAIN_101_NAMES and (
            not TOKEN.match(name) or name.lower() in _SPECIAL_101_NAMES
        ):
            return _accept_response(items)
        # isprintable() excludes every character BAD_VALUE finds (and more).
        if type(value) is not str or not value.isprintable() and BAD_VALUE.search(value):
            return _accept_response(items)  # raises the same error
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


# Names check_request gives accept_response (valid tokens, no special role).
_PLAIN_101_NAMES = frozenset(("Sec-WebSocket-Accept", "Sec-WebSocket-Protocol"))
# Lowercase names accept_response leaves to Response.to_bytes.
_SPECIAL_101_NAMES = frozenset(
    ("upgrade", "connection", "date", "server", "content-length", "transfer-encoding")
)
_switching = [0, ""]


def _switching_head() -> str:
    """The start of every 101: status line, Date, Server, Upgrade, Connection
    (Response.to_bytes's order), rebuilt at most once a second."""
    now = int(time.time())
    if _switching[0] != now:
        _switching[1] = (
            f"HTTP/1.1 101 Switching Protocols\r\nDate: {http_date()}\r\nServer: {SERVER}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        )
        _switching[0] = now
    return _switching[1]


_switching_bytes = [0, b""]


def _switching_head_bytes() -> bytes:
    """``_switching_head()`` as bytes, also made at most once a second."""
    now = int(time.time())
    if _switching_bytes[0] != now:
        _switching_bytes[1] = _switching_head().encode("latin-1")
        _switching_bytes[0] = now
    return _switching_bytes[1]


def _accept_response(items) -> bytes:
    """accept_response through Response.to_bytes (the general path)."""
    headers = list(_UPGRADE_HEADERS)
    for name, value in items:
        if name.lower() not in ("upgrade", "connection"):
            headers.append((name, value))
    return Response(101, "Switching Protocols", headers).to_bytes()


def error_response(exc: InvalidRequest) -> bytes:
    """The HTTP response that refuses a request (``Connection: close``): the
    standard reason phrase, ``exc.headers`` and ``exc.body`` as plain text."""
    body = exc.body
    if isinstance(body, str):
        body = (body + "\n").encode("utf-8")
    return Response(exc.status, phrase(exc.status), exc.headers, body or b"").to_bytes()


# --------------------------------------------------------------------------
# Client side: RFC 6455 3 (URIs) and 4.1
# --------------------------------------------------------------------------


def parse_uri(url: str):
    """(secure, host, port, resource) of a ws:// or wss:// URL (RFC 6455 3)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"invalid WebSocket URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{url!r} is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise InvalidURI(f"{url!r} has no host")
    if parts.fragment:
        raise InvalidURI(f"{url!r} has a fragment, which WebSocket URLs may not have")
    secure = parts.scheme == "wss"
    if port is None:
        port = 443 if secure else 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, parts.hostname, port, resource




def make_key() -> str:
    """RFC 6455 4.1 item 7: "a nonce consisting of a randomly selected
    16-byte value that has been base64-encoded"."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def build_request(
    host: str,
    port: int,
    path: str,
    key: str,
    *,
    secure: bool = False,
    subprotocols=None,
    origin=None,
    extra_headers=(),
    user_agent="fastws/0.1",
) -> bytes:
    """The client's opening handshake (RFC 6455 4.1).

    ``Host`` omits the default port (80 for ws, 443 for wss) and brackets an
    IPv6 address. ``path`` is the request-target as it goes on the wire
    (already percent-encoded, query included; "" means "/"). Raises
    InvalidURI for a host or path that cannot be sent, ValueError for an
    invalid subprotocol or header.
    """
    if not path:
        path = "/"
    if not TARGET.match(path):
        raise InvalidURI(f"invalid request path {path!r}")
    if not host or BAD_VALUE.search(host) or " " in host:
        raise InvalidURI(f"invalid host {host!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port != (443 if secure else 80):
        host = f"{host}:{port}"
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        for p in subprotocols:
            if not TOKEN.match(p):
                raise ValueError(f"invalid subprotocol {p!r}")
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if origin is not None:
        check_value(origin)
        lines.append(f"Origin: {origin}")
    if user_agent:
        check_value(user_agent)
        lines.append(f"User-Agent: {user_agent}")
    items = extra_headers.raw_items() if isinstance(extra_headers, Headers) else extra_headers
    for name, value in items:
        check_field(name, value)
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def negotiate_deflate(request, opts):
    """permessage-deflate for a valid upgrade request on a server with
    ``compression="deflate"``: the negotiated fastws.deflate.DeflateParams
    (``.response`` is the Sec-WebSocket-Extensions value to answer), or None
    when the client offered nothing acceptable (RFC 7692 5: such offers are
    declined and the connection goes on uncompressed).  A header that is not
    valid RFC 6455 9.1 syntax is refused with 400."""
    values = request.headers.get_all("sec-websocket-extensions")
    if not values:
        return None
    try:
        return deflate.negotiate(values, opts)
    except ValueError:
        raise InvalidRequest(400, "Bad Request", body="Invalid Sec-WebSocket-Extensions") from None


def response_deflate(response, opts):
    """Client side: the DeflateParams the server's 101 selects for our
    permessage-deflate offer, or None; InvalidResponse if it breaks RFC 7692."""
    values = response.headers.get_all("sec-websocket-extensions")
    if not values:
        return None
    try:
        return deflate.client_accept(values, opts)
    except ValueError as exc:
        raise InvalidResponse(f"invalid Sec-WebSocket-Extensions in the 101 response: {exc}") from None


def check_response(response, key: str, subprotocols=None, *, extensions_offered: bool = False):
    """Validate the server's answer (RFC 6455 4.1, client requirements);
    return the selected subprotocol or None.

    Raises InvalidStatus for a status other than 101 and InvalidResponse for
    any other failure, the message saying which check failed.
    """
    headers = response.headers
    # RFC 6455 4.1: "If the status code received from the server is not 101,
    # the client handles the response per HTTP [RFC2616] procedures."
    if response.status != 101:
        raise InvalidStatus(response.status, headers.items(), response.body)

    # 4.1 item 2: "If the response lacks an |Upgrade| header field or the
    # |Upgrade| header field contains a value that is not an ASCII
    # case-insensitive match for the value "websocket", the client MUST
    # _Fail the WebSocket Connection_."
    upgrade = tokens(headers.get_all("upgrade"))
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        raise InvalidResponse("missing or invalid Upgrade: websocket in the 101 response")

    # 4.1 item 3: "If the response lacks a |Connection| header field or the
    # |Connection| header field doesn't contain a token that is an ASCII
    # case-insensitive match for the value "Upgrade", the client MUST _Fail
    # the WebSocket Connection_."
    if not has_token(headers, "connection", "upgrade"):
        raise InvalidResponse("missing Connection: upgrade in the 101 response")

    # 4.1 item 4: "If the response lacks a |Sec-WebSocket-Accept| header
    # field or the |Sec-WebSocket-Accept| contains a value other than the
    # base64-encoded SHA-1 of the concatenation of the |Sec-WebSocket-Key|
    # (as a string, not base64-decoded) with the string
    # "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" [...] the client MUST _Fail the
    # WebSocket Connection_."
    if headers.get_all("sec-websocket-accept") != [accept_key(key)]:
        raise InvalidResponse("missing or wrong Sec-WebSocket-Accept in the 101 response")

    # 4.1 item 5: an extension "that was not present in the client's
    # handshake" fails the connection. With an offer (permessage-deflate),
    # response_deflate checks the answer against it.
    if not extensions_offered and tokens(headers.get_all("sec-websocket-extensions")):
        raise InvalidResponse("the server selected an extension that was not offered")

    # 4.1 item 6: a subprotocol "that was not present in the client's
    # handshake" fails the connection.
    chosen = tokens(headers.get_all("sec-websocket-protocol"))
    if not chosen:
        return None
    if len(chosen) != 1 or not subprotocols or chosen[0] not in subprotocols:
        raise InvalidResponse("the server selected a subprotocol that was not offered")
    return chosen[0]
