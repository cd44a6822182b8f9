"""The hashed timer wheel (fastws_ext.wheel / fastws._py.wheel) and its driver.

Every wheel test runs on a fake clock (the wheel reads none: ``advance(now)``
is the clock) against both implementations through the ``impl`` fixture;
``test_differential_*`` runs random programs on both and compares their
firing logs, and ``test_model_*`` checks both against a brute-force model of
the contract (which entries fire at which advance, and in which order).
Only the WheelDriver tests use a real event loop (stock asyncio and uvloop),
for a fraction of a second.
"""
from __future__ import annotations

import asyncio
import gc
import math
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastws import codec as _codec_mod
from fastws.timers import WheelDriver, get_driver

HYP = settings(max_examples=150, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def entry_class(impl):
    """A TimerEntry subclass that logs its firings and does what it is told."""

    class Entry(impl.TimerEntry):
        __slots__ = ("name", "log", "action")

        def __init__(self, name, log, action=None):
            self.name = name
            self.log = log
            self.action = action  # callable(entry, now) -> return value

        def on_timer(self, now):
            self.log.append((self.name, now))
            if self.action is not None:
                return self.action(self, now)
            return None

        def __repr__(self):
            return f"<Entry {self.name}>"

    return Entry


@pytest.fixture
def E(impl):
    return entry_class(impl)


# -- basics -------------------------------------------------------------------


def test_subclass_with_slots_and_protocol(impl):
    # The connection class is TimerEntry + asyncio.Protocol with __slots__.
    class Conn(impl.TimerEntry, asyncio.Protocol):
        __slots__ = ("a", "b")

        def __init__(self, a):
            super().__init__()
            self.a = a
            self.b = None

        def on_timer(self, now):
            self.b = now

    c = Conn(1)
    assert not hasattr(c, "__dict__")
    assert c.a == 1 and not c.armed and c.deadline == math.inf
    assert isinstance(c, asyncio.BaseProtocol)
    w = impl.TimerWheel(1.0, 8)
    w.arm(c, 2.0)
    assert c.armed and c.deadline == 2.0 and len(w) == 1
    assert w.advance(2.0) == 1
    assert c.b == 2.0 and not c.armed and len(w) == 0

    # A subclass need not call super().__init__(), may add __weakref__, and
    # the base on_timer does nothing.
    class Bare(impl.TimerEntry, asyncio.Protocol):
        __slots__ = ("x", "__weakref__")

        def __init__(self, x):
            self.x = x

    b = Bare(5)
    assert b.deadline == math.inf and not b.armed
    w.arm(b, 3.0)
    assert w.advance(3.0) == 1 and not b.armed
    import weakref
    assert weakref.ref(b)() is b
    assert impl.TimerEntry().on_timer(1.0) is None


def test_constructor_and_properties(impl):
    w = impl.TimerWheel(0.25, 64, now=10.0)
    assert (w.tick, w.slots, w.time, len(w)) == (0.25, 64, 10.0, 0)
    assert w.next_deadline() is None
    assert w.on_error is None
    w2 = impl.TimerWheel()
    assert (w2.tick, w2.slots, w2.time) == (1.0, 512, 0.0)
    for bad in (0, 3, 6, 100, -8):
        with pytest.raises(ValueError):
            impl.TimerWheel(1.0, bad)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            impl.TimerWheel(bad, 8)
    with pytest.raises(ValueError):
        impl.TimerWheel(1.0, 8, now=math.nan)
    assert impl.TimerWheel(1.0, 1).slots == 1  # one slot is a valid (degenerate) ring


def test_arm_cancel_rearm(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    a, b = E("a", log), E("b", log)
    w.arm(a, 3.5)
    w.arm(b, 3.5)
    w.arm(a, 5.0)  # re-arm moves it
    assert (len(w), a.deadline) == (2, 5.0)
    w.cancel(b)
    w.cancel(b)  # a no-op
    assert (len(w), b.armed, b.deadline) == (1, False, math.inf)
    assert w.advance(4.9) == 0 and log == []
    assert w.advance(5.0) == 1 and log == [("a", 5.0)]
    w.arm(a, math.inf)  # +inf disarms
    assert not a.armed
    with pytest.raises(ValueError):
        w.arm(a, math.nan)
    with pytest.raises(TypeError):
        w.arm(None, 1.0)
    with pytest.raises(TypeError):
        w.arm(object(), 1.0)
    with pytest.raises(TypeError):
        w.arm(a, "1.0")
    with pytest.raises(TypeError):
        w.cancel(None)
    w.arm(a, 7)  # an int is a fine deadline
    assert a.deadline == 7.0 and isinstance(a.deadline, float)


def test_entry_moves_between_wheels(impl, E):
    log = []
    w1, w2 = impl.TimerWheel(1.0, 8), impl.TimerWheel(1.0, 8)
    a = E("a", log)
    w1.arm(a, 2.0)
    w2.arm(a, 3.0)
    assert (len(w1), len(w2)) == (0, 1)
    assert w1.advance(10.0) == 0
    w1.cancel(a)  # disarms it from the wheel that holds it
    assert (len(w2), a.armed) == (0, False)
    assert w2.advance(10.0) == 0


def test_fires_exactly_at_deadline_not_before(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    e = E("e", log)
    w.arm(e, 2.3)
    for now in (0.5, 1.0, 2.0, 2.29):
        assert w.advance(now) == 0
    assert w.advance(2.3) == 1 and log == [("e", 2.3)]


@pytest.mark.parametrize("turns", [1, 2, 3, 10])
def test_rollover_at_turn_boundaries(impl, E, turns):
    # Deadlines exactly at k * slots * tick sit in slot 0 of later turns.
    log = []
    slots, tick = 8, 0.5
    w = impl.TimerWheel(tick, slots)
    turn = slots * tick
    entries = [E(k, log) for k in range(turns + 1)]
    for k, e in enumerate(entries):
        w.arm(e, k * turn)
    for step in range(1, int(turns * slots) + 1):
        now = step * tick
        w.advance(now)
        assert [n for n, _ in log] == [k for k in range(turns + 1) if k * turn <= now]
        assert all(t == k * turn if k else t == tick for k, t in log)
    assert len(w) == 0


def test_long_deadlines_many_turns(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 4)  # a turn is 4 s
    deadlines = {"a": 3.0, "b": 7.0, "c": 11.5, "d": 400.0, "e": 4000.25}
    es = {n: E(n, log) for n in deadlines}
    for n, d in deadlines.items():
        w.arm(es[n], d)
    fired_at = {}
    for step in range(1, 4100):
        w.advance(float(step))
        for n, t in log:
            fired_at.setdefault(n, t)
    for n, d in deadlines.items():
        assert d <= fired_at[n] < d + 1.0, n  # at most one tick late
    assert len(log) == len(deadlines) and len(w) == 0


def test_past_deadline_fires_at_next_advance(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8, now=100.0)
    e, f = E("e", log), E("f", log)
    w.arm(e, 3.0)  # long past
    w.arm(f, -1e9)
    assert w.next_deadline() == 100.0
    assert w.advance(100.0) == 2  # the same time is a "next advance"
    assert [n for n, _ in log] == ["e", "f"]


def test_time_never_goes_backwards(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8, now=50.0)
    e = E("e", log)
    w.arm(e, 49.0)
    assert w.advance(10.0) == 1 and log == [("e", 50.0)]
    assert w.time == 50.0
    with pytest.raises(ValueError):
        w.advance(math.nan)


# -- huge jumps -----------------------------------------------------------------


def test_huge_jump_visits_one_turn_and_keeps_rounds(impl, E):
    log = []
    slots, tick = 8, 1.0
    w = impl.TimerWheel(tick, slots)
    jump = 1e6 * slots * tick  # a million turns
    near = [E(f"n{i}", log) for i in range(slots)]
    for i, e in enumerate(near):
        w.arm(e, i + 0.5)
    # Far ones in every slot, due at various turns after the jump.
    far = {E(f"f{i}", log): jump + i * 3.7 for i in range(20)}
    for e, d in far.items():
        w.arm(e, d)
    t0 = time.perf_counter()
    assert w.advance(jump) == len(near) + 1  # f0 is due exactly at the jump
    assert time.perf_counter() - t0 < 0.5  # not a million turns of empty slots
    assert {n for n, _ in log} == {e.name for e in near} | {"f0"}
    assert w.time == jump
    # The survivors still fire exactly when due, tick by tick.
    log.clear()
    step = 0
    while len(w):
        step += 1
        now = jump + step * 0.5
        w.advance(now)
        for n, t in log:
            e = next(x for x in far if x.name == n)
            assert far[e] <= t < far[e] + tick
        log.clear()
    assert step < 20 * 3.7 / 0.5 + 4


def test_huge_jump_on_tiny_tick_is_fast(impl, E):
    log = []
    w = impl.TimerWheel(0.001, 512)
    es = [E(i, log) for i in range(1000)]
    for i, e in enumerate(es):
        w.arm(e, i * 0.37)
    t0 = time.perf_counter()
    assert w.advance(1e12) == 1000  # 10**15 ticks
    assert w.advance(1e300) == 0  # absurd times are clamped, not overflowed
    assert time.perf_counter() - t0 < 1.0
    w.arm(es[0], 1e300)
    assert w.advance(1e300) == 1


# -- order ------------------------------------------------------------------


def test_firing_order_is_tick_then_arm_order(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    plan = [("a", 2.9), ("b", 0.1), ("c", 2.0), ("d", 0.5), ("e", 1.5), ("f", 2.1)]
    es = {n: E(n, log) for n, _ in plan}
    for n, d in plan:
        w.arm(es[n], d)
    w.arm(es["b"], 0.2)  # re-arming moves b behind d in tick 0
    w.advance(3.0)
    # tick 0: d, b; tick 1: e; tick 2: a, c, f (arm order, not deadline order)
    assert [n for n, _ in log] == ["d", "b", "e", "a", "c", "f"]


def test_order_after_a_wrapping_jump(impl, E):
    # A jump of more than one turn visits each slot once, from the current one.
    log = []
    w = impl.TimerWheel(1.0, 4, now=2.0)  # current slot 2
    for n, d in [("s1", 5.0), ("s3", 3.0), ("s0", 4.0), ("s2", 2.5), ("s2b", 6.0)]:
        w.arm(E(n, log), d)
    w.advance(100.0)
    assert [n for n, _ in log] == ["s2", "s2b", "s3", "s0", "s1"]


# -- re-entrancy --------------------------------------------------------------


def test_on_timer_rearms_itself_by_return_value(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    e = E("e", log, action=lambda self, now: now + 2.5)
    w.arm(e, 1.0)
    for now in range(1, 11):
        w.advance(float(now))
    assert [t for _, t in log] == [1.0, 4.0, 7.0, 10.0]
    assert e.deadline == 12.5


def test_rearm_in_the_past_fires_next_advance_not_now(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    e = E("e", log, action=lambda self, now: now - 5.0)  # always overdue
    w.arm(e, 1.0)
    assert w.advance(1.0) == 1  # no infinite loop
    assert w.advance(1.0) == 1
    assert w.advance(9.0) == 1
    assert len(log) == 3 and e.armed


def test_on_timer_returning_zero_rearms(impl, E):
    # 0.0 is a deadline, not "false": only None means "do not re-arm".
    log = []
    w = impl.TimerWheel(1.0, 8, now=-5.0)
    e = E("e", log, action=lambda self, now: 0.0 if now < 0 else None)
    w.arm(e, -3.0)
    w.advance(-2.0)
    assert e.deadline == 0.0
    w.advance(0.0)
    assert log == [("e", -2.0), ("e", 0.0)] and not e.armed


def test_on_timer_cancels_or_arms_others_in_the_same_slot(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)
    es = {}

    def first(self, now):
        w.cancel(es["victim"])      # due in this very slot: must not fire
        w.cancel(es["later"])       # not due yet
        w.arm(es["moved"], 50.0)    # due in this slot, moved away
        w.arm(es["fresh"], now)     # newly armed, due now: next advance
        w.arm(es["late2"], 0.0)     # past: next advance
        return None

    es["first"] = E("first", log, first)
    for n in ("victim", "moved", "later", "fresh", "late2", "last"):
        es[n] = E(n, log)
    w.arm(es["first"], 1.1)
    w.arm(es["victim"], 1.2)
    w.arm(es["moved"], 1.3)
    w.arm(es["later"], 1.9)
    w.arm(es["last"], 1.4)
    assert w.advance(1.5) == 2
    assert [n for n, _ in log] == ["first", "last"]
    assert not es["victim"].armed and not es["later"].armed
    assert es["moved"].deadline == 50.0
    log.clear()
    assert w.advance(1.5) == 2
    assert [n for n, _ in log] == ["fresh", "late2"]
    assert len(w) == 1


def test_on_timer_cancels_itself_or_arms_itself(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)

    def self_cancel(self, now):
        w.cancel(self)  # not armed any more: a no-op
        return None

    def self_arm(self, now):
        w.arm(self, now + 3.0)  # armed by hand, returns None: stays armed
        return None

    def arm_then_return(self, now):
        w.arm(self, now + 3.0)
        return now + 1.0  # the returned deadline wins

    def arm_then_cancel(self, now):
        w.arm(self, now + 3.0)
        w.cancel(self)
        return None

    a = E("a", log, self_cancel)
    b = E("b", log, self_arm)
    c = E("c", log, arm_then_return)
    d = E("d", log, arm_then_cancel)
    for e in (a, b, c, d):
        w.arm(e, 1.0)
    assert w.advance(1.0) == 4
    assert (a.armed, b.deadline, c.deadline, d.armed) == (False, 4.0, 2.0, False)
    assert len(w) == 2


def test_on_timer_sees_itself_disarmed(impl, E):
    seen = []
    w = impl.TimerWheel(1.0, 8)
    e = E("e", [], lambda self, now: seen.append((self.armed, self.deadline, len(w))))
    w.arm(e, 1.0)
    w.advance(1.0)
    assert seen == [(False, math.inf, 0)]


def test_advance_inside_on_timer_is_refused(impl, E):
    errors = []
    w = impl.TimerWheel(1.0, 8)
    w.on_error = lambda entry, exc: errors.append((entry.name, type(exc)))
    e = E("e", [], lambda self, now: w.advance(now + 10))
    w.arm(e, 1.0)
    assert w.advance(1.0) == 1
    assert errors == [("e", RuntimeError)]
    w.arm(e, 2.0)
    e.action = None
    assert w.advance(2.0) == 1  # the guard was released


def test_next_deadline_called_from_on_timer(impl, E):
    seen = []
    w = impl.TimerWheel(1.0, 8)
    a = E("a", [], lambda self, now: seen.append(w.next_deadline()))
    b = E("b", [])
    w.arm(a, 1.0)
    w.arm(b, 1.0)
    w.advance(1.5)
    assert seen == [1.5]  # b is still pending in this advance


# -- errors -----------------------------------------------------------------


def test_exception_goes_to_on_error_and_the_wheel_keeps_going(impl, E):
    log, errors = [], []
    w = impl.TimerWheel(1.0, 8)
    w.on_error = lambda entry, exc: errors.append((entry.name, exc))

    def boom(self, now):
        raise ValueError("boom")

    w.arm(E("bad", log, boom), 1.0)
    w.arm(E("good", log), 1.0)
    w.arm(E("badret", log, lambda self, now: "soon"), 1.0)
    assert w.advance(1.0) == 3
    assert [n for n, _ in log] == ["bad", "good", "badret"]
    assert [(n, type(x)) for n, x in errors] == [("bad", ValueError), ("badret", TypeError)]
    assert len(w) == 0


def test_exception_without_on_error_is_printed(impl, E, monkeypatch, capsys):
    hooked = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: hooked.append(a))
    w = impl.TimerWheel(1.0, 8)

    def boom(self, now):
        raise KeyError("k")

    w.arm(E("bad", [], boom), 1.0)
    w.arm(E("good", []), 1.0)
    assert w.advance(1.0) == 2
    assert len(hooked) == 1 and hooked[0][0] is KeyError
    assert "on_timer" in capsys.readouterr().err

    # A failing on_error: its own exception is printed instead.
    hooked.clear()
    w.on_error = lambda entry, exc: 1 / 0
    w.arm(E("bad", [], boom), 2.0)
    assert w.advance(2.0) == 1
    assert hooked[0][0] is ZeroDivisionError


def test_base_exception_propagates_and_keeps_the_rest_armed(impl, E):
    log = []
    w = impl.TimerWheel(1.0, 8)

    def interrupt(self, now):
        raise KeyboardInterrupt

    es = [E("a", log), E("int", log, interrupt), E("b", log), E("c", log)]
    for e in es:
        w.arm(e, 1.0)
    with pytest.raises(KeyboardInterrupt):
        w.advance(1.0)
    assert [n for n, _ in log] == ["a", "int"]
    assert len(w) == 2 and es[2].armed and es[3].armed
    assert w.advance(1.0) == 2
    assert [n for n, _ in log] == ["a", "int", "b", "c"]


# -- the contract, as a brute-force model --------------------------------------


class Model:
    """The wheel's contract in a few lines: a dict of deadlines and the order
    key ((effective tick - current tick) mod slots, arm sequence)."""

    def __init__(self, tick, slots, now):
        self.tick, self.slots, self.time = tick, slots, now
        self.cur = self.index(now)
        self.armed = {}  # name -> (deadline, effective tick, seq)
        self.seq = 0

    def index(self, t):
        q = t / self.tick
        return math.floor(max(-2.0**61, min(2.0**61, q)))

    def arm(self, name, d):
        self.armed.pop(name, None)
        if d == math.inf:
            return
        self.seq += 1
        self.armed[name] = (d, max(self.index(d), self.cur), self.seq)

    def cancel(self, name):
        self.armed.pop(name, None)

    def due(self, now):
        now = max(now, self.time)
        due = [(n, v) for n, v in self.armed.items() if v[0] <= now]
        due.sort(key=lambda nv: ((nv[1][1] - self.cur) % self.slots, nv[1][2]))
        self.cur = self.index(now)
        self.time = now
        for n, _ in due:
            del self.armed[n]
        return now, [n for n, _ in due]

    def next_deadline(self):
        if not self.armed:
            return None
        m = min(v[1] for v in self.armed.values())
        return self.time if m <= self.cur else m * self.tick


deadline_st = st.one_of(
    st.integers(-4, 200).map(lambda k: k * 0.25),  # on and around tick boundaries
    st.floats(-5.0, 60.0, allow_nan=False),
    st.floats(60.0, 1e7, allow_nan=False),  # many turns away
    st.just(math.inf),
)
advance_st = st.one_of(
    st.floats(0.0, 3.0, allow_nan=False),
    st.integers(0, 40).map(lambda k: k * 0.25),
    st.floats(0.0, 1e6, allow_nan=False),  # jumps of many turns
)
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, 11), deadline_st),
        st.tuples(st.just("cancel"), st.integers(0, 11)),
        st.tuples(st.just("advance"), advance_st),
    ),
    max_size=60,
)
# What an entry's on_timer returns, in terms of now: None, or now + delta.
rearm_st = st.one_of(st.none(), st.floats(-3.0, 30.0, allow_nan=False))


@HYP
@given(
    tick=st.sampled_from([0.25, 1.0, 0.1]),
    slots=st.sampled_from([1, 2, 4, 8, 64]),
    start=st.sampled_from([0.0, 3.3, -7.0, 1e6]),
    rearms=st.lists(rearm_st, min_size=12, max_size=12),
    ops=ops_st,
)
def test_model_fire_sets_and_order(impl, tick, slots, start, rearms, ops):
    w = impl.TimerWheel(tick, slots, start)
    m = Model(tick, slots, start)
    log = []
    Entry = entry_class(impl)

    def action(self, now):
        delta = rearms[self.name]
        return None if delta is None else now + delta

    es = [Entry(i, log, action) for i in range(12)]
    now = start
    for op in ops:
        if op[0] == "arm":
            w.arm(es[op[1]], start + op[2])
            m.arm(op[1], start + op[2])
        elif op[0] == "cancel":
            w.cancel(es[op[1]])
            m.cancel(op[1])
        else:
            now += op[1]
            log.clear()
            fired = w.advance(now)
            mnow, expect = m.due(now)
            assert [n for n, _ in log] == expect
            assert fired == len(expect)
            assert all(t == mnow for _, t in log)
            for n in expect:  # re-arm as on_timer did, in firing order
                if rearms[n] is not None:
                    m.arm(n, mnow + rearms[n])
        assert len(w) == len(m.armed)
        assert w.time == m.time
        assert w.next_deadline() == m.next_deadline()
        for i, e in enumerate(es):
            assert e.deadline == (m.armed[i][0] if i in m.armed else math.inf)


@HYP
@given(
    tick=st.sampled_from([0.25, 1.0, 0.05]),
    slots=st.sampled_from([1, 4, 16]),
    deadlines=st.lists(st.floats(0.0, 200.0, allow_nan=False), min_size=1, max_size=40),
)
def test_at_most_one_tick_late_when_driven_per_tick(impl, tick, slots, deadlines):
    # Driven as WheelDriver drives it, at each tick boundary k * tick.
    log = []
    Entry = entry_class(impl)
    w = impl.TimerWheel(tick, slots)
    es = [Entry(i, log) for i in range(len(deadlines))]
    for e, d in zip(es, deadlines):
        w.arm(e, d)
    k = 0
    while len(w):
        k += 1
        w.advance(k * tick)
    assert sorted(n for n, _ in log) == list(range(len(deadlines)))
    for n, t in log:
        assert deadlines[n] <= t <= deadlines[n] + tick * (1 + 1e-9)


# -- differential: Cython vs pure Python, with callbacks that meddle -------------


behaviour_st = st.one_of(
    st.tuples(st.just("none")),
    st.tuples(st.just("return"), st.floats(-2.0, 20.0, allow_nan=False)),
    st.tuples(st.just("raise")),
    st.tuples(st.just("cancel"), st.integers(0, 9)),
    st.tuples(st.just("arm"), st.integers(0, 9), st.floats(-2.0, 20.0, allow_nan=False)),
    st.tuples(st.just("self_arm"), st.floats(-2.0, 20.0, allow_nan=False)),
    st.tuples(st.just("bad_return")),
)


def run_program(impl, tick, slots, behaviours, ops):
    """Run ops on a fresh wheel; return the observable history."""
    history = []
    w = impl.TimerWheel(tick, slots, 0.0)
    w.on_error = lambda entry, exc: history.append(("error", entry.name, type(exc).__name__))
    Entry = entry_class(impl)
    es = []

    def action(self, now):
        history.append(("fire", self.name, now, len(w)))
        b = behaviours[self.name]
        kind = b[0]
        if kind == "return":
            return now + b[1]
        if kind == "raise":
            raise ValueError(self.name)
        if kind == "cancel":
            w.cancel(es[b[1]])
        elif kind == "arm":
            w.arm(es[b[1]], now + b[2])
        elif kind == "self_arm":
            w.arm(self, now + b[1])
        elif kind == "bad_return":
            return "never"
        return None

    es.extend(Entry(i, [], action) for i in range(10))
    now = 0.0
    for op in ops:
        if op[0] == "arm":
            w.arm(es[op[1]], op[2])
        elif op[0] == "cancel":
            w.cancel(es[op[1]])
        else:
            now += op[1]
            history.append(("advance", w.advance(now)))
        history.append((len(w), w.time, w.next_deadline(),
                        tuple(e.deadline for e in es)))
    return history


@HYP
@given(
    tick=st.sampled_from([0.25, 1.0]),
    slots=st.sampled_from([1, 2, 8]),
    behaviours=st.lists(behaviour_st, min_size=10, max_size=10),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("arm"), st.integers(0, 9), st.floats(-2.0, 100.0, allow_nan=False)),
            st.tuples(st.just("cancel"), st.integers(0, 9)),
            st.tuples(st.just("advance"), advance_st),
        ),
        max_size=50,
    ),
)
def test_differential_cython_vs_python(both_impls, tick, slots, behaviours, ops):
    cy, py = both_impls
    assert run_program(cy, tick, slots, behaviours, ops) == \
        run_program(py, tick, slots, behaviours, ops)


