# cython: language_level=3
"""Hashed timing wheel (Varghese & Lauck; Netty HashedWheelTimer, Kafka TimingWheel).

The Cython build of fastws/_py/wheel.py: same layout, same names, same
behaviour (tests/test_wheel.py runs both and compares their firing logs):
slots of circular intrusive lists closed by sentinels, exact deadlines
instead of decremented round counts, a pending list that makes advance safe
against callbacks that arm or cancel anything.
See docs/design/timers.md#the-wheel.
"""
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.math cimport floor, isnan, INFINITY

cdef extern from "Python.h":
    PyObject** _PyObject_GetDictPtr(object obj)
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)
    enum: Py_TPFLAGS_METHOD_DESCRIPTOR

import sys

__all__ = ["LoopDriver", "TimerEntry", "TimerWheel"]

# See _py/wheel.py: tick indices are clamped to +-2**61.
cdef double _IDX_MAX = 2305843009213693952.0


cdef inline void _unlink(TimerEntry e) noexcept:
    e._prev._next = e._next
    e._next._prev = e._prev
    e._prev = None
    e._next = None


cdef inline void _link_tail(TimerEntry head, TimerEntry e) noexcept:
    cdef TimerEntry last = head._prev
    e._prev = last
    e._next = head
    last._next = e
    head._prev = e


cdef TimerEntry _sentinel():
    cdef TimerEntry s = TimerEntry.__new__(TimerEntry)
    s._prev = s
    s._next = s
    return s


@cython.auto_pickle(False)
cdef class TimerEntry:
    """Something that can be armed on a wheel (subclass it; a connection is one).

    Subclasses override ``on_timer``.  The fields are set before ``__init__``
    (and there is no ``__init__``), so a subclass need not call
    ``super().__init__()``.
    """

    def __cinit__(self):
        self._deadline = INFINITY

    @property
    def deadline(self):
        """When it is due (float('inf') when not armed)."""
        return self._deadline if self._wheel is not None else INFINITY

    @property
    def armed(self):
        return self._wheel is not None

    cpdef object on_timer(self, double now):
        """Called by ``advance`` once the deadline has passed.  Return a new
        deadline to re-arm, or None."""
        return None


@cython.auto_pickle(False)
@cython.final
cdef class TimerWheel:
    """A power-of-two ring of ``slots`` buckets of ``tick`` seconds each."""

    def __init__(self, double tick=1.0, long long slots=512, double now=0.0):
        if not tick > 0.0 or tick == INFINITY:
            raise ValueError(f"tick must be a positive finite number, not {tick!r}")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots!r}")
        if isnan(now) or now == INFINITY or now == -INFINITY:
            raise ValueError(f"now must be finite, not {now!r}")
        self._tick = tick
        self._mask = slots - 1
        self._buckets = [_sentinel() for _ in range(slots)]
        self._pending = _sentinel()
        self._cur = self._index(now)
        self._time = now
        self._count = 0
        self._advancing = False
        self.on_error = None

    @property
    def tick(self):
        return self._tick

    @property
    def slots(self):
        return self._mask + 1

    @property
    def time(self):
        """The time the wheel has advanced to."""
        return self._time

    def __len__(self):
        return self._count

    def __repr__(self):
        return (f"<TimerWheel tick={self._tick} slots={self._mask + 1} "
                f"time={self._time} armed={self._count}>")

    cdef inline long long _index(self, double t) noexcept:
        cdef double q = t / self._tick
        if q > _IDX_MAX:
            q = _IDX_MAX
        elif q < -_IDX_MAX:
            q = -_IDX_MAX
        return <long long>floor(q)

    cpdef arm(self, TimerEntry entry, double deadline):
        """Arm or move ``entry`` to fire at ``deadline`` (+inf disarms it)."""
        cdef TimerWheel old
        cdef long long idx
        if entry is None:
            raise TypeError("expected a TimerEntry, not NoneType")
        if isnan(deadline):
            raise ValueError("deadline is NaN")
        old = entry._wheel
        if old is not None:
            _unlink(entry)
            old._count -= 1
            entry._wheel = None
        if deadline == INFINITY:
            return
        idx = self._index(deadline)
        if idx < self._cur:
            idx = self._cur
        _link_tail(<TimerEntry>self._buckets[idx & self._mask], entry)
        entry._deadline = deadline
        entry._wheel = self
        self._count += 1

    cpdef cancel(self, TimerEntry entry):
        """Disarm (from whichever wheel holds it); a no-op if not armed."""
        cdef TimerWheel old
        if entry is None:
            raise TypeError("expected a TimerEntry, not NoneType")
        old = entry._wheel
        if old is not None:
            _unlink(entry)
            old._count -= 1
            entry._wheel = None

    cpdef Py_ssize_t advance(self, double now) except -1:
        """Fire every entry with deadline <= now; return how many fired."""
        cdef long long target, idx, visits, i
        cdef TimerEntry pending, head, e, nxt
        cdef Py_ssize_t fired = 0
        if isnan(now):
            raise ValueError("now is NaN")
        if self._advancing:
            raise RuntimeError("TimerWheel.advance() called from inside on_timer")
        if now < self._time:
            now = self._time  # the wheel's time never goes backwards
        target = self._index(now)
        if self._count == 0:  # idle: nothing to visit
            self._cur = target
            self._time = now
            return 0
        # 1. collect the due entries, in tick order from the current slot.
        pending = self._pending
        idx = self._cur
        visits = target - idx + 1
        if visits > self._mask + 1:
            visits = self._mask + 1
        for i in range(visits):
            head = <TimerEntry>self._buckets[idx & self._mask]
            e = head._next
            while e is not head:
                nxt = e._next
                if e._deadline <= now:
                    _unlink(e)
                    _link_tail(pending, e)
                e = nxt
            idx += 1
        # 2. the wheel is now at `now`; later arms cannot join this call.
        self._cur = target
        self._time = now
        # 3. fire, one pending entry at a time.
        self._advancing = True
        try:
            while pending._next is not pending:
                e = pending._next
                _unlink(e)
                e._wheel = None
                self._count -= 1
                fired += 1
                try:
                    again = e.on_timer(now)
                    if again is not None:
                        self.arm(e, again)
                except Exception as exc:
                    self._report(e, exc)
        finally:
            self._advancing = False
            if pending._next is not pending:
                # A BaseException (KeyboardInterrupt...) escaped from on_timer:
                # the entries not yet fired stay armed, due at the next advance.
                head = <TimerEntry>self._buckets[self._cur & self._mask]
                while pending._next is not pending:
                    e = pending._next
                    _unlink(e)
                    _link_tail(head, e)
        return fired

    def next_deadline(self):
        """The start of the earliest tick holding an armed entry's deadline
        (the wheel's time if one is already due), or None if empty."""
        cdef long long j, cur = self._cur, best
        cdef TimerEntry head, e
        if self._count == 0:
            return None
        if self._pending._next is not self._pending:
            return self._time
        # Within one turn, the first slot holding an entry of its own tick wins.
        for j in range(self._mask + 1):
            head = <TimerEntry>self._buckets[(cur + j) & self._mask]
            e = head._next
            while e is not head:
                if self._index(e._deadline) <= cur + j:
                    return self._time if j == 0 else <double>(cur + j) * self._tick
                e = e._next
        # Every entry is more than one turn away: the earliest of them.
        best = self._index(INFINITY)
        for head in self._buckets:
            e = head._next
            while e is not head:
                if self._index(e._deadline) < best:
                    best = self._index(e._deadline)
                e = e._next
        return <double>best * self._tick

    cdef void _report(self, TimerEntry entry, object exc):
        handler = self.on_error
        if handler is not None:
            try:
                handler(entry, exc)
                return
            except Exception as exc2:  # the handler failed too: print that
                exc = exc2
        try:
            print(f"fastws: exception in on_timer of {entry!r}", file=sys.stderr)
            sys.excepthook(type(exc), exc, exc.__traceback__)
        except Exception:
            pass


