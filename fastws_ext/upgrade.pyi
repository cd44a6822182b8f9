"""The server's handshake short cut (see fastws._py.upgrade, the twin)."""
from typing import Callable

def scan_upgrade(head: bytes, max_headers: int) -> tuple[str, bytes, bytes] | None:
    """(path, packed, key) of a head llhttp validated that needs no more
    checking than the origin policy, or None (the general way decides)."""

def accept_101(key: bytes, head: bytes) -> bytes:
    """head + the Sec-WebSocket-Accept field of the 24-byte key + CRLF CRLF."""

def llhttp_direct(on: bool | None = None) -> bool:
    """Whether read() calls llhttp's C API directly rather than httptools'
    feed_data (always False in the twin); on=False turns that off."""

class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first read."""
    def __init__(self, head: Callable[[], bytes] | None = None) -> None: ...
    def accept(self, key: bytes) -> bytes:
        """accept_101(key, head()), head() called at most once a second."""
    def read(self, data: bytes, max_head: int = 8192, max_headers: int = 100) -> tuple[str, bytes, bytes, bytes] | None:
        """(path, packed, key, leftover) or None (the general way decides)."""
    def read_accept(self, data: bytes, max_head: int = 8192,
                    max_headers: int = 100) -> tuple[str, int | bytes, bytes, bytes] | None:
        """(path, pack_lines(packed), accept(key), leftover) or None."""
