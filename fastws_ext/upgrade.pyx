"""The server's handshake short cut, in C loops.

Same API and answers as the pure-Python twin ``fastws._py.upgrade``; nothing
is refused here. llhttp (through httptools) validates the head with no
callback; this module then walks the validated head bytes once: the request
target between ``GET `` and `` HTTP/1.1``, each field line's name (compared
case-insensitively byte by byte against the seven the checks care about) and
value (trimmed by moving two indexes), the Connection token list in place and
the key's 24 characters against the base64 alphabet. No object is made but
the answer (and the exception httptools raises at the end of an upgrade head,
taken with the C API). The 101's Sec-WebSocket-Accept is hashed here too
(SHA-1 of the key and the GUID: always two blocks, the second a constant).
See docs/design/handshake.md#the-fast-path.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Fetch, PyErr_NormalizeException
from cpython.long cimport PyLong_CheckExact
from cpython.ref cimport PyObject, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.stdint cimport uint32_t
from libc.string cimport memchr, memcmp, memcpy, memset, strcmp
from libc.time cimport time, time_t
from fastws_ext.headpack cimport pack_at


cdef extern from "Python.h":
    # No exception check by Cython: NULL with the error set is handled here.
    PyObject* _call_method_1 "PyObject_CallMethodOneArg"(object obj, object name, object arg)
    Py_ssize_t _as_ssize "PyLong_AsSsize_t"(object value)  # -1 and an error: too big
    ctypedef struct _BaseException "PyBaseExceptionObject":
        PyObject* args

__all__ = ["scan_upgrade", "accept_101", "UpgradeReader", "llhttp_direct"]

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
import httptools.parser.parser as _httptools_parser


# ------------------------------------------------------------ llhttp, called directly
# httptools builds llhttp into its parser module, whose shared object exports
# llhttp's C API (llhttp.h). Found there with dlsym, llhttp parses the head
# with no Python object at all: no feed_data call, no buffer request, no
# HttpParserUpgrade raised and caught. The same llhttp validates the same
# bytes, strictly (no lenient flag). Where the module does not export the API
# (a build with hidden symbols), read() calls feed_data as the twin does.

cdef extern from "dlfcn.h" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_NOLOAD

ctypedef void (*_ll_init_t)(void* parser, int kind, const void* settings) noexcept nogil
ctypedef void (*_ll_settings_init_t)(void* settings) noexcept nogil
ctypedef int (*_ll_execute_t)(void* parser, const char* data, size_t length) noexcept nogil
ctypedef unsigned char (*_ll_get_upgrade_t)(void* parser) noexcept nogil
ctypedef const char* (*_ll_error_pos_t)(const void* parser) noexcept nogil
ctypedef const char* (*_ll_errno_name_t)(int err) noexcept nogil

cdef enum:
    _LL_REQUEST = 1            # llhttp_type_t HTTP_REQUEST
    _LL_PAUSED_UPGRADE = 22    # llhttp_errno_t HPE_PAUSED_UPGRADE (checked by name at import)
    _LL_PARSER_WORDS = 32      # room for llhttp_t (about 100 bytes; checked at import)
    _LL_SETTINGS_WORDS = 64    # room for llhttp_settings_t (about 200 bytes; checked at import)

cdef _ll_init_t _ll_init = NULL
cdef _ll_execute_t _ll_execute = NULL
cdef _ll_get_upgrade_t _ll_get_upgrade = NULL
cdef _ll_error_pos_t _ll_error_pos = NULL
cdef unsigned long long _ll_parser[_LL_PARSER_WORDS]
cdef unsigned long long _ll_settings[_LL_SETTINGS_WORDS]   # all callbacks NULL
cdef bint _ll_found = False
cdef bint _ll_direct = False


cdef bint _untouched_tail(unsigned long long* words, int n) noexcept:
    """Whether the last quarter of ``words[:n]`` still holds the fill byte."""
    cdef int i
    for i in range(n - n // 4, n):
        if words[i] != 0xA5A5A5A5A5A5A5A5ULL:
            return False
    return True


cdef bint _find_llhttp(bytes path) noexcept:
    """Look up llhttp's API in the already loaded httptools module at
    ``path``, and check what this module assumes of it: the errno's number
    and that llhttp_t and llhttp_settings_t fit in the room given here."""
    global _ll_init, _ll_execute, _ll_get_upgrade, _ll_error_pos
    cdef void* lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        return False
    cdef _ll_settings_init_t settings_init = <_ll_settings_init_t>dlsym(lib, "llhttp_settings_init")
    cdef _ll_errno_name_t errno_name = <_ll_errno_name_t>dlsym(lib, "llhttp_errno_name")
    _ll_init = <_ll_init_t>dlsym(lib, "llhttp_init")
    _ll_execute = <_ll_execute_t>dlsym(lib, "llhttp_execute")
    _ll_get_upgrade = <_ll_get_upgrade_t>dlsym(lib, "llhttp_get_upgrade")
    _ll_error_pos = <_ll_error_pos_t>dlsym(lib, "llhttp_get_error_pos")
    if (settings_init == NULL or errno_name == NULL or _ll_init == NULL or _ll_execute == NULL
            or _ll_get_upgrade == NULL or _ll_error_pos == NULL):
        return False
    cdef const char* name = errno_name(_LL_PAUSED_UPGRADE)
    if name == NULL or strcmp(name, b"HPE_PAUSED_UPGRADE") != 0:
        return False
    memset(_ll_settings, 0xA5, sizeof(_ll_settings))
    settings_init(_ll_settings)  # memsets its own size to 0
    memset(_ll_parser, 0xA5, sizeof(_ll_parser))
    _ll_init(_ll_parser, _LL_REQUEST, _ll_settings)
    return _untouched_tail(_ll_settings, _LL_SETTINGS_WORDS) and _untouched_tail(_ll_parser, _LL_PARSER_WORDS)


cdef int _llhttp_upgrade_at(const char* s, Py_ssize_t end) noexcept:
    """1 if llhttp reads ``s[:end]`` as a request whose upgrade starts right
    at ``end`` (what feed_data tells with HttpParserUpgrade(end)), else 0.
    A fresh parser each time (a memset), so no state passes between heads."""
    _ll_init(_ll_parser, _LL_REQUEST, _ll_settings)
    if _ll_execute(_ll_parser, s, <size_t>end) != _LL_PAUSED_UPGRADE:
        return 0
    return _ll_get_upgrade(_ll_parser) == 1 and _ll_error_pos(_ll_parser) == s + end


def llhttp_direct(on=None):
    """Whether ``UpgradeReader.read`` calls llhttp's C API directly (found in
    httptools' parser module) rather than httptools' ``feed_data``; ``on``
    False makes it use feed_data from now on, True back to direct calls
    where the API was found. The answers are the same either way."""
    global _ll_direct
    if on is not None:
        _ll_direct = bool(on) and _ll_found
    return _ll_direct


_ll_found = _find_llhttp(_httptools_parser.__file__.encode())
_ll_direct = _ll_found

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


cdef inline Py_ssize_t _head_end(const char* s, Py_ssize_t n, Py_ssize_t max_head) noexcept nogil:
    """``s[:n].find(b"\\r\\n\\r\\n", 0, max_head) + 4`` (-1: not found)."""
    cdef Py_ssize_t limit = max_head
    if limit < 0:  # (as a slice's end)
        limit += n
    if limit > n:
        limit = n
    cdef const char* p = s
    cdef const char* stop = s + limit - 3  # the last place a CR can start the four bytes
    while p < stop:
        p = <const char*>memchr(p, 13, stop - p)
        if p == NULL:
            return -1
        if p[1] == 10 and p[2] == 13 and p[3] == 10:
            return p - s + 4
        p += 1
    return -1


cdef int _upgrade_at(Py_ssize_t end) except -1:
    """The error feed_data raised: 1 if it is httptools' HttpParserUpgrade at
    ``end`` (the upgrade head ends there), 0 for another place or an
    HttpParserError (cleared); anything else stays raised."""
    cdef PyObject* kind
    cdef PyObject* value
    cdef PyObject* tb
    cdef PyObject* args
    cdef PyObject* arg
    cdef Py_ssize_t at = -1
    if not PyErr_ExceptionMatches(HttpParserUpgrade):
        if PyErr_ExceptionMatches(HttpParserError):
            PyErr_Clear()
            return 0
        return -1  # propagates
    PyErr_Fetch(&kind, &value, &tb)
    PyErr_NormalizeException(&kind, &value, &tb)
    if value != NULL:
        args = (<_BaseException*>value).args
        if args != NULL and PyTuple_GET_SIZE(<object>args) > 0:
            arg = PyTuple_GET_ITEM(<object>args, 0)
            if PyLong_CheckExact(<object>arg):
                at = _as_ssize(<object>arg)
    Py_XDECREF(kind)
    Py_XDECREF(value)
    Py_XDECREF(tb)
    if at == -1:
        PyErr_Clear()  # (an offset PyLong_AsSsize_t could not hold)
    return at == end


# ------------------------------------------------------------ the accept key
# RFC 6455 4.2.2: base64(SHA-1(key + GUID)). The key read() gives is always
# 24 bytes, so SHA-1 always hashes 60 bytes: two 64-byte blocks, the second
# one (padding and the length, 480 bits) the same every time, its message
# schedule computed once (_W2). FIPS 180-4 6.1.2; the twin uses CPython's sha1.

cdef const char* _GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
cdef const char* _B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef const char* _ACCEPT_FIELD = b"Sec-WebSocket-Accept: "  # 22 bytes
cdef uint32_t _W2[80]


cdef inline uint32_t _rol(uint32_t x, int n) noexcept nogil:
    return (x << n) | (x >> (32 - n))


cdef inline void _schedule(uint32_t* w) noexcept nogil:
    """w[16:80] from w[:16]."""
    cdef int i
    for i in range(16, 80):
        w[i] = _rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1)


cdef void _compress(uint32_t* st, const uint32_t* w) noexcept nogil:
    """One SHA-1 block, its schedule ``w`` (80 words) done, into ``st``."""
    cdef uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], t
    cdef int i
    for i in range(20):
        t = _rol(a, 5) + ((b & c) | (~b & d)) + e + 0x5A827999u + w[i]
        e = d; d = c; c = _rol(b, 30); b = a; a = t
    for i in range(20, 40):
        t = _rol(a, 5) + (b ^ c ^ d) + e + 0x6ED9EBA1u + w[i]
        e = d; d = c; c = _rol(b, 30); b = a; a = t
    for i in range(40, 60):
        t = _rol(a, 5) + ((b & c) | (b & d) | (c & d)) + e + 0x8F1BBCDCu + w[i]
        e = d; d = c; c = _rol(b, 30); b = a; a = t
    for i in range(60, 80):
        t = _rol(a, 5) + (b ^ c ^ d) + e + 0xCA62C1D6u + w[i]
        e = d; d = c; c = _rol(b, 30); b = a; a = t
    st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e


cdef void _accept_key(const unsigned char* key, unsigned char* out) noexcept nogil:
    """The 28 characters of base64(SHA-1(key[:24] + GUID)) into ``out``."""
    cdef unsigned char block[64]
    cdef unsigned char digest[20]
    cdef uint32_t w[80]
    cdef uint32_t st[5]
    cdef uint32_t v
    cdef int i
    memcpy(block, key, 24)
    memcpy(block + 24, _GUID, 36)
    block[60] = 0x80
    block[61] = block[62] = block[63] = 0
    for i in range(16):
        w[i] = ((<uint32_t>block[4 * i] << 24) | (<uint32_t>block[4 * i + 1] << 16)
                | (<uint32_t>block[4 * i + 2] << 8) | block[4 * i + 3])
    _schedule(w)
    st[0] = 0x67452301u; st[1] = 0xEFCDAB89u; st[2] = 0x98BADCFEu; st[3] = 0x10325476u; st[4] = 0xC3D2E1F0u
    _compress(st, w)
    _compress(st, _W2)
    for i in range(5):
        digest[4 * i] = st[i] >> 24
        digest[4 * i + 1] = (st[i] >> 16) & 0xff
        digest[4 * i + 2] = (st[i] >> 8) & 0xff
        digest[4 * i + 3] = st[i] & 0xff
    for i in range(6):  # 18 bytes: 24 characters
        v = (<uint32_t>digest[3 * i] << 16) | (<uint32_t>digest[3 * i + 1] << 8) | digest[3 * i + 2]
        out[4 * i] = _B64[v >> 18]
        out[4 * i + 1] = _B64[(v >> 12) & 63]
        out[4 * i + 2] = _B64[(v >> 6) & 63]
        out[4 * i + 3] = _B64[v & 63]
    v = (<uint32_t>digest[18] << 16) | (<uint32_t>digest[19] << 8)  # the last 2 bytes: 3 characters and "="
    out[24] = _B64[v >> 18]
    out[25] = _B64[(v >> 12) & 63]
    out[26] = _B64[(v >> 6) & 63]
    out[27] = 61


cdef void _init_w2() noexcept nogil:
    cdef int i
    for i in range(15):
        _W2[i] = 0
    _W2[15] = 480  # the message's length in bits (60 bytes)
    _schedule(_W2)


_init_w2()


def accept_101(bytes key not None, bytes head not None):
    """``head + b"Sec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n"``
    for the 24-byte Sec-WebSocket-Key ``read()`` gave: see the twin."""
    return _accept_101(key, head)


cdef bytes _accept_101(bytes key, bytes head):
    if PyBytes_GET_SIZE(key) != 24:
        raise ValueError("the Sec-WebSocket-Key must be 24 bytes")
    return _accept_101_at(PyBytes_AS_STRING(key), head)


cdef bytes _accept_101_at(const char* key, bytes head):
    """The 101 for the 24 key bytes at ``key``."""
    cdef Py_ssize_t h = PyBytes_GET_SIZE(head)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, h + 22 + 28 + 4)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, PyBytes_AS_STRING(head), h)
    memcpy(o + h, _ACCEPT_FIELD, 22)
    _accept_key(<const unsigned char*>key, <unsigned char*>o + h + 22)
    memcpy(o + h + 50, b"\r\n\r\n", 4)
    return out


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

    # The fields are declared in upgrade.pxd.

    def __init__(self, head=None):
        self._parser = None
        self._head_of = head
        self._head = None
        self._second = -1

    def accept(self, bytes key not None):
        """The 101 for the key ``read()`` gave: see the twin."""
        return _accept_101(key, self._current_head())

    cdef bytes _current_head(self):
        """head(), asked at most once a second."""
        cdef time_t now = time(NULL)
        head = self._head
        if now != self._second or head is None:
            if self._head_of is None:
                raise TypeError("UpgradeReader made without head(): no 101 to answer with")
            head = self._head = self._head_of()
            if type(head) is not bytes:
                self._head = None
                raise TypeError(f"head() gave {type(head).__name__}, not bytes")
            self._second = now
        return <bytes>head

    def read(self, data, Py_ssize_t max_head=8192, Py_ssize_t max_headers=100):
        cdef Py_ssize_t line, key, end
        cdef Py_ssize_t target = self._take(data, max_head, max_headers, &line, &key, &end)
        if target < 0:
            return None
        cdef const char* s = PyBytes_AS_STRING(data)
        return (PyUnicode_DecodeLatin1(s + 4, target - 4, NULL),
                PyBytes_FromStringAndSize(s + line, end - 4 - line),
                PyBytes_FromStringAndSize(s + key, 24),
                PyBytes_FromStringAndSize(s + end, PyBytes_GET_SIZE(data) - end))

    def read_accept(self, data, Py_ssize_t max_head=8192, Py_ssize_t max_headers=100):
        """``read()`` and ``accept()`` in one call: see the twin."""
        cdef Py_ssize_t line, key, end
        cdef Py_ssize_t target = self._take(data, max_head, max_headers, &line, &key, &end)
        if target < 0:
            return None
        cdef const char* s = PyBytes_AS_STRING(data)
        answer = _accept_101_at(s + key, self._current_head())
        return (PyUnicode_DecodeLatin1(s + 4, target - 4, NULL),
                pack_at(s + line, end - 4 - line, None),
                answer,
                PyBytes_FromStringAndSize(s + end, PyBytes_GET_SIZE(data) - end))

    cdef Py_ssize_t _take(self, object data, Py_ssize_t max_head, Py_ssize_t max_headers,
                          Py_ssize_t* line, Py_ssize_t* key, Py_ssize_t* head_end) except -2:
        """The request target's end in ``data`` (its field lines at
        ``line[0]``, the key at ``key[0]``, the head's end at
        ``head_end[0]``) when ``read()`` takes the head; -1 if not (also
        for anything but ``bytes``)."""
        if not PyBytes_CheckExact(data):
            return -1
        cdef bytes buf = <bytes>data
        cdef const char* s = PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t end = _head_end(s, n, max_head)
        cdef Py_ssize_t target
        if end < 0 or n < 4 or memcmp(s, b"GET ", 4) != 0:
            return -1
        if _ll_direct:
            if not _llhttp_upgrade_at(s, end):
                return -1
        else:
            if not self._feed_data(buf if end == n else PyBytes_FromStringAndSize(s, end), end):
                return -1
        target = _scan(<const unsigned char*>s, end, max_headers, line, key)
        if target < 0:
            self._parser = None  # (kept only after a head taken)
            return -1
        head_end[0] = end
        return target

    cdef bint _feed_data(self, bytes head, Py_ssize_t end) except -1:
        """Whether httptools' feed_data(head) raises HttpParserUpgrade(end);
        the parser is kept for the next head then (read() drops it if the
        scan does not take the head)."""
        parser = self._parser
        if parser is None:
            parser = HttpRequestParser(_SILENT)
        else:
            self._parser = None  # kept again below if all goes well
        # parser.feed_data(head), its exception taken in C: no traceback
        # entry or exception state for this frame (what a Cython except
        # clause makes); answers as the twin's try/except.
        cdef PyObject* result = _call_method_1(parser, "feed_data", head)
        if result != NULL:
            Py_XDECREF(result)
            return False  # not an upgrade for llhttp (or a message without one)
        if not _upgrade_at(end):
            return False
        self._parser = parser
        return True