# ``loop.time()`` without a bound method made per call: the ``time`` of the
# last loop class seen, when it is a method descriptor (uvloop's: a Cython
# function flagged as one), called with the loop first, unless the loop's own
# __dict__ holds a ``time`` (a test's stand-in clock). None: look it up.
cdef type _time_cls = None
cdef object _time_descr = None
cdef str _TIME = "time"


cdef inline double _loop_time(object loop) except? -1.0:
    global _time_cls, _time_descr
    cdef PyObject* args[1]
    cdef PyObject** dictptr
    cls = type(loop)
    if cls is not _time_cls:
        descr = getattr(cls, _TIME, None)
        _time_cls = cls
        _time_descr = descr if (descr is not None
                                and type(descr).__flags__ & Py_TPFLAGS_METHOD_DESCRIPTOR) else None
    if _time_descr is not None:
        dictptr = _PyObject_GetDictPtr(loop)
        if dictptr == NULL or dictptr[0] == NULL or PyDict_GetItem(<object>dictptr[0], _TIME) == NULL:
            args[0] = <PyObject*>loop
            return PyObject_Vectorcall(_time_descr, args, 1, NULL)
    return loop.time()


@cython.auto_pickle(False)
cdef class LoopDriver:
    """The methods of a timer driver that every connection calls (``now``,
    ``arm``, ``arm_after``, ``cancel``), in C: the base of
    fastws.timers.WheelDriver, which starts the ticks (``_start``, Python,
    called when ``_handle`` is None) and holds the rest. ``_loop_ref`` is a
    weak reference to the event loop, whose ``time()`` is the clock.
    """

    def now(self):
        """The loop's time (the wheel's clock)."""
        return self._now()

    def arm(self, entry, double deadline):
        """Arm or re-arm ``entry`` at ``deadline`` (loop time); O(1)."""
        self._arm(entry, deadline)

    def arm_after(self, entry, double delay):
        """``arm(entry, now() + delay)`` in one call (LoopDriver's own
        ``now`` and ``arm``, called in C)."""
        self._arm(entry, self._now() + delay)

    cdef double _now(self) except? -1.0:
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the event loop of this WheelDriver is gone")
        return _loop_time(loop)

    cdef int _arm(self, entry, double deadline) except -1:
        if self._handle is None:
            self._start()
        wheel = self.wheel
        if type(wheel) is TimerWheel:
            (<TimerWheel>wheel).arm(entry, deadline)
        else:
            wheel.arm(entry, deadline)
        return 0

    def cancel(self, entry):
        """Disarm ``entry``.  When the wheel empties, the next tick stops."""
        wheel = self.wheel
        if type(wheel) is TimerWheel:
            (<TimerWheel>wheel).cancel(entry)
        else:
            wheel.cancel(entry)
