"""HTTP/1.1 for the handshake and for plain requests: Headers, Request,
Response and their incremental readers, sans-I/O.

llhttp (through ``httptools``) parses; this module adds the limits and the
framing decisions. ``RequestReader.feed`` raises ``InvalidRequest`` for input
that is not HTTP (400), a head over ``max_head`` bytes or with more than
``max_headers`` fields (431) and a body over ``max_body`` (413);
``ResponseReader`` is the client's side. A head always ends at a CRLF CRLF:
the readers feed llhttp up to each candidate in turn, so ``leftover`` is
exact to the byte and the head limit is exact. ``Headers`` keeps llhttp's raw
field lines and decodes them on first use; ``upgrade_fields`` collects, in
one pass, the nine fields the WebSocket handshake checks.

See docs/design/handshake.md.
"""
from __future__ import annotations

import re
import sys
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import (
    TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, List, Mapping, NoReturn, Optional, Tuple, TypeVar,
    Union, overload,
)

import httptools

from .codec import pack_lines, unpack_lines
from .exceptions import ConfigError, InvalidRequest, InvalidResponse

__all__ = [
    "Headers",
    "Request",
    "Response",
    "RequestReader",
    "ResponseReader",
    "upgrade_fields",
    "tokens",
    "has_token",
    "lists_token",
    "http_date",
    "phrase",
    "check_field",
    "check_value",
]

SERVER = "fastws"

# What Headers(...) and Request(headers=...) take: a Headers, a mapping or (name, value) pairs.
HeadersLike = Union["Headers", Mapping[str, str], Iterable[Tuple[str, str]]]
_Items = List[Tuple[str, str]]
_RawItems = List[Tuple[bytes, bytes]]
_Fields = List[Optional[List[str]]]  # Headers._fields(): by FIELD_* index, None or the values
_D = TypeVar("_D")
_M = TypeVar("_M")  # what a reader returns: Request or Response

_CRLFCRLF = b"\r\n\r\n"
_intern = sys.intern
OWS = " \t"  # RFC 9110 5.6.3 optional whitespace

