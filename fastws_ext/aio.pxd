# C-level surface of fastws_ext.aio (the Python contract is aio.pyi; the
# readable reference is fastws/_py/aio.py, with the same names).
cimport cython


@cython.freelist(16)
cdef class Waiter:
    cdef public bint _asyncio_future_blocking
    cdef object _loop
    cdef object _callback       # the first done-callback (usually the awaiting task's wake-up)
    cdef object _context
    cdef bint _inline           # that callback came with an explicit context (a Task's)
    cdef list _more             # further (callback, context) pairs
    cdef object _result
    cdef object _exception
    cdef object _cancel_message
    cdef int _state
    cdef object _fut             # the stand-in C Future yielded to an awaiting task
    cdef bint _yielded           # am_send has yielded it

    cdef object _cancelled_error(self)
    cdef int _resolve(self, object result, object exc) except -1
    cdef bint _abandoned(self) except -1
    cdef int _schedule(self) except -1


cdef class Inbox:
    cdef public object loop
    cdef object _conn
    cdef object _queue           # a deque once a message had to wait
    cdef Waiter _waiter          # the pending recv()/__anext__, or None
    cdef bint _iter_waiter       # it came from __anext__ (end of stream: StopAsyncIteration)
    cdef bint _paused            # we paused reading (queue full)
    cdef public bint ended       # no message can come any more
    cdef Py_ssize_t _max_queue
    cdef object _standin         # the pending C Future the waiters yield (reused)

    cdef Waiter _next(self, bint iterating)
