"""XOR (un)masking (RFC 6455 5.3): the pure-Python twin of fastws_ext.mask.

RFC 6455 5.3: "Octet i of the transformed data is the XOR of octet i of the
original data with octet at index i modulo 4 of the masking key."

Same API and errors as the Cython module (see fastws_ext/mask.pyi). Instead of
a loop over bytes, the whole payload and a key stream of the same length are
read as two big integers and XORed once: CPython does that in C, a machine
word at a time, so the twin is slow only by the copies it makes.
See docs/design/codec.md#masking.
"""
from __future__ import annotations

from operator import index

__all__ = ["mask", "masked"]


def _describe(obj: object, writable: bool) -> str:
    """Why ``obj`` is not a (writable) C-contiguous buffer (same text as Cython)."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return f"a bytes-like object is required, not {type(obj).__name__!r}"
    with view:
        if writable and view.readonly:
            return (
                f"a writable buffer (bytearray or writable memoryview) is "
                f"required, not a read-only {type(obj).__name__!r}"
            )
        if not view.c_contiguous:
            return "a C-contiguous buffer is required"
    return f"cannot get a buffer from {type(obj).__name__!r}"


def _byte_view(obj: object, writable: bool) -> memoryview:
    """A 1-D unsigned-byte view of a C-contiguous buffer, or TypeError."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(_describe(obj, writable)) from None
    if (writable and view.readonly) or not view.c_contiguous:
        view.release()
        raise TypeError(_describe(obj, writable))
    if view.format == "B" and view.ndim == 1:
        return view
    with view:
        return view.cast("B")


def _key_stream(key: object, offset: object, length: int) -> tuple[bytes, int]:
    """``length`` bytes of key, starting at key byte ``offset``; and the offset."""
    offset = index(offset)  # type: ignore[arg-type]
    try:
        with memoryview(key) as kv:  # type: ignore[arg-type]
            k = kv.tobytes()
    except TypeError:
        raise TypeError(_describe(key, False)) from None
    if len(k) != 4:
        raise ValueError(f"the masking key must be 4 bytes long, not {len(k)}")
    if not 0 <= offset <= 3:
        raise ValueError(f"the key offset must be 0, 1, 2 or 3, not {offset}")
    # RFC 6455 5.3: j = i MOD 4, counted from the start of the whole payload;
    # this piece starts at key byte ``offset``.
    rotated = k[offset:] + k[:offset]
    return (rotated * (length // 4 + 1))[:length], offset


def _xor(data: memoryview, stream: bytes) -> bytes:
    n = len(stream)
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def mask(data, key, offset=0) -> int:
    """XOR a writable, C-contiguous buffer in place with the 4-byte ``key``,
    starting at key byte ``offset`` (0-3). Returns ``(offset + len(data)) % 4``,
    the offset to pass with the next piece of the same payload."""
    with _byte_view(data, writable=True) as view:
        n = len(view)
        stream, offset = _key_stream(key, offset, n)
        if n:
            view[:] = _xor(view, stream)
    return (offset + n) & 3


def masked(data, key, offset=0) -> bytes:
    """A masked copy of ``data`` (masking and unmasking are the same XOR)."""
    with _byte_view(data, writable=False) as view:
        stream, _ = _key_stream(key, offset, len(view))
        return _xor(view, stream)
