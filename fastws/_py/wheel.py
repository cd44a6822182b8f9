"""Hashed timing wheel: the pure-Python twin of fastws_ext.wheel (see wheel.pyi).

``slots`` (a power of two) buckets, each a circular doubly linked list threaded
through the entries and closed by a sentinel: link and unlink allocate
nothing. Every entry keeps its exact deadline (it fires at the first
``advance(now)`` with ``now >= deadline``) instead of a count of remaining
rounds, so a jump of any length leaves nothing stale. ``advance`` moves due
entries to a pending list and fires them one at a time; a callback may cancel
or re-arm any entry, and one armed at or before ``now`` fires at the next
advance, never in this one.
See docs/design/timers.md#the-wheel.
"""
from __future__ import annotations

import math
import sys

__all__ = ["LoopDriver", "TimerEntry", "TimerWheel"]

_INF = math.inf
# Tick indices are clamped to +-2**61 so that the twin computes exactly what
# the extension computes with 64-bit integers (no overflow, even for the
# difference of two indices) for absurd deadlines such as 1e300.
_IDX_MAX = 2.0**61


def _index(t: float, tick: float) -> int:
    q = t / tick
    if q > _IDX_MAX:
        q = _IDX_MAX
    elif q < -_IDX_MAX:
        q = -_IDX_MAX
    return math.floor(q)


class TimerEntry:
    """Something that can be armed on a wheel (subclass it; a connection is one).

    Subclasses override ``on_timer``.  The fields are set in ``__new__`` (and
    there is no ``__init__``), so a subclass need not call
    ``super().__init__()`` and cooperative ``__init__`` chains pass straight
    through, as with the extension type whose fields are set in ``__cinit__``.
    """

    __slots__ = ("_prev", "_next", "_wheel", "_deadline")

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self._prev = None
        self._next = None
        self._wheel = None
        self._deadline = _INF
        return self

    @property
    def deadline(self) -> float:
        """When it is due (float('inf') when not armed)."""
        return self._deadline if self._wheel is not None else _INF

    @property
    def armed(self) -> bool:
        return self._wheel is not None

    def on_timer(self, now: float):
        """Called by ``advance`` once the deadline has passed.  Return a new
        deadline to re-arm, or None."""
        return None


def _as_float(x) -> float:
    # What the extension's C double conversion accepts: numbers (anything with
    # __float__ or __index__), not strings.
    if type(x) is float:
        return x
    if isinstance(x, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(x).__name__}")
    return float(x)


def _sentinel() -> TimerEntry:
    s = TimerEntry()
    s._prev = s._next = s
    return s


def _unlink(e: TimerEntry) -> None:
    e._prev._next = e._next
    e._next._prev = e._prev
    e._prev = e._next = None


def _link_tail(head: TimerEntry, e: TimerEntry) -> None:
    last = head._prev
    e._prev = last
    e._next = head
    last._next = e
    head._prev = e


