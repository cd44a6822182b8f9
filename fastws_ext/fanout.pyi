"""Encode-once fan-out (publish/broadcast). Same API in fastws._py.fanout."""
from typing import Any, Iterable, List

def fanout(conns: Iterable[Any], frame: bytes, limit: int, slow: List[Any]) -> int:
    """Write ``frame`` (one prebuilt server frame, the same object for every
    connection) to every OPEN connection of ``conns``, except those whose
    transport write buffer is above ``limit``: those are appended to ``slow``
    and not written. Only connections whose ``_paused_writing`` flag is set
    (buffer above write_limit) have their buffer size read. A write that
    raises is skipped. Returns how many connections the frame was written to."""
