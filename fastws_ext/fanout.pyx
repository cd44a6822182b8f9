# cython: language_level=3
"""Encode-once fan-out: one frame, written to many connections.

The Cython build of fastws/_py/fanout.py (same names, same behaviour;
tests/test_pubsub.py runs both on fake transports). Per connection: skip it if
not OPEN; if ``_paused_writing`` is set and ``_write_buffer_size() > limit``,
append it to ``slow`` instead of writing; else one write of the same bytes
object: its transport's ``write`` (a StreamConnection), or the callable in
its ``_write`` slot (the blocking client, tests). A healthy connection costs one flag
check and one write; a write that raises is skipped and not counted. The
loop calls no application code, so the container is not changed while it is
walked.
See docs/guide/pubsub.md#per-subscriber-one-flag-check-and-one-write.
"""
from cpython.ref cimport PyObject, PyTypeObject, Py_XDECREF, Py_TYPE

from fastws_ext.constants cimport OPEN
from fastws_ext.core cimport ConnectionCore
from fastws_ext.slots cimport member_offset, slot_at

cdef extern from "Python.h":
    PyObject* PyObject_CallOneArg(object callable, object arg)  # new reference, NULL on error
    PyObject* PyObject_CallMethodOneArg(object obj, object name, object arg)  # the same; no bound method
    void PyErr_Clear()

__all__ = ["fanout"]

# The state OPEN as a Python int. States are small ints, which CPython keeps
# as singletons, so an identity test is exact.
cdef object _OPEN = OPEN
cdef object _TRUE = True  # (a bare True would be the C integer 1 here)
cdef object _WRITE_NAME = "write"  # a stream connection's transport.write (interned)


from types import MemberDescriptorType


# Where a connection class keeps the three fields the loop reads. Connection
# declares them in __slots__, so they sit at fixed offsets in every instance of
# the class and of its subclasses: reading them there skips three attribute
# lookups per subscriber (most of the loop's own cost); _paused_writing is a
# C flag of ConnectionCore. Found once per fan-out per class, from the
# class's member descriptors; any other layout (a property, a __dict__
# attribute) takes the plain getattr path.
cdef struct _Layout:
    PyObject* cls       # borrowed: the connection being looked at keeps it alive
    bint fast
    bint core           # a ConnectionCore: _paused_writing is its C flag
    Py_ssize_t state
    Py_ssize_t paused   # else the _paused_writing slot
    Py_ssize_t transport  # the _transport slot (its write is called), or -1:
    Py_ssize_t write      # the _write slot


cdef Py_ssize_t _offset(type cls, str name) except -2:
    descr = getattr(cls, name, None)
    if type(descr) is not MemberDescriptorType:
        return -1
    return member_offset(descr)


cdef int _learn(_Layout* lay, object conn) except -1:
    cls = type(conn)
    lay.cls = <PyObject*>cls
    lay.state = _offset(cls, "_state")
    lay.core = issubclass(cls, ConnectionCore)
    lay.paused = -1 if lay.core else _offset(cls, "_paused_writing")
    lay.transport = _offset(cls, "_transport")  # a StreamConnection: its transport's write
    lay.write = _offset(cls, "_write") if lay.transport < 0 else -1  # a slot: the blocking client, tests
    lay.fast = lay.state >= 0 and (lay.core or lay.paused >= 0) and (lay.write >= 0 or lay.transport >= 0)
    return 0


cdef inline int _write(object write, object frame) noexcept:
    """Step 3: 1 if written; a write that raises is skipped (error cleared)."""
    cdef PyObject* result = PyObject_CallOneArg(write, frame)
    if result == NULL:
        PyErr_Clear()
        return 0
    Py_XDECREF(result)
    return 1


cdef inline int _write_to(object transport, object frame) noexcept:
    """Step 3 for a stream connection: ``transport.write(frame)`` (no bound
    method made for a method descriptor, as uvloop's write); a write that
    raises is skipped."""
    cdef PyObject* result = PyObject_CallMethodOneArg(transport, _WRITE_NAME, frame)
    if result == NULL:
        PyErr_Clear()
        return 0
    Py_XDECREF(result)
    return 1


cdef inline int _deliver(_Layout* lay, object conn, object frame, Py_ssize_t limit,
                         list slow) except -1:
    """1 if written, 0 if skipped (step numbers as in the module docstring)."""
    cdef PyObject* write
    cdef bint paused
    if <PyObject*>Py_TYPE(conn) != lay.cls:
        _learn(lay, conn)
    if lay.fast:
        if slot_at(conn, lay.state) != <PyObject*>_OPEN:                     # 1
            return 0
        if lay.core:                                                          # 2
            paused = (<ConnectionCore>conn)._c_paused
        else:
            paused = slot_at(conn, lay.paused) == <PyObject*>_TRUE
        if paused and conn._write_buffer_size() > limit:
            slow.append(conn)
            return 0
        if lay.transport >= 0:                                                # 3
            write = slot_at(conn, lay.transport)
            if write == NULL or write == <PyObject*>None:
                return 0
            return _write_to(<object>write, frame)  # <object>: a strong reference during the call
        write = slot_at(conn, lay.write)
        if write == NULL:
            return 0
        return _write(<object>write, frame)  # <object>: a strong reference during the call
    if conn._state is not _OPEN:
        return 0
    if conn._paused_writing is True and conn._write_buffer_size() > limit:
        slow.append(conn)
        return 0
    return _write(conn._write, frame)


cpdef Py_ssize_t fanout(object conns, object frame, Py_ssize_t limit, list slow) except -1:
    """Write ``frame`` to every OPEN connection of ``conns`` (a dict used as an
    ordered set, a set, a list, or any iterable of connections) whose write
    buffer is not above ``limit``; append those above it to ``slow``. Returns
    how many it was written to."""
    cdef Py_ssize_t n = 0
    cdef object conn
    cdef _Layout lay
    lay.cls = NULL
    if type(conns) is dict:
        for conn in <dict>conns:
            n += _deliver(&lay, conn, frame, limit, slow)
    elif type(conns) is list:
        for conn in <list>conns:
            n += _deliver(&lay, conn, frame, limit, slow)
    elif type(conns) is set:
        for conn in <set>conns:
            n += _deliver(&lay, conn, frame, limit, slow)
    else:
        for conn in conns:
            n += _deliver(&lay, conn, frame, limit, slow)
    return n
