"""Per-connection rate limits: the pure-Python twin of fastws_ext.limit (see limit.pyi).

The message callback installed only when ``rate_limit`` or
``rate_limit_bytes`` is set. Each limit is a token bucket of ``rate`` units
per second holding at most ``burst``, kept as one "theoretical arrival time"
(GCRA): a message passes while the bucket is not empty (``tat - now < burst /
rate``) and takes its units (1 per message; its length in bytes, characters
for text, for the byte limit), which may take a bucket below zero once.
``Bucket`` is what a connection holds; ``RateLimits`` the server's settings,
shared by its connections through ``Options._rate``. ``limited_on_message``
(listener API) and ``limited_deliver`` (handler API) count the message, then
hand it to ``_app.on_message`` or ``_inbox.deliver``; over a limit they raise
``ProtocolError("rate limit", 1008)``, which the connection turns into its
close frame, and the bucket stays empty (every later message is refused too).
See docs/guide/access-control.md.
"""
from __future__ import annotations

import math
from time import monotonic

from ..exceptions import CLOSE_POLICY_VIOLATION, ProtocolError

__all__ = ["Bucket", "RateLimits", "limited_on_message", "limited_deliver", "RATE_LIMIT_REASON"]

RATE_LIMIT_REASON = "rate limit"
INF = math.inf


class RateLimits:
    """A server's limits: ``RateLimits(messages, bytes)``, each None or ``(rate, burst)``."""

    __slots__ = ("msg_step", "msg_tol", "byte_step", "byte_tol")

    def __init__(self, messages=None, bytes=None):
        self.msg_step = self.msg_tol = self.byte_step = self.byte_tol = 0.0
        if messages is not None:
            self.msg_step = 1.0 / float(messages[0])
            self.msg_tol = float(messages[1]) * self.msg_step
        if bytes is not None:
            self.byte_step = 1.0 / float(bytes[0])
            self.byte_tol = float(bytes[1]) * self.byte_step


class Bucket:
    """One connection's two buckets (full when made)."""

    __slots__ = ("msg_tat", "byte_tat")

    def __init__(self):
        self.msg_tat = 0.0
        self.byte_tat = 0.0


def _count(conn, data) -> None:
    bucket = conn._bucket
    limits = conn._opts._rate
    now = monotonic()
    if limits.msg_step:
        tat = bucket.msg_tat
        if tat < now:
            tat = now
        if tat - now >= limits.msg_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.msg_tat = tat + limits.msg_step
    if limits.byte_step:
        tat = bucket.byte_tat
        if tat < now:
            tat = now
        if tat - now >= limits.byte_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.byte_tat = tat + len(data) * limits.byte_step


def limited_on_message(self, data):
    """The listener API's message callback under rate limits (see the module docstring)."""
    _count(self, data)
    return self._app.on_message(data)


def limited_deliver(self, data):
    """The handler API's message callback under rate limits (see the module docstring)."""
    _count(self, data)
    return self._inbox.deliver(data)
