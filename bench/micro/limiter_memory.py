"""Bytes per connection that the per-connection rate limits add (issue #15: at most 64).

    python bench/micro/limiter_memory.py [--n 10000]

For each implementation (the extension, then the pure-Python twins in a child
process with FASTWS_PURE_PYTHON=1) and each API level, the server's own
connection class is instantiated N times, with rate limits off and with
``rate_limit`` and ``rate_limit_bytes`` on, and tracemalloc counts the memory
those N connection objects hold (the objects and everything they allocate in
``__init__``: with limits on, the ``Limiter``). The difference divided by N is
what the limits cost an idle connection. While a connection has a frame
parser (it is receiving; an idle one drops it), the parser also holds the
limiter's bound ``deliver``, measured the same way over N bound methods.
``sys.getsizeof`` and ``gc.is_tracked`` of one ``Limiter`` are shown beside.
Not part of the test suite; see docs/guide/access-control.md.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"rate_limit": (100, 200), "rate_limit_bytes": (2**20, 2**22)}


def _held(make, n: int) -> float:
    """Bytes per object that ``make()`` allocates and that stay alive, over n."""
    keep = [None] * n  # the list itself is allocated before the count starts
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        keep[i] = make()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del keep
    return total / n


async def _measure(n: int) -> dict:
    import fastws
    from fastws.server import Server

    class Echo(fastws.Listener):
        def on_message(self, data):
            self.ws.send(data)

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    out = {"implementation": fastws.IMPLEMENTATION, "apis": {}}
    for api, app in (("listener", Echo), ("handler", echo)):
        plain, limited = Server(app), Server(app, **LIMITS)
        off = _held(lambda: plain._connection_class(plain), n)
        on = _held(lambda: limited._connection_class(limited), n)
        conn = limited._connection_class(limited)
        deliver = _held(lambda: conn._limiter.deliver, n)
        out["apis"][api] = {"off": off, "on": on, "deliver": deliver,
                            "getsizeof": sys.getsizeof(conn._limiter),
                            "gc_tracked": gc.is_tracked(conn._limiter),
                            "conn_getsizeof": [sys.getsizeof(plain._connection_class(plain)),
                                               sys.getsizeof(conn)]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="connections per measurement (default 10,000)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.n))))
        return
    print(f"- command: `python bench/micro/limiter_memory.py --n {args.n}`")
    print(f"- limits: {LIMITS}; tracemalloc over {args.n:,} connection objects per cell")
    print()
    print("| implementation | API | connection, limits off | limits on | added per idle connection "
          "| + bound deliver while a parser exists | Limiter: getsizeof, GC-tracked |")
    print("|---|---|---:|---:|---:|---:|---|")
    for pure in ("0", "1"):
        env = {**os.environ, "FASTWS_PURE_PYTHON": pure,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n)], env=env,
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
        for api, m in result["apis"].items():
            print(f"| {result['implementation']} | {api} | {m['off']:,.1f} B | {m['on']:,.1f} B "
                  f"| **{m['on'] - m['off']:,.1f} B** | {m['deliver']:,.1f} B "
                  f"| {m['getsizeof']} B, {'yes' if m['gc_tracked'] else 'no'} |")


if __name__ == "__main__":
    main()
