"""Bytes per connection that the per-connection rate limits add (issue #15: at most 64).

    python bench/micro/limiter_memory.py [--n 10000] [--baseline DIR]

For each implementation (the extension, then the pure-Python twins; each in a
child process, FASTWS_PURE_PYTHON=0/1) and each API level, N connection
objects of the server's own class are made with rate limits off and with
``rate_limit`` and ``rate_limit_bytes`` on, and tracemalloc counts what they
hold in three states: idle (as after the handshake), receiving (one masked
32-byte message fed to each: they hold a frame parser, and with limits on
the message was counted), and idle again (the parser dropped, as the
keepalive does when the peer is silent). The difference on - off divided by
N is what the limits cost a connection in that state. tracemalloc counts
the bytes asked of the allocator (pymalloc hands out multiples of 16);
``__basicsize__`` and GC tracking of the ``Limiter`` are shown beside.
``--baseline DIR``: the same, also for another checkout (built in place),
in the same run. Not part of the test suite; see docs/guide/access-control.md.
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
LIMITS = {"rate_limit": (10**9, 2 * 10**9), "rate_limit_bytes": (2**50, 2**51)}
FRAME = bytes([0x82, 0x80 | 32]) + b"\0\0\0\0" + b"x" * 32  # masked (key 0), binary, 32 bytes
STATES = ("idle", "receiving", "idle again")


def _held(server, n: int, state: str) -> float:
    """Bytes per connection that n connections of ``server`` hold in ``state``."""
    from fastws.constants import OPEN
    from fastws.server import is_handler

    import fastws

    class Quiet(fastws.Listener):
        def on_message(self, data):
            pass

    keep = [None] * n  # the list itself is allocated before the count starts
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        conn = keep[i] = server._connection_class()
        if state != "idle":
            conn._state = OPEN  # as after the handshake
            if not is_handler(server.app):
                conn._app = Quiet()
            conn._feed(FRAME)
            assert conn._parser is not None
            if state == "idle again":
                assert conn._idle_parser()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del keep
    return total / n


async def _measure(n: int) -> dict:
    import fastws
    from fastws.codec import Limiter, RateLimits

    async def quiet(ws):
        pass

    class Quiet(fastws.Listener):
        def on_message(self, data):
            pass

    out = {"implementation": fastws.IMPLEMENTATION, "apis": {},
           "limiter": [Limiter.__basicsize__, gc.is_tracked(Limiter(RateLimits((1, 1), None)))]}
    for api, app in (("listener", Quiet), ("handler", quiet)):
        plain, limited = fastws.Server(app), fastws.Server(app, **LIMITS)
        out["apis"][api] = {state: _held(limited, n, state) - _held(plain, n, state) for state in STATES}
    return out


def _child(tree: Path, pure: str, n: int) -> dict:
    env = {**os.environ, "FASTWS_PURE_PYTHON": pure, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, "--child", "--n", str(n)], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="connections per measurement (default 10,000)")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="another checkout of fastws (built in place) measured in the same run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.n))))
        return
    print(f"- command: `python bench/micro/limiter_memory.py --n {args.n}"
          + (f" --baseline {args.baseline}`" if args.baseline else "`"))
    print(f"- limits: {LIMITS}; tracemalloc over {args.n:,} connection objects per cell (bytes asked)")
    print()
    print("| code | implementation | API | added: idle | receiving | idle again | Limiter: basicsize, GC-tracked |")
    print("|---|---|---|---:|---:|---:|---|")
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    for pure in ("0", "1"):
        for label, tree in reversed(trees):
            result = _child(tree, pure, args.n)
            size, tracked = result["limiter"]
            for api, m in result["apis"].items():
                cells = " | ".join(f"{m[s]:,.1f} B" for s in STATES)
                print(f"| {label} | {result['implementation']} | {api} | {cells} "
                      f"| {size} B, {'yes' if tracked else 'no'} |")


if __name__ == "__main__":
    main()
