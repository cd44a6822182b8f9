"""XOR masking (RFC 6455 5.3). Same API in fastws._py.mask."""
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

def mask(data: Union[bytearray, memoryview], key: bytes, offset: int = 0) -> int:
    """XOR a writable, C-contiguous buffer in place with the 4-byte ``key``,
    starting at key byte ``offset`` (0-3). Returns ``(offset + len(data)) % 4``,
    the offset to pass with the next piece of the same payload."""

def masked(data: Buffer, key: bytes, offset: int = 0) -> bytes:
    """A masked copy of ``data`` (masking and unmasking are the same XOR)."""
