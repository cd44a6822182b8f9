"""A connection's handshake field lines, kept small: the pure-Python twin of fastws_ext.headpack.

Every request of one kind of client has the same field lines but for the
Sec-WebSocket-Key value. ``pack_lines(block)`` cuts the key's value out of
the lines as received and keeps the rest (the *shape*) once per process. A
connection keeps an ``int``, the shape's number above the key's 128 bits,
when the value is one space and the key in canonical base64 (what clients
send); otherwise ``b"\\0"``, the shape's number in two bytes and the value
as received. ``unpack_lines`` puts the lines back, byte for byte. At most
``SHAPES_MAX`` shapes of at most ``SHAPE_MAX_LEN`` bytes, never evicted;
anything else is kept as it is. See docs/design/memory.md#the-request-headers.
"""
from __future__ import annotations

from binascii import Error as _Base64Error
from binascii import a2b_base64, b2a_base64

__all__ = ["pack_lines", "unpack_lines", "SHAPES_MAX", "SHAPE_MAX_LEN"]

SHAPES_MAX = 256
SHAPE_MAX_LEN = 1024
_KEY_LINE = b"\r\nSec-WebSocket-Key:"
_KEY_LINE_LOWER = b"\r\nsec-websocket-key:"

_numbers: dict[tuple[bytes, bytes], int] = {}  # (prefix, suffix) -> its number
_shapes: list[tuple[bytes, bytes]] = []  # by number: (prefix, suffix)
_tags: list[bytes] = []  # by number: b"\0" + the number in two bytes
_last: list = [b"", b"", b"", 0]  # prefix, suffix, tag, number of the shape used last (tag b"": none yet)
_KEY_BITS = 128
_KEY_MASK = (1 << _KEY_BITS) - 1


def _packed(number: int, tag: bytes, middle: bytes) -> int | bytes:
    """The shape's number above the key's 128 bits when ``middle`` is one
    space and 24 characters of canonical base64 (decoding to 16 bytes and
    encoding back to the same characters); else the tag and the middle."""
    if len(middle) == 25 and middle[:1] == b" " and middle[23:] == b"==":
        try:
            key = a2b_base64(middle[1:], strict_mode=True)
        except _Base64Error:
            key = b""
        if len(key) == 16 and b2a_base64(key, newline=False) == middle[1:]:
            return number << _KEY_BITS | int.from_bytes(key, "big")
    return tag + middle


def pack_lines(block: bytes) -> int | bytes:
    """``block`` as an int (a shape's number and the key), a shape's tag and
    the middle, or ``block`` itself."""
    prefix, suffix, tag, number = _last
    n = len(block)
    if tag and n >= len(prefix) + len(suffix) and block.startswith(prefix) and block.endswith(suffix):
        return _packed(number, tag, block[len(prefix):n - len(suffix)])
    if n > SHAPE_MAX_LEN:
        return block
    at = block.find(_KEY_LINE)
    if at < 0:
        at = block.find(_KEY_LINE_LOWER)
        if at < 0:
            return block
    at += len(_KEY_LINE)  # after the colon: the value keeps its OWS, as received
    end = block.find(b"\r\n", at)
    if end < 0:
        end = n
    prefix, suffix = block[:at], block[end:]
    number = _numbers.get((prefix, suffix))
    if number is None:
        number = len(_shapes)
        if number >= SHAPES_MAX:
            return block
        _numbers[(prefix, suffix)] = number
        _shapes.append((prefix, suffix))
        _tags.append(b"\0" + number.to_bytes(2, "big"))
    tag = _tags[number]
    _last[:] = (prefix, suffix, tag, number)
    return _packed(number, tag, block[at:end])


def unpack_lines(packed: int | bytes) -> bytes:
    """The block ``pack_lines`` made ``packed`` of (anything else: as it is)."""
    if type(packed) is int:
        prefix, suffix = _shapes[packed >> _KEY_BITS]
        key = (packed & _KEY_MASK).to_bytes(16, "big")
        return prefix + b" " + b2a_base64(key, newline=False) + suffix
    if packed[:1] != b"\0":
        return packed
    prefix, suffix = _shapes[int.from_bytes(packed[1:3], "big")]
    return prefix + packed[3:] + suffix