# RFC 9110 5.6.2 token; 5.5 field-value (no CR, LF or NUL; obs-text allowed).
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 3.2: request-target; visible ASCII, no spaces.
TARGET = re.compile(r"[\x21-\x7e]+\Z")


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
    _items: _Items | None
    _lower: list[str] | None
    _raw: _RawItems | None
    _block: bytes | None
    _ws: _Fields | None

    def __init__(self, items: HeadersLike = ()) -> None:
        if isinstance(items, Headers):
            self._items = list(items._load())
        else:
            pairs: Iterable[tuple[str, str]] = items.items() if hasattr(items, "items") else items
            self._items = [(str(name), str(value)) for name, value in pairs]
        self._lower = None
        self._raw = None
        self._block = None
        self._ws = None

    @classmethod
    def _wrap(cls, items: _Items) -> "Headers":
        """Adopt a list of (str, str) tuples without copying or checking."""
        self = cls.__new__(cls)
        self._items = items
        self._lower = None
        self._raw = None
        self._block = None
        self._ws = None
        return self

    @classmethod
    def _from_raw(cls, raw: _RawItems, block: bytes | None = None) -> "Headers":
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

    def _load(self) -> _Items:
        """The (str, str) items, decoded from the raw field lines if need be."""
        items = self._items
        if items is None:
            raw = self._raw
            if raw is None:  # unpack()ed field lines as received
                items = self._items = _unblock(self._block or b"")
                return items
            # Interned names: the handful of common ones is shared by every
            # connection's Headers instead of stored once per connection.
            items = self._items = [
                (_intern(n.decode("latin-1")), v.decode("latin-1").strip(OWS)) for n, v in raw
            ]
            self._raw = None
        return items

    def _names(self) -> list[str]:
        lower = self._lower
        if lower is None:
            lower = self._lower = [_intern(n.lower()) for n, _ in self._load()]
        return lower

    def _fields(self) -> _Fields:
        """The values of the fields the handshake checks, computed once: a
        list indexed by ``FIELD_HOST`` ... ``FIELD_TRANSFER_ENCODING`` holding, for
        each, None when absent or the list of its values (str, OWS-stripped),
        one per field line."""
        ws = self._ws
        if ws is None:
            raw = self._raw
            ws = self._ws = _scan_raw(raw) if raw is not None else _scan_items(self._load())
        return ws

    def add(self, name: str, value: str) -> None:
        """Append a field line (does not replace an existing one)."""
        self._load().append((name, value))
        if self._lower is not None:
            self._lower.append(name.lower())
        self._block = self._ws = None

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: _D) -> str | _D: ...

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of ``name``, or ``default``."""
        if self._raw is not None:  # a reader's field lines: decode only the value asked for
            found = _raw_values(self._raw, name, True)
            return found[0] if found else default
        key = name.lower()
        for i, n in enumerate(self._names()):
            if n == key:
                return self._load()[i][1]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, one per field line, in order."""
        if self._raw is not None:
            return _raw_values(self._raw, name, False)
        key = name.lower()
        names = self._names()
        items = self._load()
        return [items[i][1] for i, n in enumerate(names) if n == key]

    def __getitem__(self, name: str) -> str:
        """The first value of ``name``; KeyError if absent."""
        key = name.lower()
        for i, n in enumerate(self._names()):
            if n == key:
                return self._load()[i][1]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names()

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self._load())

    def __len__(self) -> int:
        items = self._items
        if items is None:
            raw = self._raw
            return len(raw) if raw is not None else len(self._load())
        return len(items)

    def items(self) -> _Items:
        """A new list of ``(name, value)`` pairs, one per field line."""
        return list(self._load())

    def raw_items(self) -> _Items:
        """The internal list of ``(name, value)`` tuples, not copied: read only
        (use ``add`` to append)."""
        return self._load()

    def pack(self) -> bytes | int:
        """The fields as one compact bytes object, for ``unpack``.

        A connection keeps this after the handshake instead of the Headers
        object (one object instead of a list of tuples of strings: about a
        quarter of the memory), and ``unpack`` rebuilds it on demand.

        Four forms: the field lines of a head as received (llhttp validated
        them), each preceded by CRLF, when a reader kept them; those lines
        as an int (a shape's number above the Sec-WebSocket-Key's 128 bits)
        or as byte 0, a shape's number and the Sec-WebSocket-Key value
        (``codec.pack_lines``: lines that differ only in the key are kept
        once per process); otherwise
        latin-1 ``name: value`` lines joined by CRLF, which never start with
        CRLF nor with byte 0 (a name is a token).
        """
        block = self._block
        if block is not None:
            return pack_lines(block)  # the lines as received (or their shape's number and the key)
        raw = self._raw
        if raw is not None:
            return b"\r\n".join([n + b": " + v.strip(b" \t") for n, v in raw])
        return "\r\n".join(f"{n}: {v}" for n, v in self._load()).encode("latin-1")

    @classmethod
    def unpack(cls, packed: bytes | int) -> "Headers":
        """The Headers that ``pack`` packed (values were validated on the way
        in). Field lines as received (or their packed shape, an int or byte 0
        first: ``codec.unpack_lines``) are kept as they are and decoded on
        first use (``pack()`` gives them back); the other form is decoded now."""
        block: bytes = unpack_lines(packed) if isinstance(packed, int) or packed[:1] == b"\0" else packed
        if block[:2] == b"\r\n":
            self = cls.__new__(cls)
            self._items = self._lower = self._raw = self._ws = None
            self._block = block
            return self
        items: _Items = []
        if block:
            for line in block.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(": ")
                items.append((_intern(name), value))
        return cls._wrap(items)

    def __repr__(self) -> str:
        return f"Headers({self._load()!r})"

    def __eq__(self, other: object) -> bool:
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

    __hash__ = None  # type: ignore[assignment]  # (mutable: unhashable, like list)


def _unblock(block: bytes) -> _Items:
    """The (str, str) items of field lines as received, each preceded by
    CRLF (``Headers.pack``): decoded as ``Headers._load`` decodes llhttp's."""
    items: _Items = []
    if block:
        for line in block[2:].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            items.append((_intern(name), value.strip(OWS)))
    return items


