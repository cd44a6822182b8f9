"""Per-connection memory of permessage-deflate, per tier, next to websockets.

Each server runs in its own process (fastws with one compression tier, or
websockets with and without its default compression).  This process opens
N connections with the websockets client (which offers permessage-deflate
with client_max_window_bits, as browsers do), sends one compressible message
(--size, 4 KiB by default) on each and waits for the echo (so every compressor and
decompressor that the tier keeps exists), then reads the server's VmRSS.

per conn = (RSS with N connections open - RSS before any) / N, and
deflate cost = per conn - per conn of the same server with compression off.

    python bench/e2e/deflate_memory.py                 # N=500, every tier
    python bench/e2e/deflate_memory.py --n 1000 --tiers fastws-off,fastws-default
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, free_port, machine, versions  # noqa: E402
from harness.run import GUARD, rss_kib, spawn, stop  # noqa: E402

# tier name -> fastws options (None: websockets)
TIERS = {
    "fastws-off": dict(compression=None),
    "fastws-no-context": dict(compression="deflate", server_no_context_takeover=True,
                              client_no_context_takeover=True),
    "fastws-9/1": dict(compression="deflate", server_max_window_bits=9, client_max_window_bits=9,
                       deflate_mem_level=1),
    "fastws-default": dict(compression="deflate"),  # 12 / memLevel 5, context takeover
    "fastws-15/8": dict(compression="deflate", server_max_window_bits=15, client_max_window_bits=15,
                        deflate_mem_level=8),
    "websockets-off": None,
    "websockets-default": None,
}


def serve(tier: str, port: int) -> None:
    """The server side (a child process)."""
    if tier.startswith("websockets"):
        from websockets.asyncio.server import serve as ws_serve

        async def echo(ws):
            async for m in ws:
                await ws.send(m)

        async def main():
            kwargs = {"compression": None} if tier == "websockets-off" else {}
            async with ws_serve(echo, "127.0.0.1", port, ping_interval=None, **kwargs) as server:
                print("ready", flush=True)
                await server.serve_forever()

        asyncio.run(main())
        return
    sys.path.insert(0, str(REPO))
    import uvloop

    import fastws
    from fastws.apps import EchoListener

    async def main():
        server = await fastws.serve(EchoListener, "127.0.0.1", port, ping_interval=None,
                                    compression_threshold=0, **TIERS[tier])
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


async def measure(tier: str, n: int, size: int) -> tuple[float, str]:
    from websockets.asyncio.client import connect

    port = free_port()
    proc = spawn([sys.executable, __file__, "--serve", tier, "--port", str(port)],
                 stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # warm up: one connection and message, so that imports and zlib are loaded
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("warm " * 1000)
            await ws.recv()
        await asyncio.sleep(0.3)
        before = rss_kib(proc.pid) * 1024
        msg = (" ".join(f"fastws permessage-deflate {i}" for i in range(size)))[:size]
        conns = []
        ext = ""
        for i in range(n):
            ws = await connect(f"ws://127.0.0.1:{port}", ping_interval=None)
            conns.append(ws)
            await ws.send(msg)
            await ws.recv()
            if i == 0:
                ext = ws.response.headers.get("Sec-WebSocket-Extensions", "-")
        await asyncio.sleep(0.5)
        after = rss_kib(proc.pid) * 1024
        for ws in conns:
            await ws.close()
        return (after - before) / n, ext
    finally:
        stop(proc, timeout=10)


async def main(args) -> None:
    GUARD.watch()
    print(f"# deflate_memory: {machine()}")
    print(f"# {versions()}")
    print(f"# N={args.n} connections, one {args.size}-byte echo each; RSS of the server process")
    results, exts = {}, {}
    for tier in args.tiers.split(","):
        per, ext = await measure(tier, args.n, args.size)
        results[tier] = per
        exts[tier] = ext
        gc.collect()
    print()
    print("| server / tier | negotiated | per connection | deflate cost |")
    print("| --- | --- | ---: | ---: |")
    for tier, per in results.items():
        base = results.get("websockets-off" if tier.startswith("websockets") else "fastws-off")
        cost = "" if base is None or tier.endswith("-off") else f"{(per - base) / 1024:.1f} KiB"
        print(f"| {tier} | {exts[tier]} | {per / 1024:.1f} KiB | {cost} |")
    fo, wo = results.get("fastws-default"), results.get("websockets-default")
    if fo and wo:
        print(f"\nfastws-default / websockets-default per connection: {fo / wo:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--size", type=int, default=4096,
                   help="bytes of the one message per connection (a larger one touches more of zlib's buffers)")
    p.add_argument("--tiers", default=",".join(TIERS))
    p.add_argument("--serve")
    p.add_argument("--port", type=int)
    a = p.parse_args()
    if a.serve:
        serve(a.serve, a.port)
    else:
        asyncio.run(main(a))
