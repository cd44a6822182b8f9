"""Encode-once fan-out: one frame, written to many connections.

The pure-Python twin of fastws_ext/fanout.pyx: per connection, skip it if not
OPEN, the slow-consumer check, then one write of the same bytes (to a
stream connection's transport, else through its ``_write``).
See docs/guide/pubsub.md#per-subscriber-one-flag-check-and-one-write.
"""
from __future__ import annotations

from ..constants import OPEN as _OPEN

__all__ = ["fanout"]


def fanout(conns, frame, limit: int, slow: list) -> int:
    """Write ``frame`` to every OPEN connection of ``conns`` whose write buffer
    is not above ``limit``; append those above it to ``slow``. Returns how many
    it was written to."""
    n = 0
    for conn in conns:
        if conn._state != _OPEN:                                            # 1
            continue
        if conn._paused_writing and conn._write_buffer_size() > limit:    # 2
            slow.append(conn)
            continue
        transport = getattr(conn, "_transport", None)                        # 3
        try:  # a stream connection's transport, or the callable in a _write slot
            if transport is not None:
                transport.write(frame)
            else:
                conn._write(frame)
        except Exception:
            continue
        n += 1
    return n
