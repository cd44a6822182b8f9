"""Per-connection rate limits (same API in fastws._py.limit; see docs/guide/access-control.md).

A connection under limits holds a ``Limiter``; its ``deliver`` is the
parser's on_message: it counts the message against the server's
``RateLimits`` and hands it to ``target`` (the connection's own callback),
or raises ``ProtocolError("rate limit", 1008)``.
"""
from typing import Any, Callable

RATE_LIMIT_REASON: str

class RateLimits:
    msg_step: float
    msg_tol: float
    byte_step: float
    byte_tol: float
    def __init__(self, messages: tuple[float, float] | None = None,
                 bytes: tuple[float, float] | None = None) -> None: ...

class Limiter:
    target: Callable[[Any], Any] | None
    msg_tat: float
    byte_tat: float
    def __init__(self, limits: RateLimits) -> None: ...
    def deliver(self, data: str | bytes) -> Any: ...
