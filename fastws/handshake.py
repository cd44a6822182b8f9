"""The WebSocket opening handshake (RFC 6455 section 4), sans-I/O.

Bytes go in, objects and bytes come out: nothing here touches a socket, a
clock other than the ``Date`` header, or asyncio. HTTP/1.1 is parsed by
``httptools`` (llhttp); this module adds the limits, the framing decisions
and the RFC 6455 checks.

Server flow::

    reader = RequestReader()                  # one per connection
    request = reader.feed(data)               # None until complete
    if not is_upgrade_request(request):       # plain HTTP: the server routes it
        ...
    try:
        subprotocol, headers = check_request(request, origins=..., subprotocols=...)
    except InvalidRequest as exc:
        transport.write(error_response(exc)); close
    transport.write(accept_response(headers))
    frames = reader.leftover                  # bytes the client sent behind the head

``RequestReader.feed`` raises ``InvalidRequest`` for input that is not HTTP
(400), a head over ``max_head`` bytes or with more than ``max_headers`` fields
(431) and a body over ``max_body`` (413); ``error_response(exc)`` turns any
``InvalidRequest`` into the bytes to send before closing.

Client flow::

    key = make_key()
    transport.write(build_request(host, port, path, key, ...))
    reader = ResponseReader()
    response = reader.feed(data)              # None until complete; eof() on close
    subprotocol = check_response(response, key, subprotocols)
    frames = reader.leftover                  # frames the server sent behind the 101

How the head is delimited
-------------------------
llhttp only accepts CRLF line endings, so a head always ends at the end of some
``CRLF CRLF``. The readers feed llhttp up to each such candidate in turn and
look whether the head completed there: the end of the head, and so
``leftover``, is known to the byte without relying on httptools reporting
offsets, and the head limit is exact (a head of ``max_head`` bytes passes, one
more byte is refused) because no more than ``max_head`` bytes are ever fed
before the head completes.

The common case, kept short
---------------------------
A server mostly sees one thing: the whole head of a valid upgrade request in
the first read. For it:

- ``RequestReader.feed`` gives llhttp the head, up to the first CRLF CRLF, in
  one ``feed_data`` call (no copy when the read is just the head), and makes
  the Request as soon as llhttp stops there;
- ``on_header`` only appends llhttp's ``(name, value)`` bytes: nothing is
  decoded per field line. ``Headers`` decodes them (latin-1, OWS stripped) on
  first use, and ``check_request``/``is_upgrade_request`` read just the nine
  fields they check, collected in one pass (``Headers._fields``);
- ``Headers.pack`` is the slice of the head holding its field lines, as
  received;
- ``accept_response`` writes the 101 after a status line, Date and Server
  made once a second (the same bytes as ``Response.to_bytes``, which still
  writes anything unusual).

The server goes one step further for that case (``upgrade_reader()``, one
per server; ``read_upgrade`` is the same with a fresh parser): llhttp parses the
head with a dict's ``__setitem__`` and a list's ``append`` as callbacks (no
Python frame per field line), the parser is kept from head to head (llhttp
resumes at the start of a new message after an upgrade), the checks run on
the bytes in one C function (``scan_upgrade`` in fastws_ext.upgrade, twin
fastws._py.upgrade) and ``accept_101`` writes the 101 from the key. It only
ever says "taken" or "not mine": anything else (a split head, plain HTTP,
a field line repeated, a check that fails) is read again the general way,
which decides and refuses.

The same rules hold on every path, and tests/test_handshake.py compares each
short cut with the general way (split reads, str Headers, ``to_bytes``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import sys
import time
from email.utils import formatdate
from http import HTTPStatus

import httptools

from ._impl import codec
from .exceptions import ConfigError, InvalidRequest, InvalidResponse, InvalidStatus, InvalidURI

__all__ = [
    "GUID",
    "Headers",
    "Request",
    "Response",
    "RequestReader",
    "ResponseReader",
    "accept_key",
    "is_upgrade_request",
    "check_request",
    "accept_response",
    "error_response",
    "make_key",
    "build_request",
    "check_response",
]

#: RFC 6455 1.3 / 4.2.2: the GUID appended to Sec-WebSocket-Key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

SERVER = "fastws"

_CRLFCRLF = b"\r\n\r\n"
_intern = sys.intern
_OWS = " \t"  # RFC 9110 5.6.3 optional whitespace

# RFC 9110 5.6.2 token; 5.5 field-value (no CR, LF or NUL; obs-text allowed).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 3.2: request-target; visible ASCII, no spaces.
_TARGET = re.compile(r"[\x21-\x7e]+\Z")


# --------------------------------------------------------------------------
# Headers, Request, Response
# --------------------------------------------------------------------------


class Headers:
    """Case-insensitive multi-dict of header fields, in the order received.

    Kept per connection, so it is light: a list of ``(name, value)`` tuples,
    plus the lowercased names (interned, so shared between connections),
    built on the first lookup (a handshake has
    about ten fields; scanning them beats hashing). Names keep the case they
    were given; lookups ignore case. Iteration, ``len`` and ``items()`` go
    over field lines, so a name sent on two lines appears twice.

    The readers hand over the ``(name, value)`` bytes pairs as llhttp gave
    them (``_from_raw``), and the field lines of the head as received when
    the head came in one piece: they are decoded (latin-1, value stripped of
    OWS) only when a method below needs them, which the server's handshake
    never does: ``check_request`` reads the few fields it checks through
    ``_fields()`` and the connection keeps ``pack()``, the received bytes.
    """

    __slots__ = ("_items", "_lower", "_raw", "_block", "_ws")

    def __init__(self, items=()):
        if isinstance(items, Headers):
            self._items = list(items._load())
        else:
            if hasattr(items, "items"):
                items = items.items()
            self._items = [(str(name), str(value)) for name, value in items]
        self._lower = None
        self._raw = None
        self._block = None
        self._ws = None

    @classmethod
    def _wrap(cls, items: list) -> "Headers":
        """Adopt a list of (str, str) tuples without copying or checking."""
        self = cls.__new__(cls)
        self._items = items
        self._lower = None
        self._raw = None
        self._block = None
        self._ws = None
        return self

    @classmethod
    def _from_raw(cls, raw: list, block=None) -> "Headers":
        """Adopt a reader's list of (bytes, bytes) field lines, as llhttp
        delivered them (leading OWS of the value already skipped); decoded on
        first use. ``block``: the same field lines as received, each
        preceded by CRLF (the head minus its start line and final CRLF CRLF),
        or None."""
        self = cls.__new__(cls)
        self._items = None
        self._lower = None
        self._raw = raw
        self._block = block
        self._ws = None
        return self

    def _load(self) -> list:
        """The (str, str) items, decoded from the raw field lines if need be."""
        items = self._items
        if items is None:
            # Interned names: the handful of common ones is shared by every
            # connection's Headers instead of stored once per connection.
            items = self._items = [
                (_intern(n.decode("latin-1")), v.decode("latin-1").strip(_OWS)) for n, v in self._raw
            ]
            self._raw = None
        return items

    def _names(self) -> list:
        lower = self._lower
        if lower is None:
            lower = self._lower = [_intern(n.lower()) for n, _ in self._load()]
        return lower

    def _fields(self) -> list:
        """The values of the fields the handshake checks, computed once: a
        list indexed by ``_HOST`` ... ``_TRANSFER_ENCODING`` holding, for
        each, None when absent or the list of its values (str, OWS-stripped),
        one per field line."""
        ws = self._ws
        if ws is None:
            raw = self._raw
            ws = self._ws = _scan_raw(raw) if raw is not None else _scan_items(self._items)
        return ws

    def add(self, name: str, value: str) -> None:
        """Append a field line (does not replace an existing one)."""
        self._load().append((name, value))
        if self._lower is not None:
            self._lower.append(name.lower())
        self._block = self._ws = None

    def get(self, name: str, default=None):
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        for i, n in enumerate(self._names()):
            if n == key:
                return self._items[i][1]
        return default

    def get_all(self, name: str) -> list:
        """Every value of ``name``, one per field line, in order."""
        key = name.lower()
        names = self._names()
        items = self._items
        return [items[i][1] for i, n in enumerate(names) if n == key]

    def __getitem__(self, name: str) -> str:
        """The first value of ``name``; KeyError if absent."""
        key = name.lower()
        for i, n in enumerate(self._names()):
            if n == key:
                return self._items[i][1]
        raise KeyError(name)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name.lower() in self._names()

    def __iter__(self):
        return (n for n, _ in self._load())

    def __len__(self) -> int:
        items = self._items
        return len(self._raw if items is None else items)

    def items(self) -> list:
        """A new list of ``(name, value)`` pairs, one per field line."""
        return list(self._load())

    def raw_items(self) -> list:
        """The internal list of ``(name, value)`` tuples, not copied: read only
        (use ``add`` to append)."""
        return self._load()

    def pack(self) -> bytes:
        """The fields as one compact bytes object, for ``unpack``.

        A connection keeps this after the handshake instead of the Headers
        object (one object instead of a list of tuples of strings: about a
        quarter of the memory), and ``unpack`` rebuilds it on demand.

        Two forms: the field lines of a head as received (llhttp validated
        them), each preceded by CRLF, when a reader kept them; otherwise
        latin-1 ``name: value`` lines joined by CRLF, which never start with
        CRLF (a name is not empty).
        """
        block = self._block
        if block is not None:
            return block
        raw = self._raw
        if raw is not None:
            return b"\r\n".join([n + b": " + v.strip(b" \t") for n, v in raw])
        return "\r\n".join(f"{n}: {v}" for n, v in self._items).encode("latin-1")

    @classmethod
    def unpack(cls, packed: bytes) -> "Headers":
        """The Headers that ``pack`` packed (values were validated on the way in)."""
        items = []
        if packed[:2] == b"\r\n":
            # Field lines as received: decoded as _load decodes llhttp's.
            for line in packed[2:].decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                items.append((_intern(name), value.strip(_OWS)))
        elif packed:
            for line in packed.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(": ")
                items.append((_intern(name), value))
        return cls._wrap(items)

    def __repr__(self) -> str:
        return f"Headers({self._load()!r})"

    def __eq__(self, other):
        if isinstance(other, Headers):
            other = other._load()
        elif not isinstance(other, list):
            return NotImplemented
        items = self._load()
        if len(other) != len(items):
            return False
        return all(
            n1.lower() == n2.lower() and v1 == v2
            for (n1, v1), (n2, v2) in zip(items, other)
        )

    __hash__ = None


# The fields check_request reads, by index in Headers._fields().
_FIELD_NAMES = (
    "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
    "origin", "sec-websocket-protocol", "content-length", "transfer-encoding",
)
(
    _HOST, _UPGRADE, _CONNECTION, _KEY, _VERSION,
    _ORIGIN, _PROTOCOL, _CONTENT_LENGTH, _TRANSFER_ENCODING,
) = range(len(_FIELD_NAMES))
_FIELD_INDEX = {name: i for i, name in enumerate(_FIELD_NAMES)}
# For raw names: the lowercase ones, plus the usual spellings of these and of
# other fields a handshake carries (-1: not looked for), so that most names
# are found without lowercasing them first. Any other spelling is lowercased.
_FIELD_INDEX_RAW = {name.encode("ascii"): i for i, name in enumerate(_FIELD_NAMES)}
_FIELD_INDEX_RAW.update({
    name.encode("ascii"): _FIELD_INDEX.get(name.lower(), -1)
    for name in (
        "Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
        "Origin", "Sec-WebSocket-Protocol", "Content-Length", "Transfer-Encoding",
        "User-Agent", "Sec-WebSocket-Extensions", "Accept", "Accept-Encoding",
        "Accept-Language", "Cache-Control", "Pragma", "Cookie", "Authorization",
        "user-agent", "sec-websocket-extensions", "accept", "accept-encoding",
        "accept-language", "cache-control", "pragma", "cookie", "authorization",
    )
})


def _scan_raw(raw: list) -> list:
    """``Headers._fields`` from raw (bytes, bytes) field lines.

    Field names are tokens (llhttp refused anything else), so ``bytes.lower``
    is the ASCII case-insensitive match; only the values of the fields looked
    for are decoded.
    """
    found = [None] * len(_FIELD_NAMES)
    index = _FIELD_INDEX_RAW.get
    for name, value in raw:
        i = index(name)
        if i is None:
            i = index(name.lower())
            if i is None:
                continue
        if i >= 0:
            value = value.decode("latin-1").strip(_OWS)
            values = found[i]
            if values is None:
                found[i] = [value]
            else:
                values.append(value)
    return found


def _scan_items(items: list) -> list:
    """``Headers._fields`` from (str, str) items (values taken as given)."""
    found = [None] * len(_FIELD_NAMES)
    index = _FIELD_INDEX.get
    for name, value in items:
        i = index(name.lower())
        if i is not None:
            values = found[i]
            if values is None:
                found[i] = [value]
            else:
                values.append(value)
    return found


class Request:
    """An HTTP request: ``path`` is the raw request-target (query included)."""

    __slots__ = ("method", "path", "headers", "version", "body")

    def __init__(self, method: str, path: str, headers=(), version: str = "1.1", body: bytes = b""):
        self.method = method
        self.path = path
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.version = version
        self.body = body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path} HTTP/{self.version}>"


class Response:
    """An HTTP response; ``to_bytes()`` serializes it as HTTP/1.1.

    ``headers`` may be a ``Headers`` or a list of pairs.
    """

    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: str = "", headers=(), body: bytes = b""):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def to_bytes(self) -> bytes:
        """The full HTTP/1.1 response.

        Always adds ``Date`` and ``Server: fastws`` (unless given). Except for
        1xx and 204 (RFC 9110 8.6: a server MUST NOT send Content-Length in
        them) and 304 adds ``Content-Length``; any ``Content-Length`` or
        ``Transfer-Encoding`` in ``headers`` is dropped since the body is sent
        whole. Except for 101 the connection is closed after the response:
        ``close`` is added to the ``Connection`` field (merged with the tokens
        given, e.g. ``Connection: Upgrade, close`` for a 426) and
        ``Content-Type: text/plain; charset=utf-8`` is added if absent.

        Raises ValueError for a header name that is not a token, or a reason
        or value containing CR, LF or other control characters (no header
        injection from application-supplied values).
        """
        status = self.status
        if not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status!r}")
        reason = self.reason or _phrase(status)
        _check_value(reason)
        body = self.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        items = self.headers.raw_items() if isinstance(self.headers, Headers) else self.headers
        closing = status != 101
        lines = [f"HTTP/1.1 {status} {reason}"]
        has_date = has_server = has_type = False
        connection = []
        for name, value in items:
            _check_field(name, value)
            lname = name.lower()
            if lname in ("content-length", "transfer-encoding"):
                continue
            if lname == "connection" and closing:
                connection.extend(_tokens([value]))
                continue
            if lname == "date":
                has_date = True
            elif lname == "server":
                has_server = True
            elif lname == "content-type":
                has_type = True
            lines.append(f"{name}: {value}")
        if not has_server:
            lines.insert(1, f"Server: {SERVER}")
        if not has_date:
            lines.insert(1, f"Date: {_http_date()}")
        if closing:
            if not any(t.lower() == "close" for t in connection):
                connection.append("close")
            lines.append("Connection: " + ", ".join(connection))
            if not has_type:
                lines.append("Content-Type: text/plain; charset=utf-8")
        if status >= 200 and status not in (204, 304):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _check_field(name: str, value: str) -> None:
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    _check_value(value)


def _check_value(value: str) -> None:
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid header value {value!r}")


_date_cache = [0, ""]


def _http_date() -> str:
    """RFC 9110 5.6.7 IMF-fixdate, recomputed at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


