# cython: language_level=3
"""A connection's handshake field lines, kept small (the Cython build of
fastws/_py/headpack.py: same names, same answers; read the rules there).

The common case, a block with the prefix and suffix of the shape used last,
is two memcmp and one bytes object made here.
See docs/design/memory.md#the-request-headers.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy

from binascii import b2a_base64

cdef extern from "Python.h":
    object _PyLong_FromByteArray(const unsigned char* data, size_t n, int little_endian, int is_signed)

__all__ = ["pack_lines", "unpack_lines", "SHAPES_MAX", "SHAPE_MAX_LEN"]

SHAPES_MAX = 256
SHAPE_MAX_LEN = 1024
cdef Py_ssize_t _SHAPES_MAX = SHAPES_MAX
cdef Py_ssize_t _SHAPE_MAX_LEN = SHAPE_MAX_LEN
cdef bytes _KEY_LINE = b"\r\nSec-WebSocket-Key:"
cdef bytes _KEY_LINE_LOWER = b"\r\nsec-websocket-key:"

cdef dict _numbers = {}   # (prefix, suffix) -> its number
cdef list _shapes = []    # by number: (prefix, suffix)
cdef list _tags = []      # by number: b"\0" + the number in two bytes
cdef bytes _prefix = b""  # the shape used last (tag None: none yet)
cdef bytes _suffix = b""
cdef bytes _tag = None
cdef int _number = 0
cdef int _KEY_BITS = 128
cdef object _KEY_MASK = (1 << 128) - 1

# base64 (RFC 4648 4): a character's 6 bits, -1 for anything else
cdef signed char _B64[256]
cdef const char* _ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef int _i
for _i in range(256):
    _B64[_i] = -1
for _i in range(64):
    _B64[<unsigned char>_ALPHABET[_i]] = _i


cdef object _packed(int number, bytes tag, const char* middle, Py_ssize_t size):
    """The shape's number above the key's 128 bits when ``middle`` is one
    space and 24 characters of canonical base64 (22 and "==", the last one's
    low 4 bits 0: what encodes back to the same characters); else the tag
    and the middle (the twin's _packed)."""
    cdef unsigned char out[17]
    cdef const unsigned char* m = <const unsigned char*>middle + 1
    cdef int i, a, b, c, d
    if size == 25 and middle[0] == 32 and m[22] == 61 and m[23] == 61:
        out[0] = <unsigned char>number
        for i in range(5):  # 20 characters: 15 bytes
            a, b, c, d = _B64[m[4 * i]], _B64[m[4 * i + 1]], _B64[m[4 * i + 2]], _B64[m[4 * i + 3]]
            if a < 0 or b < 0 or c < 0 or d < 0:
                break
            out[1 + 3 * i] = <unsigned char>((a << 2) | (b >> 4))
            out[2 + 3 * i] = <unsigned char>(((b & 15) << 4) | (c >> 2))
            out[3 + 3 * i] = <unsigned char>(((c & 3) << 6) | d)
        else:
            a, b = _B64[m[20]], _B64[m[21]]
            if a >= 0 and b >= 0 and (b & 15) == 0:
                out[16] = <unsigned char>((a << 2) | (b >> 4))
                return _PyLong_FromByteArray(out, 17, 0, 0)
    cdef bytes res = PyBytes_FromStringAndSize(NULL, 3 + size)
    cdef char* p = PyBytes_AS_STRING(res)
    memcpy(p, PyBytes_AS_STRING(tag), 3)
    memcpy(p + 3, middle, size)
    return res


def pack_lines(bytes block not None):
    """``block`` as an int (a shape's number and the key), a shape's tag and
    the middle, or ``block`` itself."""
    return pack_at(PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block), block)


cdef object pack_at(const char* b, Py_ssize_t n, bytes block):
    """``pack_lines`` of the ``n`` bytes at ``b``; ``block``: those bytes as
    a bytes object, or None (made only when the shape used last does not
    fit: the upgrade reader packs straight from the request's head)."""
    global _prefix, _suffix, _tag, _number
    cdef Py_ssize_t lp = PyBytes_GET_SIZE(_prefix), ls = PyBytes_GET_SIZE(_suffix)
    cdef Py_ssize_t at, end
    if (_tag is not None and n >= lp + ls and memcmp(b, PyBytes_AS_STRING(_prefix), lp) == 0
            and memcmp(b + n - ls, PyBytes_AS_STRING(_suffix), ls) == 0):
        return _packed(_number, _tag, b + lp, n - lp - ls)
    if block is None:
        block = PyBytes_FromStringAndSize(b, n)
    if n > _SHAPE_MAX_LEN:
        return block
    at = block.find(_KEY_LINE)
    if at < 0:
        at = block.find(_KEY_LINE_LOWER)
        if at < 0:
            return block
    at += PyBytes_GET_SIZE(_KEY_LINE)
    end = block.find(b"\r\n", at)
    if end < 0:
        end = n
    prefix, suffix = block[:at], block[end:]
    number = _numbers.get((prefix, suffix))
    if number is None:
        number = len(_shapes)
        if number >= _SHAPES_MAX:
            return block
        _numbers[(prefix, suffix)] = number
        _shapes.append((prefix, suffix))
        _tags.append(b"\0" + (<int>number).to_bytes(2, "big"))
    _prefix, _suffix, _tag, _number = prefix, suffix, _tags[number], number
    return _packed(_number, _tag, b + at, end - at)


def unpack_lines(packed not None):
    """The block ``pack_lines`` made ``packed`` of (anything else: as it is)."""
    if type(packed) is int:
        prefix, suffix = _shapes[packed >> _KEY_BITS]
        key = (packed & _KEY_MASK).to_bytes(16, "big")
        return prefix + b" " + b2a_base64(key, newline=False) + suffix
    if type(packed) is not bytes:
        raise TypeError(f"unpack_lines takes what pack_lines gave (int or bytes), not {type(packed).__name__}")
    if PyBytes_GET_SIZE(packed) == 0 or PyBytes_AS_STRING(packed)[0] != 0:
        return packed
    prefix, suffix = _shapes[int.from_bytes(packed[1:3], "big")]
    return prefix + packed[3:] + suffix