# The fields check_request reads, by index in Headers._fields().
FIELD_NAMES = (
    "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
    "origin", "sec-websocket-protocol", "content-length", "transfer-encoding",
)
(
    FIELD_HOST, FIELD_UPGRADE, FIELD_CONNECTION, FIELD_KEY, FIELD_VERSION,
    FIELD_ORIGIN, FIELD_PROTOCOL, FIELD_CONTENT_LENGTH, FIELD_TRANSFER_ENCODING,
) = range(len(FIELD_NAMES))
_FIELD_INDEX = {name: i for i, name in enumerate(FIELD_NAMES)}
# For raw names: the lowercase ones, plus the usual spellings of these and of
# other fields a handshake carries (-1: not looked for), so that most names
# are found without lowercasing them first. Any other spelling is lowercased.
_FIELD_INDEX_RAW = {name.encode("ascii"): i for i, name in enumerate(FIELD_NAMES)}
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


def _raw_values(raw: _RawItems, name: str, first: bool) -> list[str]:
    """The values of ``name`` in raw (bytes, bytes) field lines, decoded as
    ``Headers._load`` would, without decoding the other lines (what an
    ``authenticate`` hook's ``request.headers.get("Authorization")`` costs).
    Field names are tokens (the reader refused anything else), so
    ``bytes.lower`` is the ASCII case-insensitive match."""
    try:
        key = name.lower().encode("latin-1")
    except UnicodeEncodeError:
        return []  # no token holds such a character
    out = []
    for n, v in raw:
        if n == key or (len(n) == len(key) and n.lower() == key):
            out.append(v.decode("latin-1").strip(OWS))
            if first:
                break
    return out


def _scan_raw(raw: _RawItems) -> _Fields:
    """``Headers._fields`` from raw (bytes, bytes) field lines.

    Field names are tokens (llhttp refused anything else), so ``bytes.lower``
    is the ASCII case-insensitive match; only the values of the fields looked
    for are decoded.
    """
    found: _Fields = [None] * len(FIELD_NAMES)
    index = _FIELD_INDEX_RAW.get
    for name, value in raw:
        i = index(name)
        if i is None:
            i = index(name.lower())
            if i is None:
                continue
        if i >= 0:
            text = value.decode("latin-1").strip(OWS)
            values = found[i]
            if values is None:
                found[i] = [text]
            else:
                values.append(text)
    return found


def _scan_items(items: _Items) -> _Fields:
    """``Headers._fields`` from (str, str) items (values taken as given)."""
    found: _Fields = [None] * len(FIELD_NAMES)
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

    def __init__(self, method: str, path: str, headers: HeadersLike = (), version: str = "1.1",
                 body: bytes = b"") -> None:
        self.method = method
        self.path = path
        self.headers: Headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.version = version
        self.body = body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path} HTTP/{self.version}>"


class Response:
    """An HTTP response; ``to_bytes()`` serializes it as HTTP/1.1.

    ``headers`` may be a ``Headers`` or a list of pairs.
    """

    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: str = "", headers: Headers | Iterable[tuple[str, str]] = (),
                 body: bytes | str = b"") -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def to_bytes(self, head: bool = False) -> bytes:
        """The full HTTP/1.1 response; with ``head`` (the answer to a HEAD
        request) the same head, ``Content-Length`` included, and no content
        (RFC 9110 9.3.2).

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
        reason = self.reason or phrase(status)
        check_value(reason)
        body = self.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        items = self.headers.raw_items() if isinstance(self.headers, Headers) else self.headers
        closing = status != 101
        lines = [f"HTTP/1.1 {status} {reason}"]
        has_date = has_server = has_type = False
        connection: list[str] = []
        for name, value in items:
            check_field(name, value)
            lname = name.lower()
            if lname in ("content-length", "transfer-encoding"):
                continue
            if lname == "connection" and closing:
                connection.extend(tokens([value]))
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
            lines.insert(1, f"Date: {http_date()}")
        if closing:
            if not any(t.lower() == "close" for t in connection):
                connection.append("close")
            lines.append("Connection: " + ", ".join(connection))
            if not has_type:
                lines.append("Content-Type: text/plain; charset=utf-8")
        if status >= 200 and status not in (204, 304):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        if head:
            return "\r\n".join(lines).encode("latin-1")
        return "\r\n".join(lines).encode("latin-1") + body


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def check_field(name: str, value: str) -> None:
    if not TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    check_value(value)


def check_value(value: str) -> None:
    if BAD_VALUE.search(value):
        raise ValueError(f"invalid header value {value!r}")


_date_cache: list[Any] = [0, ""]


def http_date() -> str:
    """RFC 9110 5.6.7 IMF-fixdate, recomputed at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    date: str = _date_cache[1]
    return date


