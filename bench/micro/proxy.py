"""What ``proxy=True`` (the clients' default: look in the environment) costs
per connection, next to websockets' own lookup and to a whole connection.

    python bench/micro/proxy.py [-n 20000] [--conns 500]

Rows: fastws.proxy.proxy_for with no proxy variable set, and with
HTTPS_PROXY set and NO_PROXY bypassing the host; websockets' get_proxy (the
peer: urllib's getproxies + proxy_bypass on every connect); urllib's
getproxies alone (the floor of reading the environment that way); and a
blocking fastws.syncclient connect + close over loopback with proxy=None and
with the default, so the lookup is seen as a share of a connection.
See docs/guide/client.md#proxies.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
import threading
import time
import timeit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.meta import machine, versions  # noqa: E402

import fastws  # noqa: E402
from fastws.proxy import proxy_for  # noqa: E402
from fastws.syncclient import connect  # noqa: E402


def per_call(fn, n: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6


def server() -> int:
    ready = threading.Event()
    box = {}

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    def main():
        async def start():
            box["server"] = await fastws.serve(echo, "127.0.0.1", 0)
            ready.set()
            await asyncio.Event().wait()
        asyncio.run(start())

    threading.Thread(target=main, daemon=True).start()
    ready.wait(10)
    return box["server"].port


def connections(port: int, n: int, **kwargs) -> float:
    start = time.perf_counter()
    for _ in range(n):
        connect(f"ws://127.0.0.1:{port}/", **kwargs).close()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=500)
    args = ap.parse_args()
    print(f"# python bench/micro/proxy.py -n {args.n} --conns {args.conns}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {machine()}  {versions()}")
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            del os.environ[name]
    import urllib.request

    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri

    uri = parse_uri("ws://127.0.0.1:8080/")
    rows = [("fastws proxy_for, no proxy set", per_call(lambda: proxy_for(False, "127.0.0.1", 8080), args.n)),
            ("websockets get_proxy, no proxy set", per_call(lambda: get_proxy(uri), args.n)),
            ("urllib getproxies (floor of the urllib way)", per_call(urllib.request.getproxies, args.n))]
    os.environ["HTTPS_PROXY"] = "http://127.0.0.1:3128"
    os.environ["NO_PROXY"] = "127.0.0.1"
    rows += [("fastws proxy_for, HTTPS_PROXY + NO_PROXY bypass", per_call(lambda: proxy_for(False, "127.0.0.1", 8080), args.n)),
             ("websockets get_proxy, HTTPS_PROXY + NO_PROXY bypass", per_call(lambda: get_proxy(uri), args.n))]
    del os.environ["HTTPS_PROXY"], os.environ["NO_PROXY"]
    port = server()
    direct = connections(port, args.conns, proxy=None)
    default = connections(port, args.conns)
    rows += [("sync connect + close, proxy=None", direct), ("sync connect + close, proxy=True (default)", default)]
    print("| what | µs per call |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")
    print(f"\nlookup / websockets' lookup (no proxy set): {rows[0][1] / rows[1][1]:.2f}")
    print(f"lookup / one sync connection (no proxy set): {rows[0][1] / direct:.3f}")


if __name__ == "__main__":
    main()
