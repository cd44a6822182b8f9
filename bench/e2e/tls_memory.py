"""Server memory per wss:// (TLS) connection: fastws against picows, websockets and aiohttp.

    python bench/e2e/tls_memory.py [--conns 2000] [--servers fastws,fastws-plain,picows,websockets,aiohttp]
                                   [--out bench/results/latest.md]

Each server is an echo server in its own process (uvloop where the library
allows it) with a certificate made by trustme. The client opens ``--conns``
wss connections (TLS handshake, WebSocket handshake, one 32-byte message echoed
on each so every read/write path has run once), then leaves them idle. The
server's RSS (``/proc/PID/status`` VmRSS) is read before the first connection
(after one warm-up connection came and went) and once every connection is open
and idle; the difference divided by the connections is the figure. ``-plain``
rows are the same server without TLS, to show what TLS itself costs.
Benchmarks never pass or fail; they print figures.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.client import client_frame  # noqa: E402
from harness.meta import REPO, free_port  # noqa: E402
from harness.run import GUARD, append_results, child_env, head, rss_kib, spawn, stamp, stop  # noqa: E402
from harness.servers import aiohttp_echo, start_aiohttp  # noqa: E402

SERVERS = ("fastws", "fastws-plain", "picows", "websockets", "aiohttp", "websockets-plain")


# ---------------------------------------------------------------- servers ----
async def serve(name: str, port: int, ctx) -> None:
    base = name.replace("-plain", "")
    if base == "fastws":
        sys.path.insert(0, str(REPO))
        import fastws
        from fastws.apps import EchoListener

        server = await fastws.serve(EchoListener, "127.0.0.1", port, ssl=ctx)
        print("READY", flush=True)
        await server.serve_forever()
    elif base == "picows":
        from picows import WSListener, WSMsgType, ws_create_server

        class Echo(WSListener):
            def on_ws_frame(self, transport, frame):
                if frame.msg_type is WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
                    transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)

        server = await ws_create_server(lambda r: Echo(), "127.0.0.1", port, ssl=ctx, enable_auto_pong=True,
                                        use_aiofastnet=False)
        print("READY", flush=True)
        async with server:
            await server.serve_forever()
    elif base == "websockets":
        from websockets.asyncio.server import serve as ws_serve

        async def echo(ws):
            async for msg in ws:
                await ws.send(msg)

        async with ws_serve(echo, "127.0.0.1", port, ssl=ctx, compression=None) as server:
            print("READY", flush=True)
            await server.serve_forever()
    elif base == "aiohttp":
        await start_aiohttp(aiohttp_echo(compress=False), "127.0.0.1", port, ssl_context=ctx)
        print("READY", flush=True)
        await asyncio.Event().wait()
    else:
        raise SystemExit(f"unknown server {name}")


# ----------------------------------------------------------------- client ----
class Conn(asyncio.Protocol):
    def __init__(self):
        self.buf = b""
        self.stage = 0  # 0: waiting 101, 1: waiting echo, 2: idle
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data):
        self.buf += data
        if self.stage == 0 and b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.done.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            self.stage = 1
            self.transport.write(client_frame(b"x" * 32))
        if self.stage == 1 and len(self.buf) >= 34:
            self.buf = b""
            self.stage = 2
            self.done.set_result(None)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost: {exc!r}"))


def rss(pid: int) -> int:
    """VmRSS of pid, bytes."""
    kib = rss_kib(pid)
    if not kib:
        raise RuntimeError("no VmRSS")
    return kib * 1024


async def measure(name, port, pid, conns, client_ctx):
    loop = asyncio.get_running_loop()
    ctx = None if name.endswith("-plain") else client_ctx

    async def open_one():
        kw = dict(ssl=ctx, server_hostname="localhost") if ctx else {}
        transport, proto = await loop.create_connection(Conn, "127.0.0.1", port, **kw)
        await asyncio.wait_for(proto.done, 30)
        return transport

    warm = await open_one()
    warm.close()
    await asyncio.sleep(1.0)
    before = rss(pid)
    transports = []
    t0 = time.perf_counter()
    try:
        for i in range(0, conns, 100):
            transports += await asyncio.gather(*(open_one() for _ in range(min(100, conns - i))))
        opened = time.perf_counter() - t0
        await asyncio.sleep(2.0)
        after = rss(pid)
    finally:
        for t in transports:
            t.abort()
    return before, after, opened


async def amain(args) -> int:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    tmp = Path(tempfile.mkdtemp(prefix="fastws-tlsmem-"))
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    date = stamp()
    GUARD.watch()
    header = head(
        __file__, date,
        f"- TLS: {ssl.OPENSSL_VERSION}",
        f"- setup: {args.conns} idle wss connections (ECDSA P-256 certificate from trustme, TLS 1.3), "
        "one 32-byte echo on each; server RSS before and after",
    )
    print("\n".join(header), flush=True)
    rows = []
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        port = free_port("127.0.0.1")
        proc = spawn([sys.executable, __file__, "--serve", name, "--port", str(port),
                      "--cert", str(certfile), "--key", str(keyfile)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        try:
            line = proc.stdout.readline()
            if "READY" not in line:
                print(f"  {name}: did not start: {proc.stderr.read()[-300:]}")
                continue
            before, after, opened = await measure(name, port, proc.pid, args.conns, client_ctx)
            per = (after - before) / args.conns
            rows.append((name, before, after, per, opened))
            print(f"  {name:16s} RSS {before / 2**20:7.1f} MiB -> {after / 2**20:7.1f} MiB: "
                  f"{per:9,.0f} B per connection (opened in {opened:.1f} s)", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported
            print(f"  {name}: failed: {type(exc).__name__}: {exc}")
        finally:
            stop(proc, sig=signal.SIGINT, timeout=10)
    ref = next((r for r in rows if r[0] == "fastws"), None)
    lines = ["| server | RSS before | RSS with connections | per connection | vs fastws (TLS) |",
             "|---|---:|---:|---:|---:|"]
    for name, before, after, per, _ in rows:
        ratio = f"{per / ref[3]:.2f}x" if ref and ref[3] > 0 else "-"
        lines.append(f"| {name} | {before / 2**20:.1f} MiB | {after / 2**20:.1f} MiB | {per:,.0f} B | {ratio} |")
    table = "\n".join(lines)
    print(table)
    append_results(args.out, f"tls_memory.py {date}: memory per TLS connection", header, table)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--servers", default="fastws,fastws-plain,picows,websockets,aiohttp")
    p.add_argument("--out")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args()
    import uvloop

    if args.serve:
        ctx = None
        if not args.serve.endswith("-plain"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.cert, args.key)
        try:
            uvloop.run(serve(args.serve, args.port, ctx))
        except KeyboardInterrupt:
            pass
        return 0
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
