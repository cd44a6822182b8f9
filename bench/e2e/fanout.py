"""Fan-out benchmark: one message to N connected clients, fastws against its peers.

    python bench/e2e/fanout.py [--n 1000,10000,15000] [--servers fastws,...] [--size 64]
                               [--repeat 5] [--burst 20] [--flood 100] [--clients 4]
                               [--out bench/results/latest.md]

For each N and each server (one after another, each in its own process
pinned to CPU 0), --clients client processes pinned to CPU 1 open N
connections in all (source addresses 127.0.0.2, .3, ...), complete the
handshake and then only count bytes. The orchestrator (this process) drives
the server through its stdin, so what is timed is the server's fan-out alone:

- ``pub``: one publish of a --size byte binary message to all N. The server
  reports t0 (CLOCK_MONOTONIC, shared by every process) right before and t1
  right after its fan-out; the clients report when their last byte came.
  *latency* = last client's arrival - t0 (median of --repeat);
  *server µs / delivery* = (t1 - t0) / N, the fan-out loop's own cost
  (median), compared with the floor's.
- ``burst``: --burst publishes, one per loop iteration (``await
  asyncio.sleep(0)`` between them, so the loop can flush); *deliveries/s* =
  burst x N / (last client's last byte - t0).
- ``flood`` (the cork row): --flood publishes back to back in one loop
  iteration (no await between them), then the deliveries/s as for burst.
  fastws coalesces them with ``with server.cork():`` (one write per
  subscriber per write_limit bytes, ``fastws+cork``) and is also measured
  without (``fastws`` plain: one write per message per subscriber, like the
  peers' loops). ``floor`` sends each frame with its own ``socket.send``
  (the one-syscall-per-message floor); ``floor+join`` sends the --flood
  frames joined in one ``socket.send`` per socket (the floor of coalescing).

Servers (all on uvloop, all with keepalive pings off):

| name | fan-out |
|---|---|
| fastws | ``server.publish("t", data)``: every client subscribed in ``on_connect`` (Listener) |
| fastws-py | the same on the pure-Python twins (FASTWS_PURE_PYTHON=1) |
| websockets | ``websockets.asyncio.server.broadcast(server.connections, data)`` |
| aiohttp | ``for ws in clients: await ws.send_bytes(data)`` |
| picows | ``for t in transports: t.send(WSMsgType.BINARY, data)`` |
| floor | no WebSocket and no event-loop transport: ``for s in socks: s.send(frame)`` over N plain non-blocking sockets (the same frame bytes); the physical floor of a Python loop |

Benchmarks never pass or fail; they print figures. Roles (internal):
``--role server NAME --port P --n N`` and ``--role client ...``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, free_port  # noqa: E402
from harness.run import GUARD, append_results, child_env, head, spawn, stamp, stop  # noqa: E402
from harness.servers import start_aiohttp  # noqa: E402
SERVER_CPU, CLIENT_CPU = 0, 1
BACKLOG = 4096
SERVERS = ["fastws", "fastws-py", "websockets", "aiohttp", "picows", "floor"]
DEFAULT_SERVERS = "fastws,websockets,aiohttp,picows,floor"


def frame_len(size: int) -> int:
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def server_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x82, n]) + payload
    if n < 65536:
        return bytes([0x82, 126]) + n.to_bytes(2, "big") + payload
    return bytes([0x82, 127]) + n.to_bytes(8, "big") + payload


async def _stdin_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.decode().split()


def _say(*parts) -> None:
    print(*parts, flush=True)


# ================================================================ server role
async def server_role(name: str, port: int, size: int) -> None:
    payload = os.urandom(size)
    conns: list = []  # what each server fans out over (kept by its own API)
    missed = [0]      # floor: frames a full socket buffer refused

    if name in ("fastws", "fastws-py"):
        sys.path.insert(0, str(REPO))
        import fastws

        class Sub(fastws.Listener):
            def on_connect(self, ws):
                self.ws = ws
                ws.subscribe("t")

        server = await fastws.serve(Sub, "127.0.0.1", port, backlog=BACKLOG, ping_interval=None)
        count = lambda: server.subscribers("t")  # noqa: E731

        async def publish():
            server.publish("t", payload)

        def flood(k, mode):
            if mode == "cork":
                with server.cork():
                    for _ in range(k):
                        server.publish("t", payload)
            else:
                for _ in range(k):
                    server.publish("t", payload)

        _say("IMPL", fastws.IMPLEMENTATION)
    elif name == "websockets":
        from websockets.asyncio.server import broadcast, serve

        async def handler(ws):
            await ws.wait_closed()

        server = await serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                             backlog=BACKLOG)
        count = lambda: len(server.connections)  # noqa: E731

        async def publish():
            broadcast(server.connections, payload)

        def flood(k, mode):
            for _ in range(k):
                broadcast(server.connections, payload)
    elif name == "aiohttp":
        from aiohttp import web

        async def ws_handler(request):
            ws = web.WebSocketResponse(compress=False, autoping=True)
            await ws.prepare(request)
            conns.append(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                conns.remove(ws)
            return ws

        await start_aiohttp(ws_handler, "127.0.0.1", port, backlog=BACKLOG)
        count = lambda: len(conns)  # noqa: E731

        async def publish():
            for ws in conns:
                await ws.send_bytes(payload)

        async def flood(k, mode):
            for _ in range(k):
                for ws in conns:
                    await ws.send_bytes(payload)
    elif name == "picows":
        from picows import WSListener, WSMsgType, ws_create_server

        BINARY = WSMsgType.BINARY

        class L(WSListener):
            def on_ws_connected(self, transport):
                self.t = transport
                conns.append(transport)

            def on_ws_disconnected(self, transport):
                conns.remove(transport)

        await ws_create_server(lambda request: L(), "127.0.0.1", port, backlog=BACKLOG,
                               use_aiofastnet=False)
        count = lambda: len(conns)  # noqa: E731

        async def publish():
            for t in conns:
                t.send(BINARY, payload)

        def flood(k, mode):
            for _ in range(k):
                for t in conns:
                    t.send(BINARY, payload)
    elif name == "floor":
        frame = server_frame(payload)
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", port))
        lsock.listen(BACKLOG)
        lsock.setblocking(False)
        socks = conns

        def accept():
            while True:
                try:
                    s, _ = lsock.accept()
                except BlockingIOError:
                    return
                s.setblocking(False)
                socks.append(s)

        asyncio.get_running_loop().add_reader(lsock.fileno(), accept)
        count = lambda: len(socks)  # noqa: E731

        async def publish():
            for s in socks:
                try:
                    s.send(frame)
                except BlockingIOError:
                    missed[0] += 1

        def flood(k, mode):
            if mode == "join":
                data = frame * k
                for s in socks:
                    try:
                        sent = s.send(data)
                    except BlockingIOError:
                        sent = 0
                    missed[0] += (len(data) - sent) // len(frame)
                return
            for _ in range(k):
                for s in socks:
                    try:
                        s.send(frame)
                    except BlockingIOError:
                        missed[0] += 1
    else:
        raise SystemExit(f"unknown server {name}")

    _say("READY")
    async for cmd in _stdin_lines():
        if cmd[0] == "count":
            _say("count", count())
        elif cmd[0] == "pub":
            t0 = time.monotonic()
            await publish()
            t1 = time.monotonic()
            _say("pub", t0, t1)
        elif cmd[0] == "burst":
            k = int(cmd[1])
            t0 = time.monotonic()
            for _ in range(k):
                await publish()
                await asyncio.sleep(0)
            _say("burst", t0, time.monotonic())
        elif cmd[0] == "flood":
            k, mode = int(cmd[1]), cmd[2]
            before = missed[0] if name == "floor" else 0
            t0 = time.monotonic()
            r = flood(k, mode)
            if r is not None:
                await r
            t1 = time.monotonic()
            lost = (missed[0] - before) if name == "floor" else 0
            _say("flood", t0, t1, lost)
        elif cmd[0] == "quit":
            break
    if name == "floor":
        _say("missed", missed[0])


# ================================================================ client role
class _State:
    __slots__ = ("bytes", "last", "ready", "failed")

    def __init__(self):
        self.bytes = 0
        self.last = 0.0
        self.ready = 0
        self.failed = 0


class LeanClient(asyncio.Protocol):
    """Completes the handshake (unless raw), then counts the bytes that arrive."""

    __slots__ = ("st", "req", "buf", "transport")

    def __init__(self, st: _State, req):
        self.st = st
        self.req = req
        self.buf = b"" if req is not None else None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        if self.req is None:
            self.st.ready += 1
        else:
            transport.write(self.req)

    def data_received(self, data):
        st = self.st
        buf = self.buf
        if buf is not None:  # in the handshake
            buf += data
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                self.buf = buf
                return
            self.buf = None
            if b" 101 " not in buf[:i].split(b"\r\n", 1)[0] + b" ":
                st.failed += 1
                return
            st.ready += 1
            rest = len(buf) - i - 4
            if not rest:
                return
            st.bytes += rest
        else:
            st.bytes += len(data)
        st.last = time.monotonic()


async def client_role(port: int, n: int, src: str, raw: bool) -> None:
    loop = asyncio.get_running_loop()
    st = _State()
    sem = asyncio.Semaphore(200)
    protos = []

    async def one():
        async with sem:
            req = None
            if not raw:
                key = base64.b64encode(os.urandom(16)).decode()
                req = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
            for attempt in range(5):
                try:
                    _, p = await loop.create_connection(lambda: LeanClient(st, req), "127.0.0.1", port,
                                                        local_addr=(src, 0))
                    protos.append(p)
                    return
                except OSError:
                    await asyncio.sleep(0.05 * (attempt + 1))
            st.failed += 1

    await asyncio.gather(*(one() for _ in range(n)))
    deadline = time.monotonic() + 60
    while st.ready + st.failed < n and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    _say("ready", st.ready, st.failed)
    async for cmd in _stdin_lines():
        if cmd[0] == "stat":
            _say("stat", st.bytes, st.last)
        elif cmd[0] == "quit":
            break
    for p in protos:
        if p.transport is not None:
            p.transport.abort()


# ================================================================ orchestrator
class Proc:
    def __init__(self, args, cpu, env=None):
        self.p = spawn([sys.executable, str(Path(__file__).resolve()), *args], cpu=cpu,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self, word: str) -> list:
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"process {self.p.pid} ended while waiting for {word!r}")
            parts = line.split()
            if parts and parts[0] == word:
                return parts[1:]

    def ask(self, line: str, word: str) -> list:
        self.send(line)
        return self.expect(word)

    def stop(self) -> None:
        try:
            self.send("quit")
            self.p.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        stop(self.p, sig=None, timeout=20)  # told to quit; SIGKILL by PID after 20 s


def _wait_bytes(clients, target: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        stats = [c.ask("stat", "stat") for c in clients]
        total = sum(int(s[0]) for s in stats)
        last = max(float(s[1]) for s in stats)
        if total >= target or time.monotonic() > deadline:
            return total, last
        time.sleep(0.005)


def run_one(name: str, n: int, args) -> dict:
    port = free_port()
    env = child_env()
    if name == "fastws-py":
        env["FASTWS_PURE_PYTHON"] = "1"
    else:
        env.pop("FASTWS_PURE_PYTHON", None)
    server = Proc(["--role", "server", name, "--port", str(port), "--size", str(args.size)], SERVER_CPU, env)
    clients = []
    res = {"server": name, "n": n}
    try:
        server.expect("READY")
        per = [n // args.clients + (1 if i < n % args.clients else 0) for i in range(args.clients)]
        t_open = time.monotonic()
        for i, k in enumerate(per):
            if k:
                clients.append(Proc(["--role", "client", "--port", str(port), "--n", str(k),
                                     "--src", f"127.0.0.{2 + i}"] + (["--raw"] if name == "floor" else []),
                                    CLIENT_CPU, env))
        failed = 0
        for c in clients:
            ready, bad = c.expect("ready")
            failed += int(bad)
        deadline = time.monotonic() + 60
        while int(server.ask("count", "count")[0]) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        res["open"] = int(server.ask("count", "count")[0])
        res["failed"] = failed
        res["open_s"] = time.monotonic() - t_open
        time.sleep(1.0)
        flen = frame_len(args.size)
        base, _ = _wait_bytes(clients, 0, 0)
        lat, cost = [], []
        for _ in range(args.repeat):
            t0, t1 = map(float, server.ask("pub", "pub"))
            base += res["open"] * flen
            total, last = _wait_bytes(clients, base, 30)
            if total < base:
                res["lost"] = base - total
                base = total
            lat.append(last - t0)
            cost.append((t1 - t0) / res["open"])
            time.sleep(0.2)
        res["latency"] = statistics.median(lat)
        res["cost"] = statistics.median(cost)
        t0, t1 = map(float, server.ask(f"burst {args.burst}", "burst"))
        base += res["open"] * flen * args.burst
        total, last = _wait_bytes(clients, base, 60)
        if total < base:
            res["lost"] = res.get("lost", 0) + base - total
        res["rate"] = res["open"] * args.burst / (last - t0)
        res["server_rate"] = res["open"] * args.burst / (t1 - t0)
        modes = {"fastws": ["plain", "cork"], "fastws-py": ["plain", "cork"], "floor": ["plain", "join"]}
        res["flood"] = {}
        for mode in modes.get(name, ["plain"]):
            time.sleep(0.5)
            t0, t1, lost_frames = server.ask(f"flood {args.flood} {mode}", "flood")
            t0, t1, lost_frames = float(t0), float(t1), int(lost_frames)
            got = res["open"] * args.flood - lost_frames
            base += got * flen
            total, last = _wait_bytes(clients, base, 600)  # 1M deliveries take a while at 10-20k/s
            if total < base:
                res["lost"] = res.get("lost", 0) + base - total
                base = total
            res["flood"][mode] = {"rate": got / (last - t0), "server": got / (t1 - t0),
                                  "refused": lost_frames}
    except Exception as exc:  # noqa: BLE001 - reported in the table
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
        for c in clients:
            c.stop()
    return res


FLOOD_NAMES = {("fastws", "cork"): "fastws+cork", ("fastws-py", "cork"): "fastws-py+cork",
               ("floor", "join"): "floor+join"}


def flood_table(results, args) -> str:
    out = [f"| N | server | deliveries/s ({args.flood} back to back) | vs floor | vs fastws+cork "
           "| server-side deliveries/s | refused by a full socket |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for n in sorted({r["n"] for r in results}):
        rows = []
        for r in results:
            if r["n"] != n:
                continue
            for mode, v in r.get("flood", {}).items():
                rows.append((FLOOD_NAMES.get((r["server"], mode), r["server"]), v))
        floor = next((v for name, v in rows if name == "floor"), None)
        cork = next((v for name, v in rows if name == "fastws+cork"), None)
        for name, v in rows:
            vs_floor = f"{v['rate'] / floor['rate']:.2f}x" if floor else "-"
            vs_cork = f"{v['rate'] / cork['rate']:.2f}x" if cork else "-"
            out.append(f"| {n:,} | {name} | {v['rate']:,.0f} | {vs_floor} | {vs_cork} | {v['server']:,.0f} "
                       f"| {v['refused']:,} |")
    return "\n".join(out)


def table(results, args) -> str:
    out = ["| N | server | latency (last client) | server µs / delivery | vs floor | vs fastws "
           "| deliveries/s (burst) | vs fastws | open / failed |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        floor = next((r for r in rows if r["server"] == "floor" and "cost" in r), None)
        ref = next((r for r in rows if r["server"] == "fastws" and "cost" in r), None)
        for r in rows:
            if "error" in r or "cost" not in r:
                out.append(f"| {n:,} | {r['server']} | error: {r.get('error', '?')} | | | | | | |")
                continue
            vs_floor = f"{r['cost'] / floor['cost']:.2f}x" if floor else "-"
            vs_ref = f"{r['cost'] / ref['cost']:.2f}x" if ref else "-"
            vs_ref_rate = f"{r['rate'] / ref['rate']:.2f}x" if ref else "-"
            lost = f" (lost {r['lost']:,} B)" if r.get("lost") else ""
            out.append(f"| {n:,} | {r['server']} | {r['latency'] * 1e3:.1f} ms | {r['cost'] * 1e6:.3f} "
                       f"| {vs_floor} | {vs_ref} | {r['rate']:,.0f} | {vs_ref_rate} "
                       f"| {r['open']:,} / {r['failed']}{lost} |")
    return "\n".join(out)


COLUMNS = (
    "Columns: *latency* = the last client's arrival time - the server's time right "
    "before the publish (CLOCK_MONOTONIC across processes; includes the clients' own "
    "CPU, all on one core); *server µs / delivery* = the server's wall time for the "
    "fan-out call / N; *vs floor* = that / the bare `socket.send` loop's; "
    "*deliveries/s* = burst x N / (last byte at the last client - start of burst). "
    "Bursts: deliveries/s = (flood x N - refused) / (last byte at the last client - start); "
    "*server-side* = the same over the server's own time for the loop; *refused*: frames the "
    "floor's non-blocking send could not queue (not counted as delivered)."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["server", "client"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("--port", type=int)
    ap.add_argument("--n", default="1000,10000,15000")
    ap.add_argument("--src", default="127.0.0.1")
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--servers", default=DEFAULT_SERVERS)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--flood", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args()

    import uvloop

    if args.role == "server":
        uvloop.run(server_role(args.name, args.port, args.size))
        return
    if args.role == "client":
        uvloop.run(client_role(args.port, int(args.n), args.src, args.raw))
        return

    GUARD.watch()
    date = stamp()
    lines = head(
        __file__, date,
        f"- payload {args.size} B binary ({frame_len(args.size)} B frame), latency and µs/delivery: "
            f"median of {args.repeat} single publishes; burst: {args.burst} publishes, one per loop "
            f"iteration; flood: {args.flood} publishes back to back; server on CPU {SERVER_CPU}, {args.clients} client processes on CPU {CLIENT_CPU}")
    print("\n".join(lines), flush=True)
    results = []
    for n in [int(x) for x in args.n.split(",")]:
        for name in args.servers.split(","):
            r = run_one(name, n, args)
            results.append(r)
            print(r, flush=True)
    text = table(results, args) + "\n\nBursts (publishes back to back in one loop iteration):\n\n" + \
        flood_table(results, args)
    print(text)
    append_results(args.out, f"fanout.py {date}", lines, text + "\n\n" + COLUMNS)


if __name__ == "__main__":
    main()