class TimerWheel:
    """A power-of-two ring of ``slots`` buckets of ``tick`` seconds each."""

    __slots__ = ("_tick", "_mask", "_buckets", "_pending", "_cur", "_time",
                 "_count", "_advancing", "on_error")

    def __init__(self, tick: float = 1.0, slots: int = 512, now: float = 0.0) -> None:
        tick = float(tick)
        slots = int(slots)
        now = float(now)
        if not tick > 0.0 or math.isinf(tick):
            raise ValueError(f"tick must be a positive finite number, not {tick!r}")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots!r}")
        if math.isnan(now) or math.isinf(now):
            raise ValueError(f"now must be finite, not {now!r}")
        self._tick = tick
        self._mask = slots - 1
        self._buckets = [_sentinel() for _ in range(slots)]
        self._pending = _sentinel()
        self._cur = _index(now, tick)
        self._time = now
        self._count = 0
        self._advancing = False
        self.on_error = None

    @property
    def tick(self) -> float:
        return self._tick

    @property
    def slots(self) -> int:
        return self._mask + 1

    @property
    def time(self) -> float:
        """The time the wheel has advanced to."""
        return self._time

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (f"<TimerWheel tick={self._tick} slots={self._mask + 1} "
                f"time={self._time} armed={self._count}>")

    def arm(self, entry: TimerEntry, deadline: float) -> None:
        """Arm or move ``entry`` to fire at ``deadline`` (+inf disarms it)."""
        if not isinstance(entry, TimerEntry):
            raise TypeError(f"expected a TimerEntry, not {type(entry).__name__}")
        deadline = _as_float(deadline)
        if math.isnan(deadline):
            raise ValueError("deadline is NaN")
        old = entry._wheel
        if old is not None:
            _unlink(entry)
            old._count -= 1
            entry._wheel = None
        if deadline == _INF:
            return
        idx = _index(deadline, self._tick)
        if idx < self._cur:
            idx = self._cur
        _link_tail(self._buckets[idx & self._mask], entry)
        entry._deadline = deadline
        entry._wheel = self
        self._count += 1

    def cancel(self, entry: TimerEntry) -> None:
        """Disarm (from whichever wheel holds it); a no-op if not armed."""
        if not isinstance(entry, TimerEntry):
            raise TypeError(f"expected a TimerEntry, not {type(entry).__name__}")
        old = entry._wheel
        if old is not None:
            _unlink(entry)
            old._count -= 1
            entry._wheel = None

    def advance(self, now: float) -> int:
        """Fire every entry with deadline <= now; return how many fired."""
        now = _as_float(now)
        if math.isnan(now):
            raise ValueError("now is NaN")
        if self._advancing:
            raise RuntimeError("TimerWheel.advance() called from inside on_timer")
        if now < self._time:
            now = self._time  # the wheel's time never goes backwards
        target = _index(now, self._tick)
        if self._count == 0:  # idle: nothing to visit
            self._cur = target
            self._time = now
            return 0
        # 1. collect the due entries, in tick order from the current slot.
        pending = self._pending
        buckets = self._buckets
        mask = self._mask
        idx = self._cur
        visits = min(target - idx + 1, mask + 1)
        for _ in range(visits):
            head = buckets[idx & mask]
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
        fired = 0
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
                head = buckets[self._cur & mask]
                while pending._next is not pending:
                    e = pending._next
                    _unlink(e)
                    _link_tail(head, e)
        return fired

    def next_deadline(self):
        """The start of the earliest tick holding an armed entry's deadline
        (the wheel's time if one is already due), or None if empty."""
        if self._count == 0:
            return None
        if self._pending._next is not self._pending:
            return self._time
        tick = self._tick
        mask = self._mask
        cur = self._cur
        # Within one turn, the first slot holding an entry of its own tick wins.
        for j in range(mask + 1):
            head = self._buckets[(cur + j) & mask]
            e = head._next
            while e is not head:
                if _index(e._deadline, tick) <= cur + j:
                    return self._time if j == 0 else (cur + j) * tick
                e = e._next
        # Every entry is more than one turn away: the earliest of them.
        best = min(_index(e._deadline, tick) for e in self._iter_entries())
        return best * tick

    def _iter_entries(self):
        for head in self._buckets:
            e = head._next
            while e is not head:
                yield e
                e = e._next

    def _report(self, entry, exc) -> None:
        handler = self.on_error
        if handler is not None:
            try:
                handler(entry, exc)
                return
            except Exception as exc2:  # the handler failed too: print that
                exc = exc2
        print(f"fastws: exception in on_timer of {entry!r}", file=sys.stderr)
        sys.excepthook(type(exc), exc, exc.__traceback__)


class LoopDriver:
    """The methods of a timer driver that every connection calls (``now``,
    ``arm``, ``arm_after``, ``cancel``; C in the extension): the base of
    fastws.timers.WheelDriver, which starts the ticks (``_start``, called
    when ``_handle`` is None) and holds the rest. ``_loop_ref`` is a weak
    reference to the event loop, whose ``time()`` is the clock.
    """

    __slots__ = ("wheel", "_loop_ref", "_handle")

    def now(self) -> float:
        """The loop's time (the wheel's clock)."""
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the event loop of this WheelDriver is gone")
        return loop.time()

    def arm(self, entry, deadline: float) -> None:
        """Arm or re-arm ``entry`` at ``deadline`` (loop time); O(1)."""
        if self._handle is None:
            self._start()
        self.wheel.arm(entry, deadline)

    def arm_after(self, entry, delay: float) -> None:
        """``arm(entry, now() + delay)`` in one call (LoopDriver's own
        ``now`` and ``arm``, as the extension calls them in C)."""
        LoopDriver.arm(self, entry, LoopDriver.now(self) + delay)

    def cancel(self, entry) -> None:
        """Disarm ``entry``.  When the wheel empties, the next tick stops."""
        self.wheel.cancel(entry)
