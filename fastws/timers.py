"""Timers are data, not tasks: one timer wheel per event loop.

A connection owns no ``loop.call_later`` handle per timeout: it *is* a
``TimerEntry`` armed on its loop's wheel (``WheelDriver``, one ``loop.call_at``
per tick, only while something is armed), and ``on_timer`` returns its next
deadline when a timeout has not really expired. The protocol core sees only a
driver: ``now()``, ``arm(entry, deadline)`` and ``cancel(entry)``. Without an
event loop, ``ManualDriver`` is the same over a clock its owner reads and
advances (the blocking client; tests on a fake clock).

See docs/design/timers.md.
"""
from __future__ import annotations

import asyncio
import math
import time
import weakref
from typing import Any, Callable

from .codec import LoopDriver, TimerEntry, TimerWheel

__all__ = ["WheelDriver", "ManualDriver", "get_driver"]


class WheelDriver(LoopDriver):
    """Binds a TimerWheel to an asyncio (or uvloop) event loop.

    Arm entries through :meth:`arm` (not ``driver.wheel.arm``) when the wheel
    may be idle: that is what starts the ticks.  Entries re-armed by the
    value ``on_timer`` returns need nothing more.  An exception from
    ``on_timer`` goes to the loop's exception handler.
    """

    # now(), arm(), arm_after() and cancel() are LoopDriver's (C in the
    # extension build), as are the fields wheel, _loop_ref and _handle.
    __slots__ = ("_tick", "_closed", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = 1.0,
                 slots: int = 512, wheel_cls: type[TimerWheel] | None = None) -> None:
        cls = TimerWheel if wheel_cls is None else wheel_cls
        self.wheel = cls(tick, slots, loop.time())
        self.wheel.on_error = self._on_error
        # Weakly: a driver kept in get_driver's WeakKeyDictionary must not keep
        # its loop alive.  (A pending tick handle keeps the driver alive.)
        self._loop_ref = weakref.ref(loop)
        self._tick = self.wheel.tick
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop_ref()

    @property
    def scheduled(self) -> bool:
        """Whether a tick is pending in the loop."""
        return self._handle is not None

    def close(self) -> None:
        """Stop ticking for good.  Armed entries stay armed but never fire."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        loop = self._loop_ref()
        per_tick = _drivers.get(loop) if loop is not None else None
        if per_tick is not None and per_tick.get(self._tick) is self:
            del per_tick[self._tick]

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("WheelDriver is closed")
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the event loop of this WheelDriver is gone")
        now = loop.time()
        if len(self.wheel) == 0:
            self.wheel.advance(now)  # O(1) on an empty wheel: catch up its clock
        self._schedule(loop, now)

    def _schedule(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        # The next tick boundary strictly after `now`.
        when = (math.floor(now / self._tick) + 1) * self._tick
        if when <= now:  # float rounding at a boundary
            when += self._tick
        self._handle = loop.call_at(when, self._on_tick, when)

    def _on_tick(self, when: float) -> None:
        # self._handle stays set (to the handle now running) during advance,
        # so an on_timer that calls driver.arm does not start a second tick.
        loop = self._loop_ref()
        if loop is None or self._closed:
            self._handle = None
            return
        # A loop may run a handle a hair before `when` (asyncio: up to its
        # clock resolution; uvloop: its millisecond clock): never advance to
        # less than the boundary this tick stands for.
        now = loop.time()
        if now < when:
            now = when
        self.wheel.advance(now)
        if len(self.wheel) and not self._closed:
            self._schedule(loop, now)
        else:
            self._handle = None

    def _on_error(self, entry: TimerEntry, exc: BaseException) -> None:
        loop = self._loop_ref()
        context: dict[str, Any] = {
            "message": f"Exception in on_timer of {entry!r}",
            "exception": exc,
            "timer_entry": entry,
        }
        if loop is not None:
            loop.call_exception_handler(context)
        else:  # pragma: no cover - the wheel prints it instead
            raise exc

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("ticking" if self._handle else "idle")
        return f"<WheelDriver {state} {self.wheel!r}>"


_drivers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, WheelDriver]]" = (
    weakref.WeakKeyDictionary()
)


def get_driver(loop: asyncio.AbstractEventLoop | None = None,
               tick: float = 1.0) -> WheelDriver:
    """The loop's shared WheelDriver for this tick (created on first use).

    ``loop`` defaults to the running loop.  Every connection with the same
    tick shares one wheel and one ``call_at`` per tick; a server and a client
    configured with different ticks in one process get one wheel each.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    tick = float(tick)
    per_tick = _drivers.get(loop)
    if per_tick is None:
        per_tick = _drivers[loop] = {}
    driver = per_tick.get(tick)
    if driver is None or driver._closed:
        driver = per_tick[tick] = WheelDriver(loop, tick)
    return driver


class ManualDriver:
    """A timer driver without an event loop: a wheel over a clock its owner
    reads and advances.

    ``now()`` reads ``clock`` (``time.monotonic`` by default, or a test's
    fake); ``advance()`` fires every entry due by then (their ``on_timer``
    runs inside it). The protocol core arms and cancels through it exactly
    as through a WheelDriver.
    """

    __slots__ = ("wheel", "_clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic, tick: float = 0.05, slots: int = 64) -> None:
        self._clock = clock
        self.wheel = TimerWheel(tick, slots, clock())

    def now(self) -> float:
        return self._clock()

    def arm(self, entry: TimerEntry, deadline: float) -> None:
        self.wheel.arm(entry, deadline)

    def cancel(self, entry: TimerEntry) -> None:
        self.wheel.cancel(entry)

    def advance(self) -> int:
        """Fire what is due by ``now()``; returns how many entries fired."""
        return self.wheel.advance(self._clock())

    def __repr__(self) -> str:
        return f"<ManualDriver {self.wheel!r}>"
