"""Hashed timing wheel (Varghese & Lauck; Netty HashedWheelTimer, Kafka TimingWheel).

Same API in fastws._py.wheel.  A power-of-two ring of slots, each a doubly
linked list of entries; arm, cancel and re-arm are O(1); every entry keeps its
exact deadline, so no count of remaining rounds is kept.  The wheel does
no I/O and reads no clock by itself: ``advance(now)`` is driven by one
``loop.call_at`` per tick for the whole loop (fastws.timers.WheelDriver), and
tests drive it with a fake clock.
"""
import asyncio
from typing import Callable, Union

class TimerEntry:
    """Something that can be armed on a wheel (subclass it; a connection is one).

    Subclasses override ``on_timer``.  An entry is on at most one wheel at once.
    """
    def __init__(self) -> None: ...
    @property
    def deadline(self) -> float:
        """When it is due (float('inf') when not armed)."""
    @property
    def armed(self) -> bool: ...
    def on_timer(self, now: float) -> Union[float, None]:
        """Called by ``advance`` once the deadline has passed.  Return a new
        deadline to re-arm (activity re-arms lazily, here), or None."""

class TimerWheel:
    def __init__(self, tick: float = 1.0, slots: int = 512, now: float = 0.0) -> None:
        """``slots`` must be a power of two; ``now`` is the clock's current time."""
    @property
    def tick(self) -> float: ...
    @property
    def slots(self) -> int: ...
    @property
    def time(self) -> float:
        """The time the wheel has advanced to."""
    def arm(self, entry: TimerEntry, deadline: float) -> None:
        """Arm (or re-arm, moving it) ``entry`` to fire at ``deadline``.  The
        entry fires at the first ``advance(now)`` with now >= deadline, at most
        one tick late; a deadline in the past fires at the next advance."""
    def cancel(self, entry: TimerEntry) -> None:
        """Disarm; a no-op if the entry is not armed."""
    def advance(self, now: float) -> int:
        """Fire every entry whose deadline is <= now (calling on_timer, re-arming
        it if that returns a deadline) and return how many fired.  An exception
        from on_timer is not propagated; it is passed to ``on_error(entry, exc)``
        when that attribute is set, else printed with sys.excepthook."""
    def next_deadline(self) -> Union[float, None]:
        """Earliest tick time at which an armed entry may fire, or None if empty."""
    def __len__(self) -> int: ...
    on_error: object

class LoopDriver:
    """The methods of fastws.timers.WheelDriver that connections call, in C;
    the subclass provides ``_start()`` (called by ``arm`` when ``_handle`` is None)."""
    wheel: TimerWheel
    _loop_ref: Callable[[], asyncio.AbstractEventLoop | None]  # a weakref.ref to the loop
    _handle: asyncio.TimerHandle | None
    def now(self) -> float: ...
    def arm(self, entry: TimerEntry, deadline: float) -> None: ...
    def arm_after(self, entry: TimerEntry, delay: float) -> None: ...
    def cancel(self, entry: TimerEntry) -> None: ...
