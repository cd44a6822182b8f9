"""Per-connection rate limits: the pure-Python twin of fastws_ext.limit (see limit.pyi).

Installed only when ``rate_limit`` or ``rate_limit_bytes`` is set. Each limit
is a token bucket kept as one "theoretical arrival time" (GCRA); a message
takes 1 token (its length, characters for text, for the byte limit) and
passes if they fit, or if the bucket is full. ``RateLimits``: a server's
settings (``Options._rate``); ``Limiter``: one connection's state, which the
frame parser holds and counts each data message with (``count``) before its
on_message: deliver, or raise ``ProtocolError("rate limit", 1008)`` once and
drop every later message.
See docs/guide/access-control.md.
"""
from __future__ import annotations

import math
from time import monotonic

from ..exceptions import CLOSE_POLICY_VIOLATION, ProtocolError

__all__ = ["Limiter", "RateLimits", "RATE_LIMIT_REASON"]

RATE_LIMIT_REASON = "rate limit"
INF = math.inf
# Added to each tolerance: sums of steps must not refuse the last message of a burst by rounding.
SLACK = 1e-9


class RateLimits:
    """A server's limits: ``RateLimits(messages, bytes)``, each None or ``(rate, burst)``."""

    __slots__ = ("msg_step", "msg_tol", "byte_step", "byte_tol")

    def __init__(self, messages=None, bytes=None):
        self.msg_step = self.msg_tol = self.byte_step = self.byte_tol = 0.0
        if messages is not None:
            self.msg_step = 1.0 / float(messages[0])
            self.msg_tol = float(messages[1]) * self.msg_step + SLACK
        if bytes is not None:
            self.byte_step = 1.0 / float(bytes[0])
            self.byte_tol = float(bytes[1]) * self.byte_step + SLACK


class Limiter:
    """One connection's two buckets (full when made): the server's
    ``RateLimits`` and two times. It holds no callback: the parser that
    counts with it holds it (``FrameParser(limiter=)``)."""

    __slots__ = ("limits", "msg_tat", "byte_tat")

    def __init__(self, limits):
        if limits is None:
            raise TypeError("Limiter() needs the server's RateLimits")
        self.limits = limits
        self.msg_tat = 0.0
        self.byte_tat = 0.0

    def count(self, data) -> bool:
        """Count one message: False: deliver it; True: drop it (refused
        before); raises ``ProtocolError("rate limit", 1008)`` on the refusal."""
        return _count(self, data)

    def full(self) -> bool:
        """Whether both buckets are full again: the limiter is then as good
        as a new one (a connection going idle drops it)."""
        now = monotonic()
        return self.msg_tat <= now and self.byte_tat <= now


def _count(bucket, data) -> bool:
    """False: deliver; True: drop (refused before: the messages the peer sent
    after its limit while our 1008 close is on its way); raises ProtocolError
    on the refusal itself. (A second raise would fail the connection again
    while it closes, which aborts it and can cost the peer our close frame.)"""
    limits = bucket.limits
    if bucket.msg_tat == INF:
        return True
    now = monotonic()
    if limits.msg_step:
        tat = bucket.msg_tat
        if tat <= now:
            tat = now
        elif tat - now + limits.msg_step > limits.msg_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.msg_tat = tat + limits.msg_step
    if limits.byte_step:
        cost = len(data) * limits.byte_step
        tat = bucket.byte_tat
        if tat <= now:
            tat = now
        elif tat - now + cost > limits.byte_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.byte_tat = tat + cost
    return False
