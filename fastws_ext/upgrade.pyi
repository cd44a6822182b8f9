"""The checks of the server's handshake short cut (see fastws._py.upgrade, the twin)."""
from typing import Any

def scan_upgrade(head: bytes, fields: dict[bytes, Any], max_headers: int) -> bytes | None:
    """The Sec-WebSocket-Key (OWS stripped) of a head that needs no more
    checking than the origin policy, or None (the general way decides)."""

class UpgradeReader:
    """The server's short cut for a whole valid upgrade head in the first read."""
    def __init__(self, request_cls: type, headers_cls: type) -> None: ...
    def read(self, data: bytes, max_head: int = 8192, max_headers: int = 100) -> tuple[Any, bytes, bytes] | None:
        """(request, leftover, key) or None (the general way decides)."""