# -- WheelDriver on a real loop -------------------------------------------------


def loop_factories():
    yield pytest.param(asyncio.new_event_loop, id="asyncio")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        yield pytest.param(None, id="uvloop", marks=pytest.mark.skip("uvloop not installed"))
    else:
        yield pytest.param(uvloop.new_event_loop, id="uvloop")


@pytest.fixture(params=list(loop_factories()))
def loop(request):
    loop = request.param()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def pending_timers(loop):
    """Live (not cancelled) timer handles in a stock asyncio loop; None if the
    loop keeps them out of sight (uvloop)."""
    scheduled = getattr(loop, "_scheduled", None)
    if scheduled is None:
        return None
    return [h for h in scheduled if not h.cancelled()]


TICK = 0.01


def test_driver_fires_and_stops_when_empty(loop, impl):
    fired = []

    class Conn(impl.TimerEntry, asyncio.Protocol):
        __slots__ = ("name", "due")

        def __init__(self, name):
            self.name = name

        def on_timer(self, now):
            fired.append((self.name, loop.time() - self.due, now - self.due))

    driver = WheelDriver(loop, tick=TICK, slots=64, wheel_cls=impl.TimerWheel)
    assert not driver.scheduled and pending_timers(loop) in ([], None)

    async def main():
        now = driver.now()
        assert now == pytest.approx(loop.time(), abs=0.005)
        for i, delay in enumerate((0.02, 0.035, 0.05)):
            c = Conn(i)
            c.due = now + delay
            driver.arm(c, c.due)
        assert driver.scheduled
        if pending_timers(loop) is not None:
            assert len(pending_timers(loop)) == 1  # one call_at for all entries
        await asyncio.sleep(0.15)

    loop.run_until_complete(main())
    assert sorted(n for n, _, _ in fired) == [0, 1, 2]
    for _, late, wheel_late in fired:
        # Never early; at most one tick late plus whatever the loop itself is
        # late (the exact bound is tested on the fake clock above).
        assert wheel_late >= 0.0
        assert -0.002 <= late <= TICK + 0.05  # uvloop's clock has ms steps
    assert len(driver.wheel) == 0
    assert not driver.scheduled  # the empty wheel stopped ticking
    assert pending_timers(loop) in ([], None)


