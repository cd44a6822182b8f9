"""Per-connection rate limits (same API in fastws._py.limit; see docs/guide/access-control.md).

``limited_on_message`` / ``limited_deliver`` are installed as a connection's
message callback when limits are on: they count the message in the
connection's ``_bucket`` against ``_opts._rate`` and hand it to
``_app.on_message`` / ``_inbox.deliver``, or raise
``ProtocolError("rate limit", 1008)``.
"""
from typing import Any

RATE_LIMIT_REASON: str

class RateLimits:
    msg_step: float
    msg_tol: float
    byte_step: float
    byte_tol: float
    def __init__(self, messages: tuple[float, float] | None = None,
                 bytes: tuple[float, float] | None = None) -> None: ...

class Bucket:
    msg_tat: float
    byte_tat: float

def limited_on_message(self: Any, data: str | bytes) -> Any: ...
def limited_deliver(self: Any, data: str | bytes) -> Any: ...
