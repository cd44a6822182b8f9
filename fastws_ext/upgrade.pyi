"""The checks of the server's handshake short cut (see fastws._py.upgrade, the twin)."""

def scan_upgrade(head: bytes, fields: dict, max_headers: int) -> bytes | None:
    """The Sec-WebSocket-Key (OWS stripped) of a head that needs no more
    checking than the origin policy, or None (the general way decides)."""
