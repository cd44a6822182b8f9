# C-level surface of fastws_ext.wheel (the Python contract is wheel.pyi; the
# readable reference is fastws/_py/wheel.py, with the same layout and names).
#
# A Cython connection class may `cimport` these and subclass TimerEntry,
# overriding the cpdef on_timer; Python subclasses (also with asyncio.Protocol
# and __slots__) override it with a plain def.
cimport cython


cdef class TimerWheel


cdef class TimerEntry:
    # Per entry: two links, the wheel and the deadline (32 bytes on top of the
    # object header).  While armed, the entry sits in one circular list of
    # its wheel (a slot, or the wheel's pending list during advance) and the
    # wheel holds a reference to it, as the event loop holds a handle.
    cdef TimerEntry _prev
    cdef TimerEntry _next
    cdef TimerWheel _wheel        # None when not armed
    cdef double _deadline

    cpdef object on_timer(self, double now)


@cython.final
cdef class TimerWheel:
    cdef double _tick
    cdef long long _mask          # slots - 1
    cdef list _buckets            # one sentinel TimerEntry per slot
    cdef TimerEntry _pending      # sentinel of the due entries during advance
    cdef long long _cur           # tick index the wheel has advanced into
    cdef double _time             # the time the wheel has advanced to
    cdef Py_ssize_t _count        # armed entries
    cdef bint _advancing
    cdef public object on_error

    cpdef arm(self, TimerEntry entry, double deadline)
    cpdef cancel(self, TimerEntry entry)
    cpdef Py_ssize_t advance(self, double now) except -1
    cdef inline long long _index(self, double t) noexcept
    cdef void _report(self, TimerEntry entry, object exc)


cdef class LoopDriver:
    cdef public object wheel          # the TimerWheel it drives
    cdef public object _loop_ref      # weakref.ref to the event loop
    cdef public object _handle        # the pending tick (None: not ticking)

    cdef double _now(self) except? -1.0
    cdef int _arm(self, entry, double deadline) except -1
