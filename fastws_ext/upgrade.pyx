"""The server's handshake short cut, in C loops.

Same API and answers as the pure-Python twin ``fastws._py.upgrade``; nothing
is refused here. llhttp (through httptools) validates the head with no
callback; this module then walks the validated head bytes once: the request
target between ``GET `` and `` HTTP/1.1``, each field line's name (compared
case-insensitively byte by byte against the seven the checks care about) and
value (trimmed by moving two indexes), the Connection token list in place and
the key's 24 characters against the base64 alphabet. No object is made but
the answer.
See docs/design/handshake.md#the-fast-path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1

__all__ = ["scan_upgrade", "UpgradeReader"]

from libc.string cimport memcmp, memchr

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

# Indexes of the checked names.
cdef enum:
    HOST = 0
    UPGRADE = 1
    CONNECTION = 2
    KEY = 3
    VERSION = 4
    CONTENT_LENGTH = 5
    TRANSFER_ENCODING = 6
    NAMES = 7


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    if c >= 65 and c <= 90:  # A-Z
        return c + 32
    return c


cdef inline bint _ieq(const unsigned char* s, Py_ssize_t n, const char* lower, Py_ssize_t m) noexcept nogil:
    """s[:n], ASCII-lowercased, == lower[:m]."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if _lower(s[i]) != <unsigned char>lower[i]:
            return False
    return True