def _tokens(values) -> list:
    """The comma-separated elements of list-based field values (RFC 9110 5.6.1).

    Several field lines are one list (RFC 9110 5.3); empty elements are
    ignored as the ABNF allows.
    """
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip(_OWS)
            if part:
                out.append(part)
    return out


def _has_token(headers: Headers, name: str, token: str) -> bool:
    """Whether any ``name`` field line lists ``token`` (ASCII case-insensitive)."""
    return _lists_token(headers.get_all(name), token)


def _lists_token(values, token: str) -> bool:
    """Whether the list-based field values ``values`` (one per field line, or
    None) hold the lowercase ``token``, ASCII case-insensitively: the same as
    ``any(t.lower() == token for t in _tokens(values))``, without building
    the list for the usual single value that is just the token."""
    if values:
        for value in values:
            value = value.lower()
            if value == token:
                return True
            if token in value:
                for part in value.split(","):
                    if part.strip(_OWS) == token:
                        return True
    return False


# --------------------------------------------------------------------------
# Incremental readers (httptools underneath)
# --------------------------------------------------------------------------

# Reader states.
_HEAD, _BODY, _DONE, _FAILED = range(4)


def _check_limits(**limits) -> None:
    for name, value in limits.items():
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative int, got {value!r}")


class _Reader:
    """Shared machinery: head delimiting, limits, body framing.

    Subclasses set ``_parser`` and implement ``_on_head`` (decides the body
    framing once the head is complete) and ``_result``/``_error``.

    The httptools callbacks do as little as they can (they run once per
    field line): ``on_header`` appends the raw pair to ``_fields``, and the
    header count is checked after each ``feed_data``. They never raise into
    llhttp; ``on_body`` stores its error in ``_fail``, raised typed after
    ``feed_data`` returns.
    """

    __slots__ = (
        "max_head", "max_headers", "max_body", "leftover",
        "_parser", "_state", "_head_len", "_tail", "_fields", "_headers",
        "_head_done", "_complete", "_body", "_body_len", "_remaining",
        "_upgrade", "_fail", "_result_obj", "_block",
    )

    # httptools looks every callback up once per parser: present as None,
    # the unused ones cost no AttributeError each time.
    on_message_begin = on_chunk_header = on_chunk_complete = None

    def __init__(self, max_head: int, max_headers: int, max_body: int):
        if not (
            type(max_head) is int and type(max_headers) is int and type(max_body) is int
            and max_head >= 0 and max_headers >= 0 and max_body >= 0
        ):
            _check_limits(max_head=max_head, max_headers=max_headers, max_body=max_body)
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self.leftover = b""
        self._state = _HEAD
        self._head_len = 0
        self._tail = b""
        self._fields = []  # raw (name, value) field lines of the head being read
        self._headers = None  # ... moved here once the head is complete
        self._head_done = False
        self._complete = False
        self._body = []
        self._body_len = 0
        self._remaining = None  # Content-Length still to read, or None
        self._upgrade = False
        self._fail = None
        self._result_obj = None
        self._block = None  # the head's field lines as received (Headers.pack)

    # ---- httptools callbacks ----

    def on_header(self, name: bytes, value: bytes):
        # Once the head is complete, ``_fields`` is a fresh list that only
        # field lines of a message pipelined behind ours land in (dropped).
        self._fields.append((name, value))

    def on_body(self, body: bytes):
        if self._state != _BODY or self._fail is not None:
            return
        self._body_len += len(body)
        if self._body_len > self.max_body:
            self._fail = self._body_too_big()
            return
        self._body.append(body)

    def on_message_complete(self):
        # Only our message: not an interim 1xx, not one pipelined behind.
        if self._head_done and self._state != _DONE:
            self._complete = True

    # ---- feeding ----

    def feed(self, data: bytes):
        """Parse ``data``; return the message once complete, else None.

        Once a message has been returned, further data is appended to
        ``leftover`` (bytes that arrive while the application decides whether
        to accept belong to the next protocol). After an error, feed raises
        the same error again.
        """
        state = self._state
        if state == _DONE:
            self.leftover += data
            return None
        if state == _FAILED:
            raise self._fail
        try:
            return self._feed(bytes(data), 0)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception):
        """Go to _FAILED for good and raise the (first) error."""
        self._state = _FAILED
        self._parser = self._fields = self._headers = None
        if self._fail is None:
            self._fail = exc
        raise self._fail from None

    def _feed(self, data: bytes, pos: int):
        """feed, from ``data[pos:]``."""
        if self._state == _HEAD:
            pos = self._feed_head(data, pos)
            if not self._head_done:
                return None
            self._finish_head()
        if pos:
            data = data[pos:]
        if self._state == _BODY:
            data = self._feed_body(data)
        if self._state == _DONE:
            self.leftover = data
            return self._result_obj
        return None

    def _feed_parser(self, piece: bytes) -> int:
        """Feed llhttp; return how many bytes of ``piece`` belong to the message.

        Raises, in this order: 431 (413 for a response) if the head being
        read has more than ``max_headers`` field lines (as if counted as they
        came: checked before llhttp's own verdict), the error a callback
        stored, 400 (InvalidResponse) for what llhttp refused.
        """
        try:
            self._parser.feed_data(piece)
            used = len(piece)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade = True
            used = exc.args[0] if exc.args else len(piece)
        except httptools.HttpParserError:
            used = -1
        if self._state == _HEAD and len(self._fields) > self.max_headers:
            raise self._too_many_headers()
        if self._fail is not None:
            raise self._fail
        if used < 0:
            if self._complete:
                # llhttp went on to parse the bytes behind a complete message as
                # the next one (or paused on a 101 without Connection: upgrade):
                # not our message, not our error.
                return len(piece)
            raise self._malformed()
        return used

    def _feed_head(self, data: bytes, pos: int) -> int:
        """Feed the head bytes from ``data[pos:]``; return the position in
        ``data`` where the head ended.

        Each piece fed ends at the end of the next CRLF CRLF (or at the head
        limit): the first bytes of a head are searched in place, so a head
        that arrives whole in one read goes to llhttp in one call, uncopied.
        """
        end_of_data = len(data)
        while pos < end_of_data:
            budget = self.max_head - self._head_len
            tail = self._tail
            if tail:
                # Continue a CRLF CRLF the previous piece may have begun.
                i = (tail + data[pos:pos + budget]).find(_CRLFCRLF)
                end = pos + budget if i < 0 else pos + i + 4 - len(tail)
            else:
                i = data.find(_CRLFCRLF, pos, pos + budget)
                end = pos + budget if i < 0 else i + 4
            if end > end_of_data:
                end = end_of_data
            piece = data if pos == 0 and end == end_of_data else data[pos:end]
            used = self._feed_parser(piece)
            self._head_len += used
            if self._head_done:
                # The head ends at the end of ``piece`` (it was cut after a
                # CRLF CRLF); llhttp's upgrade offset says the same.
                if self._head_len == used:
                    self._keep_block(piece, used)
                return pos + used
            self._tail = (tail + piece)[-3:]
            pos = end
            if self._head_len >= self.max_head:
                # No head of max_head bytes or less ends here.
                raise self._head_too_big()
        return pos

    def _keep_block(self, head: bytes, end: int) -> None:
        """The head is ``head[:end]``: keep its field lines as received, each
        preceded by CRLF (b"" if none), for Headers.pack; not if empty lines
        precede the start line (RFC 9112 2.2 lets llhttp skip them)."""
        if head[:2] != b"\r\n":
            self._block = head[head.index(b"\r\n"):end - 4]

    def _finish_head(self):
        """The head is complete: decide the body framing, go to _BODY or _DONE."""
        self._headers = self._fields
        self._fields = []
        self._on_head()
        if self._upgrade or self._complete:
            self._done()
        else:
            self._state = _BODY

    def _feed_body(self, data: bytes) -> bytes:
        """Feed body bytes; return the bytes behind the message once complete."""
        remaining = self._remaining
        if remaining is not None:
            piece = data[:remaining]
            rest = data[remaining:]
            self._remaining = remaining - len(piece)
        else:
            piece, rest = data, b""
        used = self._feed_parser(piece) if piece else 0
        if self._complete:
            self._done()
            if remaining is None:
                # Chunked: llhttp does not say where the last chunk ended;
                # what followed it in the same read is dropped (plain HTTP
                # is one request per connection: the answer closes it).
                return b""
            return piece[used:] + rest
        return b""

    def _done(self):
        self._state = _DONE
        self._result_obj = self._result()
        # The parser holds our callbacks, so it and the reader form a cycle:
        # break it now that the parser is done with, for the reader to be
        # freed as soon as it is dropped, without the cyclic collector.
        self._parser = None

    def _content_length(self, headers: Headers):
        """The declared Content-Length (llhttp rejected duplicates/TE+CL)."""
        lengths = headers._fields()[_CONTENT_LENGTH]
        return None if lengths is None else int(lengths[0])


