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


cdef inline bytes _tagged(bytes tag, const char* middle, Py_ssize_t size):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 3 + size)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(tag), 3)
    memcpy(p + 3, middle, size)
    return out


def pack_lines(bytes block not None):
    """``block`` as a shape's tag and the middle, or ``block`` itself."""
    global _prefix, _suffix, _tag
    cdef const char* b = PyBytes_AS_STRING(block)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(block)
    cdef Py_ssize_t lp = PyBytes_GET_SIZE(_prefix), ls = PyBytes_GET_SIZE(_suffix)
    cdef Py_ssize_t at, end
    if (_tag is not None and n >= lp + ls and memcmp(b, PyBytes_AS_STRING(_prefix), lp) == 0
            and memcmp(b + n - ls, PyBytes_AS_STRING(_suffix), ls) == 0):
        return _tagged(_tag, b + lp, n - lp - ls)
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
    _prefix, _suffix, _tag = prefix, suffix, _tags[number]
    return _tagged(_tag, b + at, end - at)


def unpack_lines(bytes packed not None):
    """The block ``pack_lines`` made ``packed`` of (anything else: as it is)."""
    if PyBytes_GET_SIZE(packed) == 0 or PyBytes_AS_STRING(packed)[0] != 0:
        return packed
    prefix, suffix = _shapes[int.from_bytes(packed[1:3], "big")]
    return prefix + packed[3:] + suffix
