"""The server's handshake short cut: the pure-Python twin of fastws_ext.upgrade.

``UpgradeReader`` has llhttp (httptools) parse and validate the head of the
first read with no callback at all; ``scan_upgrade`` then finds, in the
validated head bytes, the request target and the few field values the checks
need, and says whether every check of ``check_request`` before the origin
policy passes. It never refuses anything: a None sends the same bytes the
general way (``RequestReader`` + ``check_request``), which decides. The
Cython module does the same in C loops (no ``split()``, ``lower()``,
``strip()`` copies); the tests hold the two to the same answers.
See docs/design/handshake.md#the-fast-path.
"""
from __future__ import annotations

import hashlib
import time
from binascii import Error as _Base64Error
from binascii import a2b_base64, b2a_base64

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from .headpack import pack_lines

try:  # CPython's own SHA-1: the same digest without OpenSSL's per-call set-up
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - other interpreters
    _sha1 = hashlib.sha1

__all__ = ["scan_upgrade", "accept_101", "UpgradeReader", "llhttp_direct"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3

_OWS = b" \t"
# The field names the checks read or refuse (lowercase).
_CHECKED = frozenset((
    b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version",
    b"content-length", b"transfer-encoding",
))
# Bytes no name, request target or (after the split on CRLF) line holds.
_NOT_IN_NAME = frozenset(b" \t\r\n")
_VISIBLE = bytes(range(0x21, 0x7F))  # RFC 9112 3.2: the request target, visible ASCII


def scan_upgrade(head: bytes, max_headers: int):
    """``(path, packed, key)`` for a head that needs no more checking than
    the origin policy, or None (the general way decides).

    ``head``: a request head as llhttp validated it (an upgrade), from the
    request line to the first CRLF CRLF, which ends it. The answer is

    - ``path``: the request target (str, latin-1), what ``Request.path`` is;
    - ``packed``: the field lines as received, each preceded by CRLF
      (``head[line:-4]``), what ``Headers.pack()`` gives for the request the
      general way reads (``Headers.unpack`` makes its headers);
    - ``key``: the Sec-WebSocket-Key (bytes, OWS stripped);

    when

    - the request line is ``GET``, one space, a target of visible ASCII,
      `` HTTP/1.1``;
    - every field line is ``name:value`` with a name of neither space, tab,
      CR nor LF, the line not starting with a space or tab (no obs-fold), at
      most ``max_headers`` of them;
    - Host, Upgrade, Connection, Sec-WebSocket-Key and Sec-WebSocket-Version
      each appear once, in any case, and none of them, Content-Length or
      Transfer-Encoding twice;
    - no Content-Length and no Transfer-Encoding;
    - Host is not empty, Upgrade is ``websocket`` (any case),
      Connection lists ``upgrade`` (any case, comma list),
      Sec-WebSocket-Version is ``13``, Sec-WebSocket-Key is 24 characters of
      base64 decoding to 16 bytes (values OWS-stripped).

    llhttp has already refused what is not HTTP; these rules only make sure
    that the spans found here are the ones llhttp found.
    """
    line = head.find(b"\r\n")
    if line < 14 or head[:4] != b"GET " or head[line - 9:line] != b" HTTP/1.1" or head[-4:] != b"\r\n\r\n":
        return None
    target = head[4:line - 9]
    if target.strip(_VISIBLE):
        return None
    packed = head[line:-4]
    lines = packed[2:].split(b"\r\n") if packed else []
    if len(lines) > max_headers:
        return None
    found = {}
    for field in lines:
        name, colon, value = field.partition(b":")
        if not colon or not name or not _NOT_IN_NAME.isdisjoint(name) or b"\r" in value or b"\n" in value:
            return None
        name = name.lower()
        if name in _CHECKED:
            if name in found:
                return None
            found[name] = value.strip(_OWS)
    get = found.get
    host = get(b"host")
    upgrade = get(b"upgrade")
    connection = get(b"connection")
    version = get(b"sec-websocket-version")
    key = get(b"sec-websocket-key")
    if (
        not host or upgrade is None or connection is None or version is None or key is None
        or b"content-length" in found or b"transfer-encoding" in found
        or upgrade.lower() != b"websocket"
        or version != b"13"
        or b"upgrade" not in [part.strip(_OWS) for part in connection.lower().split(b",")]
        or len(key) != 24
    ):
        return None
    try:
        if len(a2b_base64(key, strict_mode=True)) != 16:
            return None
    except (_Base64Error, ValueError):
        return None
    return target.decode("latin-1"), packed, key


def accept_101(key: bytes, head: bytes) -> bytes:
    """``head + b"Sec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n"``, where
    ``accept`` is base64(SHA-1(key + GUID)) (RFC 6455 4.2.2) of the 24-byte
    Sec-WebSocket-Key ``read()`` gave (ValueError for another length) and
    ``head`` the 101's start (status line and fields, each ending in CRLF).
    The Cython twin hashes in C (the key is always 24 bytes: SHA-1 of 60
    bytes, two blocks, the second always the same)."""
    if type(key) is not bytes or type(head) is not bytes:
        raise TypeError("accept_101(key, head) takes bytes")
    if len(key) != 24:
        raise ValueError("the Sec-WebSocket-Key must be 24 bytes")
    return b"%sSec-WebSocket-Accept: %s\r\n\r\n" % (head, b2a_base64(_sha1(key + _GUID).digest(), newline=False))


class _Silent:
    """What httptools calls back: nothing (it reads each callback with
    getattr once per parser; absent or None, llhttp gets none)."""

    __slots__ = ()
    on_url = on_header = on_headers_complete = on_message_begin = on_message_complete = None
    on_body = on_chunk_header = on_chunk_complete = None


_SILENT = _Silent()


def llhttp_direct(on=None) -> bool:
    """Always False here: the twin calls httptools' ``feed_data`` (the
    extension may call llhttp's C API directly, with the same answers)."""
    return False


class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first
    read (``fastws.handshake.upgrade_reader()`` makes one per server).

    ``read(data, max_head, max_headers)`` returns ``(path, packed, key,
    leftover)`` when llhttp parsed the head up to the first CRLF CRLF of
    ``data`` as an upgrade and ``scan_upgrade`` takes it; else None (the
    general way reads the same bytes and decides). ``path`` and ``packed``
    are the request's target and ``Headers.pack()``;
    ``fastws.handshake.quick_request(path, packed)`` makes the ``Request``
    that ``RequestReader(max_head, max_headers).feed(data)`` returns.

    llhttp runs with no callback (no Python call, no ``bytes`` per field
    line): it only validates. The parser is kept from head to head: after a
    head it took, llhttp is at the start of a new message (httptools resumes
    it after an upgrade), where parsing the next connection's head is what a
    fresh parser does; after anything else it is dropped and the next head
    gets a new one. One reader per event loop: it is not shared between
    threads.
    """

    __slots__ = ("_parser", "_head_of", "_head", "_second")

    def __init__(self, head=None) -> None:
        self._parser = None
        self._head_of = head  # head(): the start of the 101 (status line, Date, ...)
        self._head = None  # its latest answer, made in second _second
        self._second = -1

    def accept(self, key: bytes) -> bytes:
        """``accept_101(key, head())`` for the key ``read()`` gave, with
        ``head()`` (the constructor's argument: the 101's start, with its
        Date) called at most once a second."""
        now = int(time.time())
        head = self._head
        if now != self._second or head is None:
            if self._head_of is None:
                raise TypeError("UpgradeReader made without head(): no 101 to answer with")
            head = self._head = self._head_of()
            if type(head) is not bytes:
                self._head = None
                raise TypeError(f"head() gave {type(head).__name__}, not bytes")
            self._second = now
        return accept_101(key, head)

    def read_accept(self, data: bytes, max_head: int = 8192, max_headers: int = 100):
        """``read()`` and ``accept()`` in one call, for a server with nothing
        to check beyond what ``read()`` checks: ``(path, packed, answer,
        leftover)``, where ``packed`` is ``pack_lines`` of read()'s field
        lines and ``answer`` the 101; or None (the general way decides). The
        Cython build makes neither the key nor the field lines' bytes."""
        found = self.read(data, max_head, max_headers)
        if found is None:
            return None
        path, lines, key, leftover = found
        answer = self.accept(key)
        return path, pack_lines(lines), answer, leftover

    def read(self, data: bytes, max_head: int = 8192, max_headers: int = 100):
        if type(data) is not bytes:
            return None
        end = data.find(b"\r\n\r\n", 0, max_head) + 4
        if end < 4 or data[:4] != b"GET ":
            return None
        head = data if end == len(data) else data[:end]
        parser = self._parser
        if parser is None:
            parser = HttpRequestParser(_SILENT)
        else:
            self._parser = None  # kept again below if all goes well
        try:
            parser.feed_data(head)
            return None  # not an upgrade for llhttp (or a message without one)
        except HttpParserUpgrade as exc:
            if exc.args[0] != end:
                return None
        except HttpParserError:
            return None
        found = scan_upgrade(head, max_headers)
        if found is None:
            return None
        self._parser = parser
        path, packed, key = found
        return path, packed, key, data[end:]
