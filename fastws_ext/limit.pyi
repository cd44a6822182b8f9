"""Per-connection rate limits (same API in fastws._py.limit; see docs/guide/access-control.md).

A connection under limits holds a ``Limiter`` and gives it to its frame
parser (``FrameParser(limiter=)``), which counts each data message against
the server's ``RateLimits`` before its on_message, and drops the messages
after a refusal (``ProtocolError("rate limit", 1008)``).
"""

RATE_LIMIT_REASON: str

class RateLimits:
    msg_step: float
    msg_tol: float
    byte_step: float
    byte_tol: float
    def __init__(self, messages: tuple[float, float] | None = None,
                 bytes: tuple[float, float] | None = None) -> None: ...

class Limiter:
    msg_tat: float
    byte_tat: float
    def __init__(self, limits: RateLimits) -> None: ...
    def count(self, data: str | bytes) -> bool:
        """False: deliver; True: drop (refused before); raises ProtocolError(1008) on the refusal."""
    def full(self) -> bool:
        """Both buckets full again: as good as a new Limiter."""
