# cython: language_level=3
"""Per-connection rate limits: the Cython build of fastws/_py/limit.py.

Installed only when ``rate_limit`` or ``rate_limit_bytes`` is set. Each limit
is a token bucket kept as one "theoretical arrival time" (GCRA); a message
takes 1 token (its length, characters for text, for the byte limit) and
passes if they fit, or if the bucket is full. ``RateLimits``: a server's
settings (``Options._rate``); ``Limiter``: one connection's state, which the
frame parser holds in a C field and counts each data message with
(``limit_count``, a C call) before its on_message: deliver, or raise
``ProtocolError("rate limit", 1008)`` once and drop every later message.
See docs/guide/access-control.md.
"""
cimport cython
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport INFINITY
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from fastws.exceptions import CLOSE_POLICY_VIOLATION, ProtocolError

__all__ = ["Limiter", "RateLimits", "RATE_LIMIT_REASON"]

cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

RATE_LIMIT_REASON = "rate limit"
cdef double INF = INFINITY
# Added to each tolerance: sums of steps must not refuse the last message of a burst by rounding.
cdef double SLACK = 1e-9


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.auto_pickle(False)
@cython.final
@cython.no_gc
cdef class RateLimits:
    """A server's limits: ``RateLimits(messages, bytes)``, each None or ``(rate, burst)``."""

    # The fields are declared in limit.pxd.

    def __init__(self, messages=None, bytes=None):
        self.msg_step = self.msg_tol = self.byte_step = self.byte_tol = 0.0
        if messages is not None:
            self.msg_step = 1.0 / float(messages[0])
            self.msg_tol = float(messages[1]) * self.msg_step + SLACK
        if bytes is not None:
            self.byte_step = 1.0 / float(bytes[0])
            self.byte_tol = float(bytes[1]) * self.byte_step + SLACK


@cython.auto_pickle(False)
@cython.final
@cython.no_gc
cdef class Limiter:
    """One connection's two buckets (full when made): the server's
    ``RateLimits`` and two doubles. It holds no callback and takes part in no
    cycle, so it needs no GC header: the object is 40 bytes (48 allocated),
    and the parser that counts with it holds it by a C field (no bound
    method)."""

    # The fields are declared in limit.pxd.

    def __cinit__(self, RateLimits limits not None):
        self.limits = limits
        self.msg_tat = 0.0
        self.byte_tat = 0.0

    @cython.binding(False)
    @cython.always_allow_keywords(False)
    def count(self, data):
        """Count one message: False: deliver it; True: drop it (refused
        before); raises ``ProtocolError("rate limit", 1008)`` on the refusal."""
        return limit_count(self, data) == 1

    def full(self):
        """Whether both buckets are full again: the limiter is then as good
        as a new one (a connection going idle drops it)."""
        cdef double now = _now()
        return self.msg_tat <= now and self.byte_tat <= now


cdef int limit_count(Limiter bucket, object data) except -1:
    """0: deliver; 1: drop (refused before: the messages the peer sent after
    its limit while our 1008 close is on its way); raises ProtocolError on
    the refusal itself. (A second raise would fail the connection again
    while it closes, which aborts it and can cost the peer our close frame.)"""
    cdef RateLimits limits = bucket.limits
    cdef double now
    cdef double tat, cost
    cdef Py_ssize_t n
    if bucket.msg_tat == INF:
        return 1
    now = _now()
    if limits.msg_step != 0.0:
        tat = bucket.msg_tat
        if tat <= now:
            tat = now
        elif tat - now + limits.msg_step > limits.msg_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.msg_tat = tat + limits.msg_step
    if limits.byte_step != 0.0:
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
        elif PyUnicode_CheckExact(data):
            n = PyUnicode_GET_LENGTH(data)
        else:
            n = len(data)
        cost = <double>n * limits.byte_step
        tat = bucket.byte_tat
        if tat <= now:
            tat = now
        elif tat - now + cost > limits.byte_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.byte_tat = tat + cost
    return 0