def tokens(values: Iterable[str]) -> list[str]:
    """The comma-separated elements of list-based field values (RFC 9110 5.6.1).

    Several field lines are one list (RFC 9110 5.3); empty elements are
    ignored as the ABNF allows.
    """
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip(OWS)
            if part:
                out.append(part)
    return out


def has_token(headers: Headers, name: str, token: str) -> bool:
    """Whether any ``name`` field line lists ``token`` (ASCII case-insensitive)."""
    return lists_token(headers.get_all(name), token)


def lists_token(values: Iterable[str] | None, token: str) -> bool:
    """Whether the list-based field values ``values`` (one per field line, or
    None) hold the lowercase ``token``, ASCII case-insensitively: the same as
    ``any(t.lower() == token for t in tokens(values))``, without building
    the list for the usual single value that is just the token."""
    if values:
        for value in values:
            value = value.lower()
            if value == token:
                return True
            if token in value:
                for part in value.split(","):
                    if part.strip(OWS) == token:
                        return True
    return False


# --------------------------------------------------------------------------
# Incremental readers (httptools underneath)
# --------------------------------------------------------------------------

# Reader states.
_HEAD, _BODY, _DONE, _FAILED = range(4)


def _check_limits(**limits: object) -> None:
    for name, value in limits.items():
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative int, got {value!r}")


class _Reader(Generic[_M]):
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
    on_message_begin: Callable[[], None] | None = None
    on_chunk_header: Callable[[], None] | None = None
    on_chunk_complete: Callable[[], None] | None = None

    # Set to None when done with (or after a failure): typed loosely.
    _parser: Any  # the httptools parser
    _fields: Any  # list of raw (name, value) field lines of the head being read
    _headers: Any  # ... moved here once the head is complete
    _fail: Exception | None
    _result_obj: _M | None
    _block: bytes | None
    _remaining: int | None
    _body: list[bytes]

    if TYPE_CHECKING:  # what the subclasses provide
        def _on_head(self) -> None: ...
        def _result(self) -> _M: ...
        def _malformed(self) -> Exception: ...
        def _head_too_big(self) -> Exception: ...
        def _too_many_headers(self) -> Exception: ...
        def _body_too_big(self) -> Exception: ...

    def __init__(self, max_head: int, max_headers: int, max_body: int) -> None:
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

    def on_header(self, name: bytes, value: bytes) -> None:
        # Once the head is complete, ``_fields`` is a fresh list that only
        # field lines of a message pipelined behind ours land in (dropped).
        self._fields.append((name, value))

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY or self._fail is not None:
            return
        self._body_len += len(body)
        if self._body_len > self.max_body:
            self._fail = self._body_too_big()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Only our message: not an interim 1xx, not one pipelined behind.
        if self._head_done and self._state != _DONE:
            self._complete = True

    # ---- feeding ----

    def feed(self, data: bytes) -> _M | None:
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
            raise self._fail  # type: ignore[misc]  # (always set in _FAILED)
        try:
            return self._feed(bytes(data), 0)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> NoReturn:
        """Go to _FAILED for good and raise the (first) error."""
        self._state = _FAILED
        self._parser = self._fields = self._headers = None
        if self._fail is None:
            self._fail = exc
        raise self._fail from None

    def _feed(self, data: bytes, pos: int) -> _M | None:
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

    def _finish_head(self) -> None:
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

    def _done(self) -> None:
        self._state = _DONE
        self._result_obj = self._result()
        # The parser holds our callbacks, so it and the reader form a cycle:
        # break it now that the parser is done with, for the reader to be
        # freed as soon as it is dropped, without the cyclic collector.
        self._parser = None

    def _content_length(self, headers: Headers) -> int | None:
        """The declared Content-Length (llhttp rejected duplicates/TE+CL)."""
        lengths = headers._fields()[FIELD_CONTENT_LENGTH]
        return None if lengths is None else int(lengths[0])


