# cython: language_level=3
"""Per-connection rate limits: the message callback installed only when
``rate_limit`` or ``rate_limit_bytes`` is set.

The Cython build of fastws/_py/limit.py (same names, same behaviour). Each
limit is a token bucket of ``rate`` units per second holding at most
``burst``, kept as one "theoretical arrival time" (GCRA): a message passes
while the bucket is not empty (``tat - now < burst / rate``) and takes its
units (1 per message; its length in bytes, characters for text, for the byte
limit), which may take a bucket below zero once. ``Bucket`` is what a
connection holds (two C doubles, no object field: no GC header);
``RateLimits`` the server's settings, shared by its connections through
``Options._rate``. ``limited_on_message`` (listener API) and
``limited_deliver`` (handler API) are installed as the connection's message
callback: they count the message, then hand it to ``_app.on_message`` or
``_inbox.deliver``; over a limit they raise ``ProtocolError(1008, "rate
limit")``, which the connection turns into its close frame, and the bucket
stays empty (every later message is refused too).
See docs/guide/access-control.md.
"""
cimport cython
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport INFINITY
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from fastws_ext.slots cimport member_offset, slot_at

from types import MemberDescriptorType

from fastws.exceptions import CLOSE_POLICY_VIOLATION, ProtocolError

__all__ = ["Bucket", "RateLimits", "limited_on_message", "limited_deliver", "RATE_LIMIT_REASON"]

cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyObject_VectorcallMethod(object name, PyObject** args, size_t nargsf, PyObject* kwnames)

RATE_LIMIT_REASON = "rate limit"
cdef double INF = INFINITY
cdef str _ON_MESSAGE = "on_message"
cdef str _DELIVER = "deliver"
cdef size_t _OFFSET = (<size_t>1) << (8 * sizeof(size_t) - 1)  # PY_VECTORCALL_ARGUMENTS_OFFSET


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.auto_pickle(False)
@cython.final
cdef class _Slot:
    """One ``__slots__`` field read at its offset (cached for the last class seen)."""
    cdef str name
    cdef type cls
    cdef Py_ssize_t off

    def __cinit__(self, str name):
        self.name = name
        self.cls = None
        self.off = -1

    cdef inline object get(self, object obj):
        cdef PyObject* v
        if type(obj) is not self.cls:
            descr = getattr(type(obj), self.name, None)
            self.off = member_offset(descr) if type(descr) is MemberDescriptorType else -1
            self.cls = type(obj)
        if self.off >= 0:
            v = slot_at(obj, self.off)
            if v != NULL:
                return <object>v
        return getattr(obj, self.name)


cdef _Slot _BUCKET = _Slot("_bucket")
cdef _Slot _OPTS = _Slot("_opts")
cdef _Slot _RATE = _Slot("_rate")
cdef _Slot _APP = _Slot("_app")
cdef _Slot _INBOX = _Slot("_inbox")


@cython.auto_pickle(False)
@cython.final
@cython.no_gc
cdef class RateLimits:
    """A server's limits: ``RateLimits(messages, bytes)``, each None or ``(rate, burst)``."""
    cdef readonly double msg_step     # seconds per message (0: no message limit)
    cdef readonly double msg_tol      # burst * msg_step
    cdef readonly double byte_step    # seconds per byte (0: no byte limit)
    cdef readonly double byte_tol

    def __init__(self, messages=None, bytes=None):
        self.msg_step = self.msg_tol = self.byte_step = self.byte_tol = 0.0
        if messages is not None:
            self.msg_step = 1.0 / float(messages[0])
            self.msg_tol = float(messages[1]) * self.msg_step
        if bytes is not None:
            self.byte_step = 1.0 / float(bytes[0])
            self.byte_tol = float(bytes[1]) * self.byte_step


@cython.auto_pickle(False)
@cython.final
@cython.no_gc
cdef class Bucket:
    """One connection's two buckets (full when made)."""
    cdef public double msg_tat
    cdef public double byte_tat

    def __cinit__(self):
        self.msg_tat = 0.0
        self.byte_tat = 0.0


cdef int _count(object conn, object data) except -1:
    cdef Bucket bucket = <Bucket?>_BUCKET.get(conn)
    cdef RateLimits limits = <RateLimits?>_RATE.get(_OPTS.get(conn))
    cdef double now = _now()
    cdef double tat
    cdef Py_ssize_t n
    if limits.msg_step != 0.0:
        tat = bucket.msg_tat
        if tat < now:
            tat = now
        if tat - now >= limits.msg_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        bucket.msg_tat = tat + limits.msg_step
    if limits.byte_step != 0.0:
        tat = bucket.byte_tat
        if tat < now:
            tat = now
        if tat - now >= limits.byte_tol:
            bucket.msg_tat = bucket.byte_tat = INF
            raise ProtocolError(RATE_LIMIT_REASON, CLOSE_POLICY_VIOLATION)
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
        elif PyUnicode_CheckExact(data):
            n = PyUnicode_GET_LENGTH(data)
        else:
            n = len(data)
        bucket.byte_tat = tat + <double>n * limits.byte_step
    return 0


def limited_on_message(self, data):
    """The listener API's message callback under rate limits (see the module docstring)."""
    cdef PyObject* args[2]
    _count(self, data)
    app = _APP.get(self)
    args[0] = <PyObject*>app
    args[1] = <PyObject*>data
    return PyObject_VectorcallMethod(_ON_MESSAGE, args, 2 | _OFFSET, NULL)


def limited_deliver(self, data):
    """The handler API's message callback under rate limits (see the module docstring)."""
    cdef PyObject* args[2]
    _count(self, data)
    inbox = _INBOX.get(self)
    args[0] = <PyObject*>inbox
    args[1] = <PyObject*>data
    return PyObject_VectorcallMethod(_DELIVER, args, 2 | _OFFSET, NULL)