class RequestReader(_Reader):
    """Server side: reads one HTTP/1.1 request incrementally.

    ``feed`` returns the ``Request`` for an upgrade request as soon as its head
    is complete (``leftover`` holds what followed it: the client may pipeline
    its first frames), for a plain request once its body (Content-Length or
    chunked) is complete. For a Content-Length or body-less request
    ``leftover`` is exact; behind a chunked body it is ``b""``.

    An upgrade request's body is never read: llhttp hands over right after the
    head, so any bytes there are in ``leftover`` (``check_request`` refuses an
    upgrade request that declares a body).
    """

    __slots__ = ("_url",)

    def __init__(self, max_head: int = 8192, max_headers: int = 100, max_body: int = 1048576):
        _Reader.__init__(self, max_head, max_headers, max_body)
        self._url = []
        self._parser = httptools.HttpRequestParser(self)

    def feed(self, data: bytes):
        """Parse ``data``; return the Request once complete, else None (see
        ``_Reader.feed``).

        The common case takes a short cut to the same results: the first
        read holds the whole head of an upgrade request, maybe with frames
        behind it. The head, up to the first CRLF CRLF (where a head that
        does not start with an empty line ends), goes to llhttp in one call,
        uncopied if nothing follows it; llhttp stops at its end, an upgrade,
        and the Request is made at once. Whatever else the first read holds
        (a plain request, part of a head, an error) continues the general
        way from where this left off.
        """
        if self._state != _HEAD or self._tail:
            return _Reader.feed(self, data)
        data = bytes(data)
        try:
            end = data.find(_CRLFCRLF, 0, self.max_head) + 4
            if end < 4 or data[:2] == b"\r\n":
                return self._feed(data, 0)
            head = data if end == len(data) else data[:end]
            used = self._feed_parser(head)
            self._head_len = used
            if self._head_done:
                self._keep_block(head, used)
                if self._upgrade:
                    self._state = _DONE
                    request = self._result_obj = self._make_request(self._fields)
                    self._parser = self._fields = None
                    self.leftover = data[used:]
                    return request
                self._finish_head()
                return self._feed(data, used)
            self._tail = head[-3:]
            if used >= self.max_head:
                raise self._head_too_big()
            return self._feed(data, end)
        except Exception as exc:
            self._failed(exc)

    def on_url(self, url: bytes):
        if self._state == _HEAD:
            self._url.append(url)

    def on_headers_complete(self):
        if self._state == _HEAD:
            self._head_done = True

    def _make_request(self, fields: list) -> Request:
        """The Request, made while llhttp still holds this message's method
        and version (a body, if any, is added by _result)."""
        parser = self._parser
        url = self._url
        return Request(
            parser.get_method().decode("ascii"),
            (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1"),
            Headers._from_raw(fields, self._block),
            parser.get_http_version(),
        )

    def _on_head(self):
        request = self._result_obj = self._make_request(self._headers)
        # llhttp reads no body for an upgrade (httptools tells it to skip it).
        if not self._upgrade and not self._parser.should_upgrade():
            length = self._content_length(request.headers)
            if length is not None:
                if length > self.max_body:
                    raise self._body_too_big()
                self._remaining = length

    def _result(self):
        request = self._result_obj
        if self._body:
            request.body = b"".join(self._body)
        return request

    def _malformed(self):
        return InvalidRequest(400, "Bad Request", body="Malformed HTTP request")

    def _head_too_big(self):
        return InvalidRequest(431, "Request Header Fields Too Large")

    _too_many_headers = _head_too_big

    def _body_too_big(self):
        return InvalidRequest(413, "Content Too Large")


class ResponseReader(_Reader):
    """Client side: reads the server's answer to the upgrade request.

    ``feed`` returns the ``Response`` as soon as the head of a 101 is complete
    (``leftover`` holds the frames the server sent right behind it); for any
    other status once the body is read (Content-Length or chunked). A body
    delimited by the end of the connection is returned by ``eof()``, which the
    caller invokes when the connection closes. Interim 1xx responses (100,
    103, ...) are skipped (RFC 9110 15.2: a client MUST be able to parse them).
    """

    __slots__ = ("_reason", "_status", "_until_close")

    def __init__(self, max_head: int = 8192, max_headers: int = 100, max_body: int = 65536):
        _Reader.__init__(self, max_head, max_headers, max_body)
        self._reason = []
        self._status = 0
        self._until_close = False
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self):
        if self._state == _HEAD:
            # A new response: the previous one was interim.
            self._reason = []
            self._fields = []
            self._head_done = False
            self._complete = False

    def on_status(self, reason: bytes):
        if self._state == _HEAD:
            self._reason.append(reason)

    def on_headers_complete(self):
        if self._state != _HEAD:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim response: llhttp completes it and starts over
        self._status = status
        self._head_done = True

    def _on_head(self):
        status = self._status
        if status == 101:
            self._upgrade = True
            return
        if status == 204 or status == 304:
            return
        headers = Headers._from_raw(self._headers)
        length = self._content_length(headers)
        if length is not None:
            if length > self.max_body:
                raise self._body_too_big()
            self._remaining = length
        else:
            # RFC 9112 6.3 items 4 and 8: without chunked as the final
            # coding, or without any framing, the body runs until close.
            codings = _tokens(headers._fields()[_TRANSFER_ENCODING] or ())
            if not codings or codings[-1].lower() != "chunked":
                self._until_close = True

    def eof(self):
        """The connection closed: return the Response whose body ran until
        close, or raise InvalidResponse if the response was incomplete."""
        if self._state == _DONE:
            return self._result_obj
        if self._state == _FAILED:
            raise self._fail
        if self._state == _BODY and self._until_close:
            self._done()
            return self._result_obj
        self._fail = InvalidResponse(
            "connection closed during the opening handshake"
            if self._state == _HEAD
            else "connection closed before the end of the response body"
        )
        self._state = _FAILED
        raise self._fail

    def _result(self):
        return Response(
            self._status,
            b"".join(self._reason).decode("latin-1"),
            Headers._from_raw(self._headers, self._block),
            b"".join(self._body),
        )

    def _malformed(self):
        return InvalidResponse("malformed HTTP response")

    def _head_too_big(self):
        return InvalidResponse(f"HTTP response head over {self.max_head} bytes")

    def _too_many_headers(self):
        return InvalidResponse(f"HTTP response with more than {self.max_headers} headers")

    def _body_too_big(self):
        return InvalidResponse(f"HTTP response body over {self.max_body} bytes")


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
    return _lists_token(_fields_of(request)[_UPGRADE], "websocket")


