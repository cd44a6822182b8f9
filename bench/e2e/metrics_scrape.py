"""What one GET /metrics costs the event loop, by open connections.

    python bench/e2e/metrics_scrape.py [--conns 1000,15000,100000]

Builds a Server with N connection objects in its set (as after N handshakes:
each with a parser that has counted messages) and times ``snapshot()`` (the
O(N) sum over the open connections) and the whole response (snapshot plus the
Prometheus text) on this thread: the time the loop would be blocked by a scrape.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, machine, versions  # noqa: E402

sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", default="1000,15000,100000")
    args = p.parse_args()
    from fastws.apps import EchoListener
    from fastws.metrics import Observability, snapshot
    from fastws.server import Server

    print(f"- machine: {machine()}\n- versions: {versions()}")
    for n in (int(x) for x in args.conns.split(",")):
        server = Server(EchoListener)
        obs = Observability(server)
        for _ in range(n):
            c = server._connection_class()
            c._state = 1
            c.path = "/"
            c._app = EchoListener()
            c._make_parser()
            server.connections.add(c)
        best_snap = min(_time(lambda: snapshot(server)) for _ in range(5))
        best_all = min(_time(lambda: obs.metrics_response().to_bytes()) for _ in range(5))
        print(f"  {n:>7,} connections: snapshot {best_snap * 1e3:6.1f} ms, whole /metrics response "
              f"{best_all * 1e3:6.1f} ms ({best_all / n * 1e9:.0f} ns per connection)")
    return 0


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
