"""Timer wheel benchmark: Cython vs pure-Python twin, and wheel vs call_later.

Part 1 (fake clock, wall time, best of --repeat):
  arm 100k fresh entries; re-arm (move) all 100k; cancel all 100k;
  advance a wheel holding 100k entries of which 1/20 are due per tick (each
  re-arms itself 20 ticks later, so the wheel stays full).

Part 2 (real event loop, CPU seconds from time.process_time):
  15,000 connections each with a periodic timer (--interval, default 0.5 s)
  for --seconds (default 5):
    call_later  one loop handle per connection, re-scheduled by its callback
                (the per-connection-timer approach);
    wheel-*     one WheelDriver (0.05 s ticks) driving 15,000 TimerEntry
                subclasses whose on_timer returns the next due time.
  and an idle loop for the same time, as the floor.  Both approaches fire the
  same number of callbacks (both keep an absolute schedule, due += interval);
  the wheel's fire up to one tick late, call_later's on time.

    python bench/micro/wheel.py [--seconds 5] [--loops asyncio,uvloop]

Not part of the test suite; figures are for this machine only.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/: the harness
from harness.meta import REPO, load_codec  # noqa: E402
from harness.run import head, stamp  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's fastws first

from fastws.timers import WheelDriver  # noqa: E402

N = 100_000
CONNS = 15_000


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        setup = fn()
        t0 = time.perf_counter()
        setup()
        times.append(time.perf_counter() - t0)
    return min(times)


# -- part 1 -----------------------------------------------------------------


def micro(codec, repeat):
    TimerWheel, TimerEntry = codec.TimerWheel, codec.TimerEntry

    class Conn(TimerEntry):
        __slots__ = ("n",)

        def on_timer(self, now):
            self.n += 1
            return now + 20.0

    def fresh():
        entries = []
        for i in range(N):
            e = Conn()
            e.n = 0
            entries.append(e)
        return entries

    results = {}

    def arm():
        w, es = TimerWheel(1.0, 512), fresh()
        deadlines = [1.0 + (i % 1000) * 0.37 for i in range(N)]
        arm_ = w.arm

        def run():
            for e, d in zip(es, deadlines):
                arm_(e, d)
        return run

    def rearm():
        w, es = TimerWheel(1.0, 512), fresh()
        for i, e in enumerate(es):
            w.arm(e, 1.0 + (i % 1000) * 0.37)
        deadlines = [2.0 + (i % 977) * 0.53 for i in range(N)]
        arm_ = w.arm

        def run():
            for e, d in zip(es, deadlines):
                arm_(e, d)
        return run

    def cancel():
        w, es = TimerWheel(1.0, 512), fresh()
        for i, e in enumerate(es):
            w.arm(e, 1.0 + (i % 1000) * 0.37)
        cancel_ = w.cancel

        def run():
            for e in es:
                cancel_(e)
        return run

    ticks = 40

    def advance():
        w, es = TimerWheel(1.0, 512), fresh()
        for i, e in enumerate(es):
            w.arm(e, 1.0 + (i % 20))  # 1/20 due per tick, re-armed 20 ticks on

        def run():
            for k in range(1, ticks + 1):
                w.advance(float(k))
            assert sum(e.n for e in es) == N * ticks // 20
        return run

    results["arm 100k"] = best(arm, repeat)
    results["re-arm 100k"] = best(rearm, repeat)
    results["cancel 100k"] = best(cancel, repeat)
    results["advance 100k, 5k due (per tick)"] = best(advance, repeat) / ticks
    return results


# -- part 2 -----------------------------------------------------------------


def cpu_of(loop_factory, body, seconds):
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        state = body(loop)
        t0, c0 = time.perf_counter(), time.process_time()
        loop.run_until_complete(asyncio.sleep(seconds))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        fired = state() if state else 0
        return cpu, wall, fired
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def idle_body(loop):
    return None


def call_later_body(interval):
    def body(loop):
        fired = [0]

        class Conn:
            __slots__ = ("handle", "due")

            def on_timeout(self):
                fired[0] += 1
                self.due += interval
                self.handle = loop.call_at(self.due, self.on_timeout)

        conns = []
        now = loop.time()
        for i in range(CONNS):
            c = Conn()
            c.due = now + interval * (i + 1) / CONNS
            c.handle = loop.call_at(c.due, c.on_timeout)
            conns.append(c)
        return lambda: fired[0]
    return body


def wheel_body(codec, interval, tick):
    def body(loop):
        fired = [0]

        class Conn(codec.TimerEntry):
            __slots__ = ("due",)

            def on_timer(self, now):
                fired[0] += 1
                self.due += interval
                return self.due

        driver = WheelDriver(loop, tick=tick, slots=512, wheel_cls=codec.TimerWheel)
        now = loop.time()
        conns = []
        for i in range(CONNS):
            c = Conn()
            c.due = now + interval * (i + 1) / CONNS
            driver.arm(c, c.due)
            conns.append(c)

        def done():
            driver.close()
            return fired[0]
        return done
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--tick", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--loops", default="asyncio,uvloop")
    args = ap.parse_args()

    print("\n".join(head(__file__, stamp())))
    codecs = {"cython": None, "python": load_codec("python")}
    try:
        codecs["cython"] = load_codec("cython")
    except ImportError as exc:
        print(f"cython extension not built ({exc}); twin only")
        del codecs["cython"]

    print(f"\n== part 1: fake clock, seconds (best of {args.repeat}) ==")
    res = {name: micro(c, args.repeat) for name, c in codecs.items()}
    names = list(codecs)
    print(f"{'operation':36s}" + "".join(f"{n:>12s}" for n in names)
          + ("     python/cython" if len(names) == 2 else ""))
    for op in res[names[0]]:
        row = f"{op:36s}" + "".join(f"{res[n][op]:12.5f}" for n in names)
        if len(names) == 2:
            row += f"{res['python'][op] / res['cython'][op]:14.1f}x"
        print(row)
    if "cython" in res:
        r = res["cython"]
        print(f"cython per op: arm {r['arm 100k'] / N * 1e9:.0f} ns, re-arm "
              f"{r['re-arm 100k'] / N * 1e9:.0f} ns, cancel {r['cancel 100k'] / N * 1e9:.0f} ns, "
              f"advance {r['advance 100k, 5k due (per tick)'] / (N // 20) * 1e9:.0f} ns per fired "
              "entry (incl. the Python on_timer call)")

    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    print(f"\n== part 2: {CONNS} periodic timers of {args.interval} s for {args.seconds} s "
          f"(wheel tick {args.tick} s), CPU seconds ==")
    for lname in args.loops.split(","):
        if lname not in factories:
            print(f"{lname}: not available")
            continue
        f = factories[lname]
        runs = {"idle loop": cpu_of(f, idle_body, args.seconds),
                "call_later": cpu_of(f, call_later_body(args.interval), args.seconds)}
        for name, c in codecs.items():
            runs[f"wheel-{name}"] = cpu_of(f, wheel_body(c, args.interval, args.tick),
                                           args.seconds)
        idle = runs["idle loop"][0]
        base = runs["call_later"][0] - idle
        print(f"[{lname}]")
        for name, (cpu, wall, fired) in runs.items():
            net = cpu - idle
            ratio = f"  call_later/this {base / net:5.1f}x" if name.startswith("wheel") and net > 0 else ""
            per = f"{net / fired * 1e6:6.2f} us/fire" if fired else " " * 14
            print(f"  {name:12s} cpu {cpu:7.3f} s  (minus idle {net:7.3f} s)  "
                  f"wall {wall:6.2f} s  fired {fired:7d}  {per}{ratio}")


if __name__ == "__main__":
    main()