def test_driver_rearm_keeps_ticking_cancel_stops(loop, impl):
    count = []

    class Ping(impl.TimerEntry):
        __slots__ = ()

        def on_timer(self, now):
            count.append(now)
            return now + 0.02

    driver = WheelDriver(loop, tick=TICK, wheel_cls=impl.TimerWheel)
    p = Ping()

    elapsed = []

    async def main():
        start = loop.time()
        driver.arm(p, driver.now() + 0.02)
        await asyncio.sleep(0.12)
        assert driver.scheduled and p.armed
        driver.cancel(p)
        elapsed.append(loop.time() - start)
        fired = len(count)
        await asyncio.sleep(3 * TICK)
        assert len(count) == fired  # nothing fires after cancel

    loop.run_until_complete(main())
    # Re-armed every 0.02 s: bounded by the time that really passed (a loaded
    # machine makes sleeps longer, and a late tick makes fewer fires).
    assert 1 <= len(count) <= elapsed[0] / 0.02 + 1
    assert not driver.scheduled
    assert pending_timers(loop) in ([], None)

    # Arming again on the idle wheel starts the ticks again.
    async def again():
        driver.arm(p, driver.now())
        assert driver.scheduled
        while len(count) == n:
            await asyncio.sleep(TICK)
        driver.cancel(p)
        fired = len(count)
        await asyncio.sleep(2 * TICK)
        assert len(count) == fired

    n = len(count)
    loop.run_until_complete(asyncio.wait_for(again(), 5))
    assert len(count) >= n + 1 and not driver.scheduled