def _fields_of(request) -> list:
    """``Headers._fields()`` of the request's headers (read once, cached on
    them: is_upgrade_request and check_request share the scan)."""
    headers = request.headers
    if type(headers) is not Headers and not isinstance(headers, Headers):
        headers = Headers(headers)
    fields = headers._ws
    return headers._fields() if fields is None else fields


_UPGRADE_HEADERS = (("Upgrade", "websocket"), ("Connection", "Upgrade"))
_ONLY_13 = ["13"]


# --------------------------------------------------------------------------
# The server's short cut: the whole head of a valid upgrade in the first read
# --------------------------------------------------------------------------

_GUID_BYTES = GUID.encode("ascii")


def upgrade_reader():
    """A new ``UpgradeReader`` (fastws_ext.upgrade, twin fastws._py.upgrade)
    making this module's Request and Headers: ``.read(data, max_head,
    max_headers)`` is ``read_upgrade`` keeping one llhttp parser from head to
    head. One per server (one event loop; not shared between threads)."""
    return codec.UpgradeReader(Request, Headers)


def read_upgrade(data: bytes, max_head: int = 8192, max_headers: int = 100):
    """The server's short cut for what it mostly sees: the first read holds
    the whole head of a valid WebSocket upgrade request (maybe with frames
    behind it).

    Returns ``(request, leftover, key)`` when llhttp parsed the head as an
    upgrade and every check of ``check_request`` before the origin policy
    passes on it (GET, HTTP/1.1, one non-empty Host, Upgrade: websocket,
    Connection listing upgrade, Sec-WebSocket-Version: 13, one valid
    Sec-WebSocket-Key, no Content-Length or Transfer-Encoding), each field
    name on one field line; ``key`` is the Sec-WebSocket-Key (bytes) and the
    request is the one ``RequestReader(max_head, max_headers).feed(data)``
    returns. Returns None for anything else (a partial head, plain HTTP,
    an error, a field line repeated, an unusual spelling): the general way
    (``RequestReader``, ``check_request``) then reads the same bytes and
    decides, so nothing is refused here and the results never differ.

    llhttp still parses and validates the whole head; what is saved is
    Python work per field line and per check (see ``UpgradeReader``, which
    a server keeps to reuse its parser).
    """
    return codec.UpgradeReader(Request, Headers).read(data, max_head, max_headers)