class RequestReader(_Reader[Request]):
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

    def __init__(self, max_head: int = 8192, max_headers: int = 100, max_body: int = 1048576) -> None:
        _Reader.__init__(self, max_head, max_headers, max_body)
        self._url: list[bytes] = []
        self._parser = httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> Request | None:
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

    def on_url(self, url: bytes) -> None:
        if self._state == _HEAD:
            self._url.append(url)

    def on_headers_complete(self) -> None:
        if self._state == _HEAD:
            self._head_done = True

    def _make_request(self, fields: _RawItems) -> Request:
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

    def _on_head(self) -> None:
        request = self._result_obj = self._make_request(self._headers)
        # llhttp reads no body for an upgrade (httptools tells it to skip it).
        if not self._upgrade and not self._parser.should_upgrade():
            length = self._content_length(request.headers)
            if length is not None:
                if length > self.max_body:
                    raise self._body_too_big()
                self._remaining = length

    def _result(self) -> Request:
        request = self._result_obj
        assert request is not None  # made by _on_head
        if self._body:
            request.body = b"".join(self._body)
        return request

    def _malformed(self) -> Exception:
        return InvalidRequest(400, "Bad Request", body="Malformed HTTP request")

    def _head_too_big(self) -> Exception:
        return InvalidRequest(431, "Request Header Fields Too Large")

    _too_many_headers = _head_too_big

    def _body_too_big(self) -> Exception:
        return InvalidRequest(413, "Content Too Large")


class ResponseReader(_Reader[Response]):
    """Client side: reads the server's answer to the upgrade request.

    ``feed`` returns the ``Response`` as soon as the head of a 101 is complete
    (``leftover`` holds the frames the server sent right behind it); for any
    other status once the body is read (Content-Length or chunked). A body
    delimited by the end of the connection is returned by ``eof()``, which the
    caller invokes when the connection closes. Interim 1xx responses (100,
    103, ...) are skipped (RFC 9110 15.2: a client MUST be able to parse them).
    """

    __slots__ = ("_reason", "_status", "_until_close")

    def __init__(self, max_head: int = 8192, max_headers: int = 100, max_body: int = 65536) -> None:
        _Reader.__init__(self, max_head, max_headers, max_body)
        self._reason: list[bytes] = []
        self._status = 0
        self._until_close = False
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        if self._state == _HEAD:
            # A new response: the previous one was interim.
            self._reason = []
            self._fields = []
            self._head_done = False
            self._complete = False

    def on_status(self, reason: bytes) -> None:
        if self._state == _HEAD:
            self._reason.append(reason)

    def on_headers_complete(self) -> None:
        if self._state != _HEAD:
            return
        status: int = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim response: llhttp completes it and starts over
        self._status = status
        self._head_done = True

    def _on_head(self) -> None:
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
            codings = tokens(headers._fields()[FIELD_TRANSFER_ENCODING] or ())
            if not codings or codings[-1].lower() != "chunked":
                self._until_close = True

    def eof(self) -> Response | None:
        """The connection closed: return the Response whose body ran until
        close, or raise InvalidResponse if the response was incomplete."""
        if self._state == _DONE:
            return self._result_obj
        if self._state == _FAILED:
            raise self._fail  # type: ignore[misc]  # (always set in _FAILED)
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

    def _result(self) -> Response:
        return Response(
            self._status,
            b"".join(self._reason).decode("latin-1"),
            Headers._from_raw(self._headers, self._block),
            b"".join(self._body),
        )

    def _malformed(self) -> Exception:
        return InvalidResponse("malformed HTTP response")

    def _head_too_big(self) -> Exception:
        return InvalidResponse(f"HTTP response head over {self.max_head} bytes")

    def _too_many_headers(self) -> Exception:
        return InvalidResponse(f"HTTP response with more than {self.max_headers} headers")

    def _body_too_big(self) -> Exception:
        return InvalidResponse(f"HTTP response body over {self.max_body} bytes")

def upgrade_fields(request: Request) -> _Fields:
    """``Headers._fields()`` of the request's headers (read once, cached on
    them: is_upgrade_request and check_request share the scan)."""
    headers = request.headers
    if type(headers) is not Headers and not isinstance(headers, Headers):
        headers = Headers(headers)
    fields = headers._ws
    return headers._fields() if fields is None else fields