def test_driver_arm_from_on_timer_and_errors_to_loop_handler(loop, impl):
    contexts, fired = [], []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    driver = WheelDriver(loop, tick=TICK, wheel_cls=impl.TimerWheel)

    class Chain(impl.TimerEntry):
        __slots__ = ("nxt",)

        def on_timer(self, now):
            fired.append(self)
            if self.nxt is not None:
                driver.arm(self.nxt, now + TICK)  # the wheel is empty right now
            else:
                raise RuntimeError("last")

    a, b = Chain(), Chain()
    a.nxt, b.nxt = b, None

    async def main():
        driver.arm(a, driver.now())
        await asyncio.sleep(6 * TICK)

    loop.run_until_complete(main())
    assert fired == [a, b]
    assert len(contexts) == 1 and isinstance(contexts[0]["exception"], RuntimeError)
    assert contexts[0]["timer_entry"] is b
    assert not driver.scheduled and pending_timers(loop) in ([], None)


def test_driver_close(loop, impl):
    driver = WheelDriver(loop, tick=TICK, wheel_cls=impl.TimerWheel)
    e = impl.TimerEntry()
    driver.arm(e, driver.now() + 1.0)
    assert driver.scheduled
    driver.close()
    assert not driver.scheduled and pending_timers(loop) in ([], None)
    with pytest.raises(RuntimeError):
        driver.arm(impl.TimerEntry(), 0.0)