try:  # CPython's own SHA-1: the same digest without OpenSSL's per-call set-up (a third fewer instructions)
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - other interpreters
    _sha1 = hashlib.sha1


def accept_101(key: bytes) -> bytes:
    """``accept_response(check_request(...)[1])`` for a request without a
    subprotocol, from the Sec-WebSocket-Key ``read_upgrade`` returned."""
    accept = binascii.b2a_base64(_sha1(key + _GUID_BYTES).digest(), newline=False)
    cached = _switching_bytes
    if cached[0] != int(time.time()):
        _switching_head_bytes()
    return b"%sSec-WebSocket-Accept: %s\r\n\r\n" % (cached[1], accept)


def check_request(request, *, origins=None, subprotocols=None):
    """Validate a WebSocket upgrade request (RFC 6455 4.2.1).

    Returns ``(subprotocol or None, headers of the 101 response)``; the
    headers hold ``Sec-WebSocket-Accept`` and, when one was selected,
    ``Sec-WebSocket-Protocol``. Raises ``InvalidRequest`` with the status and
    headers to refuse with, checking in this order:

    ====  =====================================================================
    405   method not GET (``Allow: GET``)
    400   HTTP version below 1.1; 505 for HTTP/2 and above on an HTTP/1 wire
    400   no ``Host``, or several
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
    fields = _fields_of(request)

    # RFC 6455 4.2.1 item 2: "A |Host| header field containing the server's
    # authority." RFC 9112 3.2: a server MUST respond with 400 to a request
    # lacking Host or with more than one Host field line.
    hosts = fields[_HOST]
    if hosts is None or len(hosts) != 1 or not hosts[0]:
        raise InvalidRequest(400, "Bad Request", body="Missing or duplicate Host header")

    # RFC 6455 4.2.1 item 3: "An |Upgrade| header field containing the value
    # "websocket", treated as an ASCII case-insensitive value."
    # RFC 9110 15.5.22: a server MUST send an Upgrade header field in a 426.
    if not _lists_token(fields[_UPGRADE], "websocket"):
        raise InvalidRequest(
            426, "Upgrade Required", _UPGRADE_HEADERS,
            body="This service requires use of the WebSocket protocol",
        )

    # RFC 6455 4.2.1 item 4: "A |Connection| header field that includes the
    # token "Upgrade", treated as an ASCII case-insensitive value."
    if not _lists_token(fields[_CONNECTION], "upgrade"):
        raise InvalidRequest(400, "Bad Request", body="Missing Connection: upgrade")

    # RFC 6455 4.2.1 item 6: "A |Sec-WebSocket-Version| header field, with a
    # value of 13." 4.2.2: "If this version does not match a version
    # understood by the server, the server MUST abort the WebSocket handshake
    # [...] and instead send an appropriate HTTP error code (such as 426
    # Upgrade Required) and a |Sec-WebSocket-Version| header field indicating
    # the version(s) the server is capable of understanding."
    if fields[_VERSION] != _ONLY_13:
        raise InvalidRequest(
            426, "Upgrade Required",
            [("Sec-WebSocket-Version", "13"), *_UPGRADE_HEADERS],
            body="Unsupported WebSocket version",
        )

    # RFC 6455 4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a
    # base64-encoded [...] value that, when decoded, is 16 bytes in length."
    keys = fields[_KEY]
    if keys is None or len(keys) != 1 or not _valid_key(keys[0]):
        raise InvalidRequest(400, "Bad Request", body="Invalid Sec-WebSocket-Key")
    key = keys[0]

    # Not RFC 6455 but RFC 9112 6.3 / 9110 9.3.1: the server switches
    # protocols right after the head, so a declared body would be read as
    # frames (and a proxy that framed it differently could be desynchronized).
    lengths = fields[_CONTENT_LENGTH]
    if (lengths is not None and lengths[0] != "0") or fields[_TRANSFER_ENCODING] is not None:
        raise InvalidRequest(400, "Bad Request", body="Unexpected request body")

    # RFC 6455 4.2.1 item 7 / 4.2.2 /origin/: "If the server does not wish to
    # accept this connection, it MUST return an appropriate HTTP error code
    # (e.g., 403 Forbidden) and abort the WebSocket handshake".
    if origins is not None and not _origin_allowed(fields[_ORIGIN] or [], origins):
        raise InvalidRequest(403, "Forbidden", body="Forbidden origin")

    response_headers = [("Sec-WebSocket-Accept", accept_key(key))]

    # RFC 6455 4.2.2 /subprotocol/: "The value chosen MUST be derived from the
    # client's handshake [...] if the server does not wish to agree to one of
    # the suggested subprotocols, it MUST NOT send back a
    # |Sec-WebSocket-Protocol| header field in its response."
    subprotocol = None
    if subprotocols:
        offered = _tokens(fields[_PROTOCOL] or ())
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
            not _TOKEN.match(name) or name.lower() in _SPECIAL_101_NAMES
        ):
            return _accept_response(items)
        # isprintable() excludes every character _BAD_VALUE finds (and more).
        if type(value) is not str or not value.isprintable() and _BAD_VALUE.search(value):
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
            f"HTTP/1.1 101 Switching Protocols\r\nDate: {_http_date()}\r\nServer: {SERVER}\r\n"
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
    return Response(exc.status, _phrase(exc.status), exc.headers, body or b"").to_bytes()


# --------------------------------------------------------------------------
# Client side: RFC 6455 4.1
# --------------------------------------------------------------------------


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
    if not _TARGET.match(path):
        raise InvalidURI(f"invalid request path {path!r}")
    if not host or _BAD_VALUE.search(host) or " " in host:
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
            if not _TOKEN.match(p):
                raise ValueError(f"invalid subprotocol {p!r}")
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if origin is not None:
        _check_value(origin)
        lines.append(f"Origin: {origin}")
    if user_agent:
        _check_value(user_agent)
        lines.append(f"User-Agent: {user_agent}")
    items = extra_headers.raw_items() if isinstance(extra_headers, Headers) else extra_headers
    for name, value in items:
        _check_field(name, value)
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
    from . import deflate

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
    from . import deflate

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
    upgrade = _tokens(headers.get_all("upgrade"))
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        raise InvalidResponse("missing or invalid Upgrade: websocket in the 101 response")

    # 4.1 item 3: "If the response lacks a |Connection| header field or the
    # |Connection| header field doesn't contain a token that is an ASCII
    # case-insensitive match for the value "Upgrade", the client MUST _Fail
    # the WebSocket Connection_."
    if not _has_token(headers, "connection", "upgrade"):
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
    if not extensions_offered and _tokens(headers.get_all("sec-websocket-extensions")):
        raise InvalidResponse("the server selected an extension that was not offered")

    # 4.1 item 6: a subprotocol "that was not present in the client's
    # handshake" fails the connection.
    chosen = _tokens(headers.get_all("sec-websocket-protocol"))
    if not chosen:
        return None
    if len(chosen) != 1 or not subprotocols or chosen[0] not in subprotocols:
        raise InvalidResponse("the server selected a subprotocol that was not offered")
    return chosen[0]
