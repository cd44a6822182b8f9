"""The server's handshake short cut (see fastws._py.upgrade, the twin)."""

def scan_upgrade(head: bytes, max_headers: int) -> tuple[str, bytes, bytes] | None:
    """(path, packed, key) of a head llhttp validated that needs no more
    checking than the origin policy, or None (the general way decides)."""

class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first read."""
    def __init__(self) -> None: ...
    def read(self, data: bytes, max_head: int = 8192, max_headers: int = 100) -> tuple[str, bytes, bytes, bytes] | None:
        """(path, packed, key, leftover) or None (the general way decides)."""