def test_driver_default_wheel_is_the_selected_codec(loop):
    driver = WheelDriver(loop)
    assert type(driver.wheel) is _codec_mod.TimerWheel
    assert (driver.wheel.tick, driver.wheel.slots) == (1.0, 512)
    assert driver.wheel.time == pytest.approx(loop.time(), abs=0.01)


def test_get_driver_one_per_loop(loop):
    d1 = get_driver(loop, tick=0.5)
    assert get_driver(loop, tick=0.5) is d1
    d2 = get_driver(loop, tick=1.0)  # another tick: a wheel of its own
    assert d2 is not d1 and d2.wheel.tick == 1.0
    assert get_driver(loop, tick=1) is d2

    async def running():
        return get_driver(tick=0.5)

    assert loop.run_until_complete(running()) is d1
    other = asyncio.new_event_loop()
    try:
        assert get_driver(other, tick=0.5) is not d1
    finally:
        other.close()
    d1.close()
    assert get_driver(loop, tick=0.5) is not d1  # a closed driver is replaced
    d2.close()


def test_get_driver_does_not_keep_the_loop_alive():
    import weakref

    from fastws import timers

    other = asyncio.new_event_loop()
    get_driver(other)
    ref = weakref.ref(other)
    other.close()
    del other
    gc.collect()
    assert ref() is None
    assert all(lp is not None for lp in timers._drivers.keys())
