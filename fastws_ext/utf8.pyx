"""Incremental UTF-8 validation (RFC 3629), as RFC 6455 requires of text.

A text message may be fragmented and a code point may straddle two frames,
so the validator keeps its state between calls and fails on the first byte
after which no valid continuation exists (RFC 6455 5.6, 8.1). It is a
deterministic automaton over the grammar of RFC 3629 4 (overlong forms,
surrogates and code points above U+10FFFF are rejected by construction),
with two speed tricks that change no decision: an ASCII fast path (32 then 8
bytes at a time) and "shift" transition rows, ``state = ROWS[byte] >> (state
& 63)``. The C surface (``Utf8Validator.feed_ptr``, ``utf8_valid``) is
declared in utf8.pxd and cimported by frames.pyx; the twin is fastws._py.utf8.
See docs/design/codec.md#utf-8.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

# Above this many bytes, feed() and validate_utf8() release the GIL.
cdef Py_ssize_t NOGIL_THRESHOLD = 64 * 1024

# -- The automaton ----------------------------------------------------------

# States, as bit offsets into a transition row (6 bits each, 9 states = 54 bits).
cdef enum:
    UTF8_ACCEPT = 0   # at a code point boundary
    UTF8_REJECT = 6   # no valid continuation exists; absorbing
    NEED_1 = 12       # one UTF8-tail to go
    NEED_2 = 18       # two UTF8-tails to go
    NEED_3 = 24       # three UTF8-tails to go
    AFTER_E0 = 30     # %xE0, needs %xA0-BF (else overlong)
    AFTER_ED = 36     # %xED, needs %x80-9F (else a surrogate)
    AFTER_F0 = 42     # %xF0, needs %x90-BF (else overlong)
    AFTER_F4 = 48     # %xF4, needs %x80-8F (else above U+10FFFF)

# Byte classes: (first, last) byte of each range of RFC 3629 4 and, for each
# state that the class does not reject, the state it leads to.
_CLASSES = (
    # %x00-7F: UTF8-1
    ((0x00, 0x7F), {UTF8_ACCEPT: UTF8_ACCEPT}),
    # UTF8-tail, split where E0/ED/F0/F4 restrict their second byte
    ((0x80, 0x8F), {NEED_1: UTF8_ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2,
                    AFTER_ED: NEED_1, AFTER_F4: NEED_2}),
    ((0x90, 0x9F), {NEED_1: UTF8_ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2,
                    AFTER_ED: NEED_1, AFTER_F0: NEED_2}),
    ((0xA0, 0xBF), {NEED_1: UTF8_ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2,
                    AFTER_E0: NEED_1, AFTER_F0: NEED_2}),
    # %xC0-C1 would be overlong, %xF5-FF above U+10FFFF: never valid
    ((0xC0, 0xC1), {}),
    ((0xF5, 0xFF), {}),
    # lead bytes, only at a boundary
    ((0xC2, 0xDF), {UTF8_ACCEPT: NEED_1}),
    ((0xE0, 0xE0), {UTF8_ACCEPT: AFTER_E0}),
    ((0xE1, 0xEC), {UTF8_ACCEPT: NEED_2}),
    ((0xED, 0xED), {UTF8_ACCEPT: AFTER_ED}),
    ((0xEE, 0xEF), {UTF8_ACCEPT: NEED_2}),
    ((0xF0, 0xF0), {UTF8_ACCEPT: AFTER_F0}),
    ((0xF1, 0xF3), {UTF8_ACCEPT: NEED_3}),
    ((0xF4, 0xF4), {UTF8_ACCEPT: AFTER_F4}),
)
_STATES = (UTF8_ACCEPT, UTF8_REJECT, NEED_1, NEED_2, NEED_3,
           AFTER_E0, AFTER_ED, AFTER_F0, AFTER_F4)

cdef uint64_t ROWS[256]


cdef void _build_rows() except *:
    cdef uint64_t row
    cdef int byte
    seen = set()
    for (first, last), goes_to in _CLASSES:
        row = 0
        for state in _STATES:
            row |= (<uint64_t>goes_to.get(state, UTF8_REJECT)) << <int>state
        for byte in range(first, last + 1):
            ROWS[byte] = row
            seen.add(byte)
    assert len(seen) == 256, "byte classes must cover 00-FF"


_build_rows()


cdef inline uint32_t _run(uint32_t state, const unsigned char* data,
                          Py_ssize_t length) noexcept nogil:
    """Advance the automaton from ``state`` over data[0:length]; the new state.

    Returns UTF8_REJECT as soon as it is reached (it is absorbing)."""
    cdef uint64_t s = state
    cdef uint64_t w0, w1, w2, w3
    cdef uint64_t HIGH_BITS = 0x8080808080808080ULL   # the high bit of every byte
    cdef Py_ssize_t i = 0
    cdef int k
    while i < length:
        if s == UTF8_ACCEPT:
            # RFC 3629 3: "US-ASCII characters are encoded in one octet having
            # the normal US-ASCII value" (high bit 0): skip whole words of them.
            while i + 32 <= length:
                memcpy(&w0, data + i, 8)
                memcpy(&w1, data + i + 8, 8)
                memcpy(&w2, data + i + 16, 8)
                memcpy(&w3, data + i + 24, 8)
                if (w0 | w1 | w2 | w3) & HIGH_BITS:
                    break
                i += 32
            while i + 8 <= length:
                memcpy(&w0, data + i, 8)
                if w0 & HIGH_BITS:
                    break
                i += 8
            if i == length:
                break
        # A block of 16 single steps (fixed count: gcc unrolls it), then look
        # at the state again.
        if length - i >= 16:
            for k in range(16):
                s = ROWS[data[i + k]] >> (s & 63)
            i += 16
        else:
            while i < length:
                s = ROWS[data[i]] >> (s & 63)
                i += 1
        s &= 63
        if s == UTF8_REJECT:
            break
    return <uint32_t>s


cdef bint utf8_valid(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    return _run(UTF8_ACCEPT, data, length) == UTF8_ACCEPT


# -- Python API -------------------------------------------------------------

cdef str _describe(obj):
    """Why ``obj`` is not a C-contiguous bytes-like object (slow path only)."""
    try:
        view = memoryview(obj)
    except TypeError:
        return f"a bytes-like object is required, not {type(obj).__name__!r}"
    with view:
        if not view.c_contiguous:
            return "a C-contiguous buffer is required"
    return f"cannot get a buffer from {type(obj).__name__!r}"


cdef int _get_buffer(obj, Py_buffer* view) except -1:
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except (TypeError, BufferError, ValueError):
        raise TypeError(_describe(obj)) from None
    return 0


cdef class Utf8Validator:
    """Incremental UTF-8 validator for one text message (RFC 3629)."""

    def __cinit__(self):
        self.state = UTF8_ACCEPT

    def __init__(self):
        pass

    cdef bint feed_ptr(self, const unsigned char* data, Py_ssize_t length) noexcept nogil:
        if self.state == UTF8_REJECT:
            return False
        self.state = _run(self.state, data, length)
        return self.state != UTF8_REJECT

    cpdef bint feed(self, data):
        """Validate the next piece of the stream. False as soon as the stream can
        no longer be valid; once False, always False until ``reset()``."""
        cdef Py_buffer buf
        cdef bint ok
        if PyBytes_CheckExact(data):  # immutable: no buffer export needed
            if PyBytes_GET_SIZE(data) < NOGIL_THRESHOLD:
                return self.feed_ptr(<const unsigned char*>PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data))
        _get_buffer(data, &buf)
        try:
            if buf.len >= NOGIL_THRESHOLD:
                with nogil:
                    ok = self.feed_ptr(<const unsigned char*>buf.buf, buf.len)
            else:
                ok = self.feed_ptr(<const unsigned char*>buf.buf, buf.len)
        finally:
            PyBuffer_Release(&buf)
        return ok

    cpdef bint complete(self):
        """True if everything fed so far is valid and ends on a code point
        boundary (a message may end here)."""
        return self.state == UTF8_ACCEPT

    cpdef void reset(self):
        """Forget the stream: ready for the next message."""
        self.state = UTF8_ACCEPT

    def __repr__(self):
        status = ("invalid" if self.state == UTF8_REJECT
                  else "complete" if self.state == UTF8_ACCEPT else "inside a code point")
        return f"<Utf8Validator {status}>"


def validate_utf8(data):
    """Is ``data`` complete, valid UTF-8?"""
    cdef Py_buffer buf
    cdef bint ok
    if PyBytes_CheckExact(data) and PyBytes_GET_SIZE(data) < NOGIL_THRESHOLD:
        return utf8_valid(<const unsigned char*>PyBytes_AS_STRING(data),
                          PyBytes_GET_SIZE(data))
    _get_buffer(data, &buf)
    try:
        if buf.len >= NOGIL_THRESHOLD:
            with nogil:
                ok = utf8_valid(<const unsigned char*>buf.buf, buf.len)
        else:
            ok = utf8_valid(<const unsigned char*>buf.buf, buf.len)
    finally:
        PyBuffer_Release(&buf)
    return ok
