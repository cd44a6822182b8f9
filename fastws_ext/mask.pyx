"""XOR (un)masking of WebSocket payloads (RFC 6455 5.3), in place.

Masking and unmasking are the same operation. A payload may arrive in pieces,
so every function takes the key ``offset`` (0-3) at which the piece starts
and returns the offset for the next piece. The loop works a machine word at a
time through ``memcpy`` (unaligned buffers are fine; gcc and clang vectorise
it at -O3). The C surface (``mask_inplace``, ``mask_copy``) is declared in
mask.pxd and cimported by frames.pyx; ``mask`` and ``masked`` are the Python
API (mask.pyi), shared with the pure-Python twin ``fastws._py.mask``.
See docs/design/codec.md#masking.
"""
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_CheckExact,
    PyByteArray_GET_SIZE,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

# Above this many bytes the Python-level functions release the GIL while they
# XOR (a bytearray cannot be resized while we hold its buffer, so this is safe).
cdef Py_ssize_t NOGIL_THRESHOLD = 64 * 1024


cdef inline void _xor_into(unsigned char* dst, const unsigned char* src,
                           Py_ssize_t length, const unsigned char* key,
                           Py_ssize_t offset) noexcept nogil:
    """dst[i] = src[i] ^ key[(offset + i) % 4] for i < length (dst may be src)."""
    cdef unsigned char stream[8]   # the key, rotated to ``offset`` and doubled
    cdef uint64_t word_key, w0, w1, w2, w3
    cdef Py_ssize_t i, words_end
    for i in range(8):
        stream[i] = key[(offset + i) & 3]
    # Built byte by byte then copied, so the word key is right on any endianness.
    memcpy(&word_key, stream, 8)

    # Since 8 is a multiple of 4, byte i of every word sees stream[i]: the key
    # position (RFC 6455 5.3 "j = i MOD 4") needs no tracking inside the loop.
    # Four words per turn: gcc -O3 makes this two 16-byte SSE2 XORs (baseline
    # x86-64, no -march needed); the single-word loop mops up the rest.
    words_end = length & ~(<Py_ssize_t>31)
    for i in range(0, words_end, 32):
        memcpy(&w0, src + i, 8)
        memcpy(&w1, src + i + 8, 8)
        memcpy(&w2, src + i + 16, 8)
        memcpy(&w3, src + i + 24, 8)
        w0 ^= word_key
        w1 ^= word_key
        w2 ^= word_key
        w3 ^= word_key
        memcpy(dst + i, &w0, 8)
        memcpy(dst + i + 8, &w1, 8)
        memcpy(dst + i + 16, &w2, 8)
        memcpy(dst + i + 24, &w3, 8)
    i = words_end
    words_end = length & ~(<Py_ssize_t>7)
    while i < words_end:
        memcpy(&w0, src + i, 8)
        w0 ^= word_key
        memcpy(dst + i, &w0, 8)
        i += 8
    for i in range(words_end, length):
        dst[i] = src[i] ^ stream[i & 7]


cdef Py_ssize_t mask_inplace(unsigned char* data, Py_ssize_t length,
                             const unsigned char* key, Py_ssize_t offset) noexcept nogil:
    _xor_into(data, data, length, key, offset & 3)
    return (offset + length) & 3


cdef Py_ssize_t mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t length,
                          const unsigned char* key, Py_ssize_t offset) noexcept nogil:
    _xor_into(dst, src, length, key, offset & 3)
    return (offset + length) & 3


# -- Python API -----------------------------------------------------------

cdef str _describe(obj, bint writable):
    """Why ``obj`` is not a (writable) C-contiguous buffer (slow path only)."""
    try:
        view = memoryview(obj)
    except TypeError:
        return f"a bytes-like object is required, not {type(obj).__name__!r}"
    with view:
        if writable and view.readonly:
            return (f"a writable buffer (bytearray or writable memoryview) is "
                    f"required, not a read-only {type(obj).__name__!r}")
        if not view.c_contiguous:
            return "a C-contiguous buffer is required"
    return f"cannot get a buffer from {type(obj).__name__!r}"


cdef int _get_buffer(obj, Py_buffer* view, int flags) except -1:
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (TypeError, BufferError, ValueError):
        raise TypeError(_describe(obj, flags & PyBUF_WRITABLE)) from None
    return 0


cdef int _check_key(const Py_buffer* key, Py_ssize_t offset) except -1:
    if key.len != 4:
        raise ValueError(f"the masking key must be 4 bytes long, not {key.len}")
    if offset < 0 or offset > 3:
        raise ValueError(f"the key offset must be 0, 1, 2 or 3, not {offset}")
    return 0


def mask(data, key, Py_ssize_t offset=0):
    """XOR a writable, C-contiguous buffer in place with the 4-byte ``key``,
    starting at key byte ``offset`` (0-3). Returns ``(offset + len(data)) % 4``,
    the offset to pass with the next piece of the same payload."""
    cdef Py_buffer buf, k
    cdef Py_ssize_t result
    # Fast path for the common small call, mask(bytearray, bytes): no buffer
    # exports, so a 32-byte payload costs little more than the call itself.
    if (PyByteArray_CheckExact(data) and PyBytes_CheckExact(key)
            and PyBytes_GET_SIZE(key) == 4 and 0 <= offset <= 3
            and PyByteArray_GET_SIZE(data) < NOGIL_THRESHOLD):
        return mask_inplace(<unsigned char*>PyByteArray_AS_STRING(data),
                            PyByteArray_GET_SIZE(data),
                            <const unsigned char*>PyBytes_AS_STRING(key), offset)
    _get_buffer(data, &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        _get_buffer(key, &k, PyBUF_SIMPLE)
        try:
            _check_key(&k, offset)
            if buf.len >= NOGIL_THRESHOLD:
                with nogil:
                    result = mask_inplace(<unsigned char*>buf.buf, buf.len,
                                          <const unsigned char*>k.buf, offset)
            else:
                result = mask_inplace(<unsigned char*>buf.buf, buf.len,
                                      <const unsigned char*>k.buf, offset)
        finally:
            PyBuffer_Release(&k)
    finally:
        PyBuffer_Release(&buf)
    return result


def masked(data, key, Py_ssize_t offset=0):
    """A masked copy of ``data`` (masking and unmasking are the same XOR)."""
    cdef Py_buffer src, k
    cdef bytes out
    cdef unsigned char* dst
    _get_buffer(data, &src, PyBUF_SIMPLE)
    try:
        _get_buffer(key, &k, PyBUF_SIMPLE)
        try:
            _check_key(&k, offset)
            out = PyBytes_FromStringAndSize(NULL, src.len)
            dst = <unsigned char*>PyBytes_AS_STRING(out)
            # One pass: read the source, write the XOR into the new bytes.
            if src.len >= NOGIL_THRESHOLD:
                with nogil:
                    _xor_into(dst, <const unsigned char*>src.buf, src.len,
                              <const unsigned char*>k.buf, offset)
            else:
                _xor_into(dst, <const unsigned char*>src.buf, src.len,
                          <const unsigned char*>k.buf, offset)
        finally:
            PyBuffer_Release(&k)
    finally:
        PyBuffer_Release(&src)
    return out
