"""The checks of the server's handshake short cut: the pure-Python twin of fastws_ext.upgrade.

``fastws.handshake.UpgradeReader`` has llhttp (httptools) parse the head of
the first read, its field lines stored in a dict; ``scan_upgrade`` then says
whether every check of ``check_request`` before the origin policy passes on
it, reading the few values it needs as bytes. It never refuses anything: a
None sends the same bytes the general way (``RequestReader`` +
``check_request``), which decides. The Cython module does the same checks in
C loops (no ``lower()``, ``strip()``, ``split()`` copies); the tests hold the
two to the same answers.
See docs/design/handshake.md#the-fast-path.
"""
from __future__ import annotations

from binascii import Error as _Base64Error
from binascii import a2b_base64

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

__all__ = ["scan_upgrade", "UpgradeReader"]

_OWS = b" \t"
# The field names the checks read or refuse (lowercase).
_CHECKED = frozenset((
    b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version",
    b"content-length", b"transfer-encoding",
))


def scan_upgrade(head: bytes, fields: dict, max_headers: int):
    """The Sec-WebSocket-Key (bytes, OWS stripped) of a head that needs no
    more checking than the origin policy, or None (the general way decides).

    ``head``: the request head, from the request line to the CRLF CRLF that
    ends it, as llhttp parsed it (an upgrade); ``fields``: its field lines,
    name -> value as llhttp gave them (bytes; the value's leading OWS
    skipped). The answer is the key when

    - every field line is in ``fields`` (no name twice with the same
      spelling: a dict keeps one), at most ``max_headers`` of them;
    - the request line ends with `` HTTP/1.1``;
    - Host, Upgrade, Connection, Sec-WebSocket-Key and Sec-WebSocket-Version
      each appear once, in any case, and none of them, Content-Length or
      Transfer-Encoding twice in different cases;
    - no Content-Length and no Transfer-Encoding;
    - Host is not empty, Upgrade is ``websocket`` (any case),
      Connection lists ``upgrade`` (any case, comma list),
      Sec-WebSocket-Version is ``13``, Sec-WebSocket-Key is 24 characters of
      base64 decoding to 16 bytes (values OWS-stripped).
    """
    line = head.index(b"\r\n")
    count = len(fields)
    if count != head.count(b"\r\n") - 2 or count > max_headers or head[line - 9:line] != b" HTTP/1.1":
        return None
    found = {}
    for name, value in fields.items():
        name = name.lower()
        if name in _CHECKED:
            if name in found:
                return None
            found[name] = value
    get = found.get
    host = get(b"host")
    upgrade = get(b"upgrade")
    connection = get(b"connection")
    version = get(b"sec-websocket-version")
    key = get(b"sec-websocket-key")
    if (
        host is None or not host.strip(_OWS) or upgrade is None or connection is None
        or version is None or key is None
        or b"content-length" in found or b"transfer-encoding" in found
        or upgrade.strip(_OWS).lower() != b"websocket"
        or version.strip(_OWS) != b"13"
        or b"upgrade" not in [part.strip(_OWS) for part in connection.lower().split(b",")]
    ):
        return None
    key = key.strip(_OWS)
    if len(key) != 24:
        return None
    try:
        if len(a2b_base64(key, strict_mode=True)) != 16:
            return None
    except (_Base64Error, ValueError):
        return None
    return key


class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first
    read (``fastws.handshake.upgrade_reader()`` makes one per server, with
    the handshake's Request and Headers classes).

    ``read(data, max_head, max_headers)`` returns ``(request, leftover,
    key)`` when llhttp parsed the head up to the first CRLF CRLF of ``data``
    as an upgrade and ``scan_upgrade`` takes it, the request being the one
    ``RequestReader(max_head, max_headers).feed(data)`` returns; else None
    (the general way reads the same bytes and decides).

    llhttp (httptools) calls back bound methods of a dict and a list (C
    calls, no Python frame per field line); the other callbacks are off.
    The parser is kept from head to head: after a head it took, llhttp is at
    the start of a new message (httptools resumes it after an upgrade),
    where parsing the next connection's head is what a fresh parser does;
    after anything else it is dropped and the next head gets a new one. One
    reader per event loop: it is not shared between threads.
    """

    __slots__ = ("on_url", "on_header", "_parser", "_fields", "_url", "_request_cls", "_headers_cls")
    on_message_begin = on_headers_complete = on_message_complete = None
    on_body = on_chunk_header = on_chunk_complete = None

    def __init__(self, request_cls, headers_cls):
        fields = self._fields = {}
        url = self._url = []
        self.on_header = fields.__setitem__
        self.on_url = url.append
        self._parser = None
        self._request_cls = request_cls
        self._headers_cls = headers_cls

    def read(self, data: bytes, max_head: int = 8192, max_headers: int = 100):
        if type(data) is not bytes:
            return None
        end = data.find(b"\r\n\r\n", 0, max_head) + 4
        if end < 4 or data[:4] != b"GET ":
            return None
        head = data if end == len(data) else data[:end]
        parser = self._parser
        if parser is None:
            parser = HttpRequestParser(self)
        else:
            self._parser = None  # kept again below if all goes well
        self._fields.clear()
        self._url.clear()
        try:
            parser.feed_data(head)
            return None  # not an upgrade for llhttp (or a message without one)
        except HttpParserUpgrade as exc:
            if exc.args[0] != end:
                return None
        except HttpParserError:
            return None
        fields = self._fields.copy()
        key = scan_upgrade(head, fields, max_headers)
        if key is None:
            return None
        self._parser = parser
        url = self._url
        request = self._request_cls.__new__(self._request_cls)
        request.method = "GET"
        request.path = (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1")
        request.headers = self._headers_cls._from_raw(fields.items(), head[head.index(b"\r\n"):end - 4])
        request.version = "1.1"
        request.body = b""
        return request, data[end:], key