cdef inline int _which(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """The index of a checked name, or -1."""
    if n == 4:
        return HOST if _ieq(s, n, b"host", 4) else -1
    if n == 7:
        return UPGRADE if _ieq(s, n, b"upgrade", 7) else -1
    if n == 10:
        return CONNECTION if _ieq(s, n, b"connection", 10) else -1
    if n == 17:
        if _ieq(s, n, b"sec-websocket-key", 17):
            return KEY
        return TRANSFER_ENCODING if _ieq(s, n, b"transfer-encoding", 17) else -1
    if n == 21:
        return VERSION if _ieq(s, n, b"sec-websocket-version", 21) else -1
    if n == 14:
        return CONTENT_LENGTH if _ieq(s, n, b"content-length", 14) else -1
    return -1


cdef inline bint _ows(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline bint _b64(unsigned char c) noexcept nogil:
    return (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 43 or c == 47


cdef inline void _strip(const unsigned char* s, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Narrow s[a:b] to its span without surrounding OWS (spaces and tabs)."""
    while a[0] < b[0] and _ows(s[a[0]]):
        a[0] += 1
    while b[0] > a[0] and _ows(s[b[0] - 1]):
        b[0] -= 1


cdef inline bint _lists_upgrade(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Whether the comma list s[:n] holds the token upgrade (any case)."""
    cdef Py_ssize_t start = 0, end, a, b
    while start <= n:
        end = start
        while end < n and s[end] != 44:  # ','
            end += 1
        a, b = start, end
        _strip(s, &a, &b)
        if _ieq(s + a, b - a, b"upgrade", 7):
            return True
        start = end + 1
    return False


cdef Py_ssize_t _scan(const unsigned char* h, Py_ssize_t n, Py_ssize_t max_headers,
                      Py_ssize_t* line, Py_ssize_t* key) noexcept nogil:
    """scan_upgrade on h[:n]: the end of the request target (> 4), with the
    start of the field lines in ``line`` and the key's offset in ``key``;
    or -1 (not taken)."""
    cdef Py_ssize_t i, pos, colon, cr, a, b, count = 0
    cdef Py_ssize_t starts[NAMES]
    cdef Py_ssize_t ends[NAMES]
    cdef int which
    # The request line: GET, one space, a target of visible ASCII, " HTTP/1.1".
    if n < 18 or memcmp(h, b"GET ", 4) != 0 or memcmp(h + n - 4, b"\r\n\r\n", 4) != 0:
        return -1
    cr = 4
    while h[cr] != 13:  # a CR ends the head (n > cr)
        cr += 1
    if cr < 14 or h[cr + 1] != 10 or memcmp(h + cr - 9, b" HTTP/1.1", 9) != 0:
        return -1
    for i in range(4, cr - 9):
        if h[i] < 0x21 or h[i] > 0x7e:
            return -1
    line[0] = cr
    for i in range(NAMES):
        starts[i] = -1
    # The field lines: name ":" value CRLF, up to the empty line at n - 2.
    pos = cr + 2
    while pos < n - 2:
        colon = pos
        while h[colon] != 58:  # ':' (the head ends with CRLF CRLF: a CR or LF comes first if none)
            if h[colon] == 32 or h[colon] == 9 or h[colon] == 13 or h[colon] == 10:
                return -1
            colon += 1
        if colon == pos:
            return -1
        cr = colon + 1
        while h[cr] != 13:
            if h[cr] == 10:
                return -1
            cr += 1
        if h[cr + 1] != 10:
            return -1
        count += 1
        if count > max_headers:
            return -1
        which = _which(h + pos, colon - pos)
        if which >= 0:
            if starts[which] >= 0:
                return -1
            a, b = colon + 1, cr
            _strip(h, &a, &b)
            starts[which] = a
            ends[which] = b
        pos = cr + 2
    if pos != n - 2:
        return -1
    if (starts[HOST] < 0 or starts[UPGRADE] < 0 or starts[CONNECTION] < 0
            or starts[KEY] < 0 or starts[VERSION] < 0
            or starts[CONTENT_LENGTH] >= 0 or starts[TRANSFER_ENCODING] >= 0):
        return -1
    # Host: not empty once stripped
    if starts[HOST] == ends[HOST]:
        return -1
    # Upgrade: websocket
    if not _ieq(h + starts[UPGRADE], ends[UPGRADE] - starts[UPGRADE], b"websocket", 9):
        return -1
    # Sec-WebSocket-Version: 13
    a = starts[VERSION]
    if ends[VERSION] - a != 2 or h[a] != 49 or h[a + 1] != 51:
        return -1
    # Connection: lists upgrade
    if not _lists_upgrade(h + starts[CONNECTION], ends[CONNECTION] - starts[CONNECTION]):
        return -1
    # Sec-WebSocket-Key: 22 base64 characters and "==" (what a2b_base64 in
    # strict mode decodes to 16 bytes from 24 characters)
    a = starts[KEY]
    if ends[KEY] - a != 24 or h[a + 22] != 61 or h[a + 23] != 61:
        return -1
    for i in range(a, a + 22):
        if not _b64(h[i]):
            return -1
    key[0] = a
    return line[0] - 9


def scan_upgrade(bytes head not None, Py_ssize_t max_headers):
    """``(path, packed, key)`` for a head that needs no more checking than
    the origin policy, or None (the general way decides): see the twin."""
    cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head), line, key
    cdef Py_ssize_t target = _scan(h, n, max_headers, &line, &key)
    if target < 0:
        return None
    return (PyUnicode_DecodeLatin1(<const char*>h + 4, target - 4, NULL),
            PyBytes_FromStringAndSize(<const char*>h + line, n - 4 - line),
            PyBytes_FromStringAndSize(<const char*>h + key, 24))


class _Silent:
    """What httptools calls back: nothing (it reads each callback with
    getattr once per parser; None: llhttp gets none)."""

    __slots__ = ()
    on_url = on_header = on_headers_complete = on_message_begin = on_message_complete = None
    on_body = on_chunk_header = on_chunk_complete = None


_SILENT = _Silent()


cdef class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first
    read: see the twin ``fastws._py.upgrade.UpgradeReader`` (same API and
    answers); here the glue around llhttp runs without a Python frame and
    the answer is the only object made besides the exception httptools
    raises at the end of an upgrade head."""

    # The field is declared in upgrade.pxd.

    def __init__(self):
        self._parser = None

    def read(self, data, Py_ssize_t max_head=8192, Py_ssize_t max_headers=100):
        if not PyBytes_CheckExact(data):
            return None
        cdef bytes buf = <bytes>data
        cdef const char* s = PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t end = buf.find(b"\r\n\r\n", 0, max_head) + 4
        if end < 4 or n < 4 or memcmp(s, b"GET ", 4) != 0:
            return None
        cdef bytes head = buf if end == n else PyBytes_FromStringAndSize(s, end)
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
        cdef Py_ssize_t line, key
        cdef Py_ssize_t target = _scan(<const unsigned char*>s, end, max_headers, &line, &key)
        if target < 0:
            return None
        self._parser = parser
        return (PyUnicode_DecodeLatin1(s + 4, target - 4, NULL),
                PyBytes_FromStringAndSize(s + line, end - 4 - line),
                PyBytes_FromStringAndSize(s + key, 24),
                PyBytes_FromStringAndSize(s + end, n - end))
