"""The checks of the server's handshake short cut, in C loops.

Same API and answers as the pure-Python twin ``fastws._py.upgrade``; nothing
is refused here. This module reads the head and the field dict llhttp filled
(through httptools) without making a copy per field: names are compared
case-insensitively byte by byte against the seven it cares about, values are
trimmed by moving two indexes, the Connection token list is walked in place
and the key's 24 characters are checked against the base64 alphabet.
See docs/design/handshake.md#the-fast-path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_Next
from cpython.object cimport PyObject

__all__ = ["scan_upgrade", "UpgradeReader"]

from libc.string cimport memcmp

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


cdef inline const unsigned char* _stripped(object value, Py_ssize_t* a, Py_ssize_t* b) noexcept:
    """The bytes of field value ``value``, with [a, b) its span without OWS."""
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(value)
    a[0] = 0
    b[0] = PyBytes_GET_SIZE(value)
    _strip(s, a, b)
    return s


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


def scan_upgrade(bytes head not None, dict fields not None, Py_ssize_t max_headers):
    """The Sec-WebSocket-Key (bytes, OWS stripped) of a head that needs no
    more checking than the origin policy, or None (the general way decides)."""
    cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head), i, line = -1, crlf = 0
    cdef Py_ssize_t count = len(fields)
    for i in range(n - 1):
        if h[i] == 13 and h[i + 1] == 10:
            crlf += 1
            if line < 0:
                line = i
    if line < 9 or count != crlf - 2 or count > max_headers:
        return None
    if memcmp(h + line - 9, b" HTTP/1.1", 9) != 0:
        return None
    cdef PyObject* values[NAMES]
    for i in range(NAMES):
        values[i] = NULL
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef int which
    while PyDict_Next(fields, &pos, &k, &v):
        if not PyBytes_CheckExact(<object>k) or not PyBytes_CheckExact(<object>v):
            return None
        which = _which(<const unsigned char*>PyBytes_AS_STRING(<object>k), PyBytes_GET_SIZE(<object>k))
        if which >= 0:
            if values[which] != NULL:
                return None
            values[which] = v
    if (values[HOST] == NULL or values[UPGRADE] == NULL or values[CONNECTION] == NULL
            or values[KEY] == NULL or values[VERSION] == NULL
            or values[CONTENT_LENGTH] != NULL or values[TRANSFER_ENCODING] != NULL):
        return None
    cdef const unsigned char* s
    cdef Py_ssize_t a, b
    # Host: not empty once stripped
    _stripped(<object>values[HOST], &a, &b)
    if a == b:
        return None
    # Upgrade: websocket
    s = _stripped(<object>values[UPGRADE], &a, &b)
    if not _ieq(s + a, b - a, b"websocket", 9):
        return None
    # Sec-WebSocket-Version: 13
    s = _stripped(<object>values[VERSION], &a, &b)
    if b - a != 2 or s[a] != 49 or s[a + 1] != 51:
        return None
    # Connection: lists upgrade
    if not _lists_upgrade(<const unsigned char*>PyBytes_AS_STRING(<object>values[CONNECTION]),
                          PyBytes_GET_SIZE(<object>values[CONNECTION])):
        return None
    # Sec-WebSocket-Key: 22 base64 characters and "==" (what a2b_base64 in
    # strict mode decodes to 16 bytes from 24 characters)
    s = _stripped(<object>values[KEY], &a, &b)
    if b - a != 24 or s[a + 22] != 61 or s[a + 23] != 61:
        return None
    for i in range(a, a + 22):
        if not _b64(s[i]):
            return None
    if a == 0 and b == PyBytes_GET_SIZE(<object>values[KEY]):
        return <object>values[KEY]
    return PyBytes_FromStringAndSize(<const char*>s + a, 24)


cdef class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first
    read: see the twin ``fastws._py.upgrade.UpgradeReader`` (same API and
    answers); here the glue around llhttp runs without a Python frame."""

    # httptools reads its callbacks with getattr(): on_url and on_header, the
    # others absent. The fields are declared in upgrade.pxd.

    def __init__(self, request_cls, headers_cls):
        self._fields = {}
        self._url = []
        self.on_header = self._fields.__setitem__
        self.on_url = self._url.append
        self._parser = None
        self._request_cls = request_cls
        self._headers_cls = headers_cls

    def read(self, data, Py_ssize_t max_head=8192, Py_ssize_t max_headers=100):
        if not PyBytes_CheckExact(data):
            return None
        cdef bytes buf = <bytes>data
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t end = buf.find(b"\r\n\r\n", 0, max_head) + 4
        if end < 4 or n < 4 or memcmp(PyBytes_AS_STRING(buf), b"GET ", 4) != 0:
            return None
        cdef bytes head = buf if end == n else buf[:end]
        parser = self._parser
        if parser is None:
            parser = HttpRequestParser(self)
        else:
            self._parser = None  # kept again below if all goes well
        self._fields.clear()
        del self._url[:]
        try:
            parser.feed_data(head)
            return None  # not an upgrade for llhttp (or a message without one)
        except HttpParserUpgrade as exc:
            if exc.args[0] != end:
                return None
        except HttpParserError:
            return None
        cdef dict fields = self._fields.copy()
        key = scan_upgrade(head, fields, max_headers)
        if key is None:
            return None
        self._parser = parser
        cdef list url = self._url
        cdef Py_ssize_t line = head.find(b"\r\n")
        request = self._request_cls.__new__(self._request_cls)
        request.method = "GET"
        request.path = (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1")
        request.headers = self._headers_cls._from_raw(fields.items(), head[line:end - 4])
        request.version = "1.1"
        request.body = b""
        return request, buf[end:], key
