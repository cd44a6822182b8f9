"""Many idle connections: how many fastws holds, at what memory and CPU, and how fast it accepts them.

    python bench/load/connections.py [-n 10000] [--workers W] [--clients C] [--hold 60] [--client lean|old|both]
                                     [--ping-interval 20] [--api listener|handler]
                                     [--server fastws|picows|websockets|bare|handshake-floor] [--compare]
                                     [--floor] [--hs-floor] [--repeat K] [--pin]
                                     [--heartbeat-cost] [--mem-floor-gib 2] [--out bench/results/latest.md]

One run: start the server (``python -m fastws echo --workers W``, or a peer
from bench/load/conn_peers.py in one process), take a baseline (workers' RSS,
/proc/net/sockstat, /proc/meminfo), start C client processes (each bound to
its own source address 127.0.0.(2+i)), open N connections with a concurrency
limit while watching MemAvailable, let them settle, measure memory, measure
the server's CPU over a quiet window, hold them to the end of ``--hold`` with
keepalive pings on, collect the clients' counts (pings, pongs, connections
lost) and stop everything it started, by PID, even on Ctrl-C. A memory guard
stops every process it started, by PID, whenever MemAvailable falls under
``--mem-floor-gib`` (opening or holding), and the run says so.

``--client lean`` (default): bench/load/conn_lean.py, one uvloop loop per
process, a three-slot Protocol per connection, the request pre-built, pings
answered by the Cython codec, opening paced at ``--client-rate`` per process.
``--client old``: bench/load/conn_client.py (K opener coroutines, pongs masked
in Python). ``--client both``: every run twice, old then lean, and a second
table with the clients' CPU-seconds and bytes per connection next to the
server's, and lean against old.

``--floor``: after fastws, the same N on ``bare`` (bench/load/conn_peers.py): the
floor of idle keepalive, a uvloop Protocol that only writes a 2-byte ping to
every connection once per interval from one loop timer and counts the pongs,
on as many processes as fastws has workers; the table then gives fastws's idle
CPU per ping against it.

``--hs-floor``: also run ``handshake-floor`` (bench/load/conn_peers.py) in the same run: a plain
uvloop ``asyncio.Protocol`` that reads the request up to CRLF CRLF, writes a
canned 101 with the real Sec-WebSocket-Accept and holds the connection (no
HTTP parser, no checks, no pings). Its handshakes per worker-CPU-second are
the floor (kernel + uvloop + one Python callback per event); the notes give
each server's CPU µs per handshake and its ratio to the floor. ``--api both``
runs fastws twice, listener API then handler API. ``--repeat K`` runs every
server K times, alternating, and prints each round's ratio to the floor of the
same round and their median (one round varies by about +-10% on this 2-core
machine, where the clients share the cores). ``--pin`` (with ``--workers 1``)
keeps the server on CPU 0 and its clients on CPU 1, so the worker's rate is
measured on a core of its own, as the per worker-CPU-second column means
(unpinned, the scheduler is free to run the client on the server's core).

``--heartbeat-cost``: 15,000 idle connections in ONE fastws process with a
short ping interval (2 s), server CPU over a 20 s window, against
bench/load/conn_timer_baseline.py (the same keepalive done with one
``loop.call_later`` per connection) in the same run.

Benchmarks never pass or fail; they print figures (see bench/README.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: the harness
from harness.meta import REPO, free_port  # noqa: E402
from harness.run import (GUARD, Child, alive, append_results, child_env, children, fd_count, head,  # noqa: E402
                         mem_available, meminfo, pin, port_closed, proc_cpu_ns, rss_kib, run_guarded, sockstat_tcp,
                         stamp)

PER_PROCESS = 15000      # connections per server worker / client process (fd limit 20,000)
PER_SRC = 25000          # connections per source address (~28k ephemeral ports per pair)
PEER_CAP = 15000         # peers run in one process: capped at this many connections
PEERS = ("picows", "websockets")
FLOOR = "handshake-floor"  # bench/load/conn_peers.py: accept + canned 101, the handshake floor
PAGE = os.sysconf("SC_PAGE_SIZE")

# ------------------------------------------------------------- /proc ----
def listeners(port: int) -> int:
    """How many sockets listen on port (one per SO_REUSEPORT worker)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


# --------------------------------------------------------- processes ----
class Server:
    """The server under test: fastws (a supervisor + W workers, or one process) or a peer."""

    def __init__(self, kind: str, host: str, workers: int, api: str, ping_interval, ping_timeout: float,
                 cpu=None):
        self.kind, self.host = kind, host
        self.port = free_port(host)
        pi = "none" if ping_interval is None else f"{ping_interval:g}"
        cwd = str(REPO)
        if kind == "fastws" or kind.startswith("fastws@"):
            # fastws@DIR: the fastws of another checkout (its fastws/ and
            # fastws_ext/, built in place), imported because DIR is the cwd
            # (handshake_pair.py --pair fastws@DIR,fastws: two versions paired).
            if "@" in kind:
                cwd = kind.split("@", 1)[1]
            cmd = [sys.executable, "-m", "fastws", "echo", "--host", host, "--port", str(self.port),
                   "--workers", str(workers), "--api", api, "--ping-interval", pi,
                   "--ping-timeout", f"{ping_timeout:g}", "--log-level", "warning"]
            ready_text = "listening on"
        elif kind == "timer-baseline":
            cmd = [sys.executable, str(HERE / "conn_timer_baseline.py"), "--host", host,
                   "--port", str(self.port), "--ping-interval", pi, "--ping-timeout", f"{ping_timeout:g}"]
            ready_text = "READY"
        else:
            cmd = [sys.executable, str(HERE / "conn_peers.py"), kind, "--host", host, "--port", str(self.port),
                   "--ping-interval", pi, "--ping-timeout", f"{ping_timeout:g}"]
            if kind == "bare":
                cmd += ["--workers", str(workers)]
            ready_text = "READY"
        self.expected_workers = workers if kind.split("@")[0] in ("fastws", "bare") else 1
        self.child = Child(cmd, host=host, port=self.port, ready_text=ready_text, cpu=cpu, cwd=cwd,
                           new_session=True, name=kind)
        self.proc = self.child.proc
        self.workers: list[int] = []

    def tail(self) -> str:
        return self.child.tail(3)

    async def ready(self, timeout=30.0) -> None:
        """Listening, and with W workers: all W found (the supervisor's children) and listening."""
        deadline = time.monotonic() + timeout
        why = await self.child.ready(timeout, tail=3)
        if why is not None:
            raise RuntimeError(f"{self.kind} {why}")
        while True:
            if self.expected_workers == 1:
                self.workers = [self.proc.pid]
                break
            self.workers = children(self.proc.pid)
            if len(self.workers) >= self.expected_workers and listeners(self.port) >= self.expected_workers:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} not ready in {timeout:g} s: {self.tail()}")
            await asyncio.sleep(0.05)
        for w in self.workers:
            if w != self.proc.pid:
                GUARD.track(w)

    def workers_alive(self) -> bool:
        return all(alive(w) for w in self.workers) and sorted(self.workers) == sorted(
            self.workers if self.expected_workers == 1 else children(self.proc.pid))

    async def stop(self) -> None:
        """By PID: SIGTERM, 30 s, SIGKILL; then its orphaned workers, if any; then the port seen closed."""
        await self.child.stop(timeout=30, check_port=False)
        for w in self.workers:  # orphaned workers, if the supervisor died first
            if w != self.proc.pid and alive(w):
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not await port_closed(self.host, self.port):
            log(f"{self.kind}: port {self.port} still listening after stop")


CLIENTS = {"old": "conn_client.py", "lean": "conn_lean.py"}


class Client:
    """One client process (bench/load/conn_client.py or conn_lean.py), driven over its stdin/stdout."""

    def __init__(self, proc, index: int, count: int, srcs: list[str]):
        self.proc, self.index, self.count, self.srcs = proc, index, count, srcs
        self.progress = {"opened": 0, "failed": 0, "open": 0}
        self.events: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())
        self.idle_rss_kib = self.idle_cpu_ns = 0  # once ready (imports done), before any connection

    @classmethod
    async def start(cls, index, host, port, count, srcs, concurrency, cpu=None, kind="lean", rate=1000.0):
        cmd = [sys.executable, str(HERE / CLIENTS[kind]), "--host", host, "--port", str(port),
               "--count", str(count), "--src", ",".join(srcs), "--per-src", str(PER_SRC),
               "--concurrency", str(concurrency)]
        if kind == "lean":
            cmd += ["--rate", f"{rate:g}"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), start_new_session=True,
            preexec_fn=pin(cpu), limit=2**20)
        GUARD.track(proc.pid)
        return cls(proc, index, count, srcs)

    async def ready(self, timeout: float) -> None:
        await self.expect("ready", timeout)
        self.idle_rss_kib = rss_kib(self.proc.pid)
        self.idle_cpu_ns = proc_cpu_ns(self.proc.pid)

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.events.put({"ev": "exit"})
                return
            ev = json.loads(line)
            if ev["ev"] == "progress":
                self.progress = ev
            else:
                await self.events.put(ev)

    async def send(self, cmd: str):
        if self.proc.returncode is None:
            try:
                self.proc.stdin.write(cmd.encode() + b"\n")
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def expect(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            ev = await asyncio.wait_for(self.events.get(), max(0.1, deadline - time.monotonic()))
            if ev["ev"] == name:
                return ev
            if ev["ev"] == "exit":
                raise RuntimeError(f"client {self.index} exited (status {await self.proc.wait()})")

    async def stop(self, timeout=30.0):
        if self.proc.returncode is None:
            await self.send("close")
            try:
                await self.expect("closed", timeout)
            except (asyncio.TimeoutError, RuntimeError):
                pass
            try:
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                self.proc.kill()
                await self.proc.wait()
        self.reader.cancel()


# The next source address: each run of one invocation starts where the last
# one ended, so its clients do not meet the ports the previous run left in
# TIME_WAIT (a client binds its ports in order; the floor after fastws lost
# 3,000 of 30,000 connections to EADDRNOTAVAIL that way).
_NEXT_SRC = [2]


def plan_clients(n: int, clients: int | None) -> list[tuple[int, list[str]]]:
    """(count, source addresses) per client process: <= 15,000 each, <= 25,000 per address."""
    c = clients or max(1, math.ceil(n / PER_PROCESS))
    counts = [n // c + (1 if i < n % c else 0) for i in range(c)]
    need = sum(max(1, math.ceil(k / PER_SRC)) for k in counts)
    if need > 253:
        raise SystemExit("too many source addresses needed (127.0.0.2 .. 127.0.0.254)")
    plan, nxt = [], _NEXT_SRC[0] if _NEXT_SRC[0] + need <= 255 else 2
    for k in counts:
        addrs = max(1, math.ceil(k / PER_SRC))
        plan.append((k, [f"127.0.0.{nxt + j}" for j in range(addrs)]))
        nxt += addrs
    _NEXT_SRC[0] = nxt
    return plan


# ---------------------------------------------------------------- one run ----
def log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def run_one(kind: str, n: int, workers: int, args, *, ping_interval, ping_timeout,
                  hold: float, window: float, settle: float, pin: bool = False, api: str | None = None,
                  client: str | None = None) -> dict:
    """Open n connections to one server, hold them, measure; returns a result dict."""
    api = api or args.api
    client = client or ("lean" if args.client == "both" else args.client)
    r = {"server": kind, "target": n, "workers": workers, "api": api if kind == "fastws" else "-",
         "ping_interval": ping_interval, "client": client, "notes": []}
    if GUARD.low():
        r["limit"] = f"memory guard before start: MemAvailable < {args.mem_floor_gib:g} GiB"
        r["notes"].append(r["limit"])
        return r
    plan = plan_clients(n, args.clients)
    r["clients"] = len(plan)
    at_once = min(args.stagger or len(plan), len(plan))  # client processes opening at the same time
    per_client_conc = max(8, args.concurrency // at_once)
    srv = Server(kind, args.host, workers, api, ping_interval, ping_timeout, cpu=0 if pin else None)
    clients: list[Client] = []
    try:
        await srv.ready()
        log(f"{kind}: listening on {args.host}:{srv.port}, worker pids {srv.workers}")
        r["worker_pids"] = srv.workers
        await asyncio.sleep(1.0)
        base_rss = {w: rss_kib(w) for w in srv.workers}
        base_fd = {w: fd_count(w) for w in srv.workers}
        base_sock, base_mem = sockstat_tcp(), meminfo()

        clients = [await Client.start(i, args.host, srv.port, k, srcs, per_client_conc,
                                      cpu=1 if pin else None, kind=client, rate=args.client_rate)
                   for i, (k, srcs) in enumerate(plan)]
        await asyncio.gather(*(c.ready(30) for c in clients))

        # -- open, with the memory guard ----------------------------------
        cpu0 = {w: proc_cpu_ns(w) for w in srv.workers}
        t_open = time.monotonic()
        # --stagger K: K clients open at a time, the next one starting when one
        # has finished, so the processes that are busy opening stay few (on 2
        # cores, 50+ clients opening at once spent most of their CPU switching
        # and on cold caches); without it, all at once.
        waits, queued = [], list(clients)

        async def start_next() -> None:
            c = queued.pop(0)
            if halted is not None:
                await c.send("halt")  # it finishes at once, with nothing opened
            await c.send("open")
            waits.append(asyncio.ensure_future(c.expect("opened", 3600)))

        halted = None
        for _ in range(at_once):
            await start_next()
        open_deadline = t_open + 60 + n / 1000
        sent, min_avail, last_log = False, base_mem["MemAvailable"], t_open
        while queued or not all(w.done() for w in waits):
            await asyncio.sleep(0.2)
            while queued and sum(not w.done() for w in waits) < at_once:
                await start_next()
            avail = mem_available()
            min_avail = min(min_avail, avail)
            now = time.monotonic()
            if halted is None and GUARD.low(avail):
                halted = (f"memory guard: MemAvailable {avail / 2**30:.2f} GiB < floor "
                          f"{args.mem_floor_gib:g} GiB at {sum(c.progress['open'] for c in clients):,} open")
            elif halted is None and now > open_deadline:
                halted = f"opening took longer than {open_deadline - t_open:.0f} s"
            elif halted is None and srv.proc.poll() is not None:
                halted = f"server exited {srv.proc.returncode}: {srv.tail()}"
            if halted and not sent:
                log(f"halting: {halted}")
                for c in clients:
                    await c.send("halt")
                sent = True
            if now - last_log > 5:
                last_log = now
                log(f"opening: {sum(c.progress['open'] for c in clients):,} open, "
                    f"MemAvailable {avail / 2**30:.1f} GiB")
        opened = [w.result() for w in waits]
        cpu1 = {w: proc_cpu_ns(w) for w in srv.workers}
        r["client_cpu_open_s"] = sum(proc_cpu_ns(c.proc.pid) - c.idle_cpu_ns for c in clients) / 1e9
        t0, t1 = min(o["t0"] for o in opened), max(o["t1"] for o in opened)
        count = sum(o["open"] for o in opened)
        r.update(open=count, failed=sum(o["failed"] for o in opened), open_s=t1 - t0,
                 hs_rate=sum(o["opened"] for o in opened) / (t1 - t0) if t1 > t0 else float("nan"),
                 p50=max(o["p50"] or 0 for o in opened), p99=max(o["p99"] or 0 for o in opened),
                 min_avail=min_avail, client_open_cpu_s=sum(o["cpu_s"] for o in opened),
                 retried=sum(o.get("retried", 0) for o in opened))
        per_w = {w: fd_count(w) - base_fd[w] for w in srv.workers}
        r["per_worker_conns"] = per_w
        r["hs_worker_wall"] = sum(per_w.values()) / len(per_w) / r["open_s"] if r["open_s"] else float("nan")
        open_cpu = {w: (cpu1[w] - cpu0[w]) / 1e9 for w in srv.workers}
        r["open_cpu_s"] = sum(open_cpu.values())
        # Handshakes per second of a worker's own CPU time: what one worker does on a core of its own.
        r["hs_worker_cpu"] = (sum(per_w.values()) / r["open_cpu_s"]) if r["open_cpu_s"] else float("nan")
        reasons = {}
        for o in opened:
            for k, v in o["fail_reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        r["fail_reasons"] = reasons
        stops = [o["stopped_by"] for o in opened if o["stopped_by"]]
        if halted:
            r["limit"] = halted
        elif stops:
            r["limit"] = f"client stopped opening: {stops[0]}"
        elif count < n:
            r["limit"] = f"{n - count:,} handshakes failed: {reasons}"
        log(f"{kind}: {count:,} open in {r['open_s']:.1f} s ({r['hs_rate']:,.0f}/s), "
            f"per worker {per_w}, failed {r['failed']}")

        # -- settle, then memory ------------------------------------------
        t_hold = time.monotonic()
        await asyncio.sleep(settle)
        rss = {w: rss_kib(w) for w in srv.workers}
        sock, mem = sockstat_tcp(), meminfo()
        denom = max(count, 1)
        r["rss_per_conn"] = sum(rss[w] - base_rss[w] for w in srv.workers) * 1024 / denom
        r["rss_total_mib"] = sum(rss.values()) / 1024
        r["tcp_mem_per_conn"] = (sock.get("mem", 0) - base_sock.get("mem", 0)) * PAGE / denom
        r["tcp_inuse_delta"] = sock.get("inuse", 0) - base_sock.get("inuse", 0)
        r["slab_per_conn"] = (mem["Slab"] - base_mem["Slab"]) / denom
        r["avail_per_conn"] = (base_mem["MemAvailable"] - mem["MemAvailable"]) / denom
        stats_a = await _stats(clients)
        r["client_rss_per_conn"] = sum(s["rss_kib"] for s in stats_a) * 1024 / denom
        r["client_rss_delta_per_conn"] = sum(s["rss_kib"] - c.idle_rss_kib for s, c in zip(stats_a, clients)) * 1024 / denom
        r["client_rss_mib"] = sum(s["rss_kib"] for s in stats_a) / 1024

        # -- quiet window: server CPU while idle ----------------------------
        win = max(1.0, min(window, hold - settle))
        c0 = sum(proc_cpu_ns(w) for w in srv.workers)
        tw0 = time.monotonic()
        await asyncio.sleep(win)
        c1 = sum(proc_cpu_ns(w) for w in srv.workers)
        tw1 = time.monotonic()
        stats_b = await _stats(clients)
        r["window_s"] = tw1 - tw0
        r["idle_cpu_s"] = (c1 - c0) / 1e9
        r["idle_cpu_pct"] = r["idle_cpu_s"] / r["window_s"] * 100
        r["window_pings"] = sum(s["pings"] for s in stats_b) - sum(s["pings"] for s in stats_a)

        # -- the rest of the hold -----------------------------------------
        rest = hold - (time.monotonic() - t_hold)
        if rest > 0:
            log(f"holding {rest:.0f} s more")
            await asyncio.sleep(rest)
        r["hold_s"] = time.monotonic() - t_hold
        final = await _stats(clients)
        r["client_cpu_s"] = sum(proc_cpu_ns(c.proc.pid) - c.idle_cpu_ns for c in clients) / 1e9
        r["server_cpu_s"] = sum(proc_cpu_ns(w) - cpu0[w] for w in srv.workers) / 1e9
        r["pings"] = sum(s["pings"] for s in final)
        r["pongs"] = sum(s["pongs"] for s in final)
        r["lost"] = sum(s["lost"] for s in final)
        r["still_open"] = sum(s["open"] for s in final)
        codes, why = {}, {}
        for s in final:
            for k, v in s["close_codes"].items():
                codes[k] = codes.get(k, 0) + v
            for k, v in s["lost_reasons"].items():
                why[k] = why.get(k, 0) + v
        r["close_codes"], r["lost_reasons"] = codes, why
        r["workers_ok"] = srv.workers_alive()
        if not r["workers_ok"]:
            r["notes"].append("a server worker died or was replaced during the run")
        log(f"{kind}: held {r['hold_s']:.0f} s, pings {r['pings']:,}, pongs {r['pongs']:,}, "
            f"lost {r['lost']}, still open {r['still_open']:,}")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        r["error"] = f"{type(exc).__name__}: {exc}"
        r["notes"].append(f"failed: {r['error']} (server stderr: {srv.tail() if not srv.child.err.closed else '-'})")
        log(f"{kind}: FAILED {r['error']}")
    finally:
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
        await srv.stop()
    return r


async def _stats(clients: list[Client]) -> list[dict]:
    for c in clients:
        await c.send("stats")
    return list(await asyncio.gather(*(c.expect("stats", 60) for c in clients)))


# ------------------------------------------------------------ report ----
def _b(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f} B"


def _n(x, fmt="{:,.0f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _per_ping(r: dict):
    """Server CPU µs per ping in the idle window (a ping, its pong, and the timers)."""
    if not r.get("window_pings"):
        return None
    return r["idle_cpu_s"] * 1e6 / r["window_pings"]


def table(results: list[dict]) -> str:
    ref = next((r for r in results if r["server"] == "fastws" and "open" in r), None)
    compare = ref is not None and any(r["server"] not in ("fastws", "bare") for r in results)
    floor = next((r for r in results if r["server"] == "bare" and r.get("window_pings")), None)
    head = ("| server | open / asked | workers | clients | handshakes/s | per worker (wall) "
            "| per worker-CPU-second | server RSS / conn | TCP mem / conn | slab / conn (both ends) "
            "| idle CPU (window) | idle CPU µs / ping | pings / pongs | lost |")
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if compare:
        head += " RSS / conn vs fastws | handshakes/s per process vs fastws |"
        sep += "---:|---:|"
    if floor is not None:
        head += " idle µs / ping vs floor |"
        sep += "---:|"
    out = [head, sep]
    for r in results:
        name = r["server"] + (f" ({r['api']})" if r["server"] == "fastws" else
                              " (floor)" if r["server"] == "bare" else "")
        if len({x.get("client") for x in results}) > 1:
            name += f", {r.get('client')} client"
        if "open" not in r:
            out.append(f"| {name} | 0 / {r['target']:,} | {r['workers']} | {r.get('clients', '-')} "
                       f"| {r.get('error') or r.get('limit', 'not run')} |" + " |" * (9 + 2 * compare + (floor is not None)))
            continue
        idle = (f"{r['idle_cpu_pct']:.2f}% ({r['idle_cpu_s']:.2f} s / {r['window_s']:.0f} s, "
                f"{r['window_pings']:,} pings)") if "idle_cpu_pct" in r else "-"
        row = (f"| {name} | {r['open']:,} / {r['target']:,} | {r['workers']} | {r['clients']} "
               f"| {_n(r['hs_rate'])} | {_n(r['hs_worker_wall'])} | {_n(r['hs_worker_cpu'])} "
               f"| {_b(r.get('rss_per_conn'))} | {_b(r.get('tcp_mem_per_conn'))} | {_b(r.get('slab_per_conn'))} "
               f"| {idle} | {_n(_per_ping(r), '{:.1f}')} | {_n(r.get('pings'))} / {_n(r.get('pongs'))} "
               f"| {_n(r.get('lost'))} |")
        if compare:
            if r is ref or "rss_per_conn" not in r:
                row += " - | - |"
            else:
                row += (f" {r['rss_per_conn'] / ref['rss_per_conn']:.2f}x "
                        f"| {r['hs_worker_wall'] / ref['hs_worker_wall']:.2f}x |")
        if floor is not None:
            row += (" - |" if r is floor or _per_ping(r) is None
                    else f" {_per_ping(r) / _per_ping(floor):.2f}x |")
        out.append(row)
    return "\n".join(out)


def notes(results: list[dict], args) -> list[str]:
    out = []
    for r in results:
        tag = r["server"] + (f" ({r.get('client')} client)" if len({x.get("client") for x in results}) > 1 else "")
        for n in r["notes"]:
            out.append(f"{tag}: {n}")
        if "open" not in r:
            continue
        if r.get("capped"):
            out.append(f"{tag}: capped at {PEER_CAP:,} connections (one process; open-file limit 20,000)")
        out.append(f"{tag}: opened {r['open']:,} in {r['open_s']:.1f} s, handshake latency p50 "
                   f"{r['p50'] * 1e3:.1f} ms / p99 {r['p99'] * 1e3:.1f} ms (worst client); "
                   f"connections per worker {list(r['per_worker_conns'].values())}; server CPU while opening "
                   f"{r['open_cpu_s']:.1f} s, clients' CPU (from their start) {r['client_open_cpu_s']:.1f} s; "
                   f"failed handshakes {r['failed']}"
                   + (f" {r['fail_reasons']}" if r["failed"] else "")
                   + (f", each replaced by a fresh connection ({r['retried']:,} retries)" if r.get("retried") else ""))
        if "rss_per_conn" in r:
            out.append(f"{tag}: server RSS total {r['rss_total_mib']:,.0f} MiB; client RSS "
                       f"{r['client_rss_per_conn']:,.0f} B / conn; MemAvailable drop {r['avail_per_conn']:,.0f} B / conn "
                       f"(server + clients + kernel); lowest MemAvailable {r['min_avail'] / 2**30:.1f} GiB")
        if "pings" in r:
            out.append(f"{tag}: held {r['hold_s']:.0f} s with ping interval {r['ping_interval']} s: "
                       f"{r['pings'] / max(r['open'], 1):.2f} pings per connection, all answered "
                       f"{'yes' if r['pongs'] == r['pings'] else 'NO'}; lost {r['lost']}"
                       + (f" {r['lost_reasons']} close codes {r['close_codes']}" if r["lost"] else "")
                       + ("" if r.get("workers_ok", True) else "; WORKER DIED"))
        if r.get("limit"):
            out.append(f"{tag}: stopped at {r['open']:,} of {r['target']:,}: {r['limit']}")
        elif r.get("open_s"):
            # Nothing halted the run: what bounded its pace was the machine's cores.
            busy = (r["open_cpu_s"] + r.get("client_cpu_open_s", 0.0)) / r["open_s"]
            out.append(f"{tag}: what limited it: nothing stopped it (all {r['open']:,} asked are open); the "
                       f"opening pace was bound by CPU: server + clients used {busy:.2f} of the machine's "
                       f"{os.cpu_count()} cores while opening (the rest: the kernel's loopback TCP and other "
                       f"processes)")
        if r["server"] == "bare" and "idle_cpu_pct" in r and r.get("window_pings"):
            per = _per_ping(r)
            pi = r["ping_interval"]
            out.append(f"{tag}: the floor costs {per:.1f} µs of server CPU per ping-pong; at 100,000 "
                       f"connections pinged every {pi:g} s ({100000 / pi:,.0f} pings/s) that is "
                       f"{per * 100000 / pi / 1e4:.1f}% of one core on this machine")
        floor = next((f for f in results if f["server"] == FLOOR and f.get("open_cpu_s")
                      and f.get("rep", 0) == r.get("rep", 0)), None)  # the floor of the same round
        if floor is not None and r.get("open_cpu_s"):
            us = r["open_cpu_s"] * 1e6 / max(sum(r["per_worker_conns"].values()), 1)
            floor_us = floor["open_cpu_s"] * 1e6 / max(sum(floor["per_worker_conns"].values()), 1)
            out.append(f"{tag}{' (' + r['api'] + ')' if r['server'] == 'fastws' else ''}: server CPU "
                       f"{us:.1f} µs per handshake, {r['hs_worker_cpu']:,.0f} handshakes per worker-CPU-second"
                       + ("" if r is floor else
                          f" = {r['hs_worker_cpu'] / floor['hs_worker_cpu']:.2f}x the floor ({floor_us:.1f} µs: "
                          f"{floor_us / us:.0%} of the cost is kernel + uvloop + one Python callback, "
                          f"{us - floor_us:.1f} µs is the server's own)"))
        if r["server"] == "fastws" and "idle_cpu_pct" in r and r["ping_interval"] and r["ping_interval"] >= 10:
            ok = lambda c: "met" if c else "MISSED"  # noqa: E731
            out.append(f"{tag}: targets: lost 0 {ok(r['lost'] == 0)}; idle CPU < 5% {ok(r['idle_cpu_pct'] < 5)}; "
                       f">= 10,000 handshakes/s per worker-CPU-second {ok(r['hs_worker_cpu'] >= 10000)} "
                       f"(wall-clock per worker {r['hs_worker_wall']:,.0f}/s on {os.cpu_count()} shared cores); "
                       f"RSS <= 2 KB / conn {ok(r['rss_per_conn'] <= 2048)}")
    out += _rounds(results)
    return out


def _rounds(results: list[dict]) -> list[str]:
    """With --repeat and --hs-floor: each fastws API's handshakes per
    worker-CPU-second against the floor of the same round, every round and
    the median (the figure to quote: one round on a 2-core machine shared
    with its clients varies by about +-10%)."""
    out: list[str] = []
    if len({r.get("rep", 0) for r in results}) < 2:
        return out
    floors = {r["rep"]: r for r in results if r["server"] == FLOOR and r.get("hs_worker_cpu")}
    for api in dict.fromkeys(r.get("api") for r in results if r["server"] == "fastws"):
        ratios = [r["hs_worker_cpu"] / floors[r["rep"]]["hs_worker_cpu"] for r in results
                  if r["server"] == "fastws" and r.get("api") == api and r.get("hs_worker_cpu")
                  and r["rep"] in floors]
        if ratios:
            out.append(f"fastws ({api}) against {FLOOR}, handshakes per worker-CPU-second, {len(ratios)} "
                       f"rounds: {', '.join(f'{x:.2f}x' for x in ratios)}; median "
                       f"**{statistics.median(ratios):.2f}x** (min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
    return out


EXPLAIN = (
    "Columns: *handshakes/s* = connections opened / wall time from the first connect to the last 101 "
    "(all clients at once); *per worker (wall)* = that per server process; *per worker-CPU-second* = "
    "connections a worker accepted / the CPU seconds it used while opening, i.e. its rate on a core of its "
    "own (the wall rate is bounded by the machine's cores, shared here by every worker and client); "
    "*server RSS / conn* = sum over the workers of (VmRSS after opening and {settle:g} s idle - VmRSS "
    "before) / connections: user-space memory of the server; *TCP mem / conn* = /proc/net/sockstat "
    "`TCP ... mem` pages x {page} delta / connections: only memory charged to TCP socket buffers (queued "
    "bytes in send/receive queues, both ends of every loopback pair), near 0 for idle connections, NOT the "
    "socket structures; *slab / conn* = /proc/meminfo Slab delta / connections: the kernel objects (tcp "
    "sock, socket inode, dentry, file, epoll item, ...) of both ends of each pair, client side included; "
    "*idle CPU* = the server's user+sys CPU (all workers, /proc/PID/task/*/schedstat) over a quiet window "
    "after the settle, as % of one core, and the pings the clients got in that window; *idle CPU µs / ping* = that CPU / those pings (a ping written, its pong read, "
    "the timers: user and kernel time of the server, loopback TCP of the ping's delivery included); *pings / pongs* = "
    "pings the clients received from the server and pongs they sent back over the whole hold; *lost* = "
    "connections closed by the server or errored while held (must be 0)."
)


async def amain(args) -> int:
    date = stamp()
    lines = head(__file__, date)
    print("\n".join(lines), flush=True)
    results = []
    if args.heartbeat_cost:
        n = min(args.connections or PEER_CAP, PEER_CAP)
        hb = args.hb_interval
        lines.append(f"- heartbeat cost: {n:,} idle connections, ONE server process (CPU 0), one client "
                    f"process (CPU 1), ping interval {hb:g} s, ping timeout {args.ping_timeout:g} s, "
                    f"CPU over a {args.window:g} s window after {args.hb_settle:g} s")
        for kind in ("fastws", "timer-baseline"):
            results.append(await run_one(kind, n, 1, args, ping_interval=hb, ping_timeout=args.ping_timeout,
                                         hold=args.hb_settle + args.window, window=args.window,
                                         settle=args.hb_settle, pin=True))
        text = hb_table(results)
    else:
        n = args.connections or 10000
        runs = []
        apis = ("listener", "handler") if args.api == "both" else (args.api,)
        if args.compare or args.server == "fastws":
            runs += [("fastws", n, args.workers or max(1, math.ceil(n / PER_PROCESS)), a) for a in apis]
        fastws_workers = args.workers or max(1, math.ceil(n / PER_PROCESS))
        if args.compare:
            runs += [(p, min(n, PEER_CAP), 1, None) for p in PEERS]
        if args.floor or args.server == "bare":
            runs.append(("bare", n, fastws_workers, None))
        if not args.compare and args.server not in ("fastws", "bare"):
            runs.append((args.server, min(n, PEER_CAP), 1, None))
        if args.hs_floor and not any(k == FLOOR for k, *_ in runs):
            runs.append((FLOOR, min(n, PEER_CAP), 1, None))
        lines.append(f"- hold {args.hold:g} s with ping interval {args.ping_interval or 'none'} s "
                    f"(timeout {args.ping_timeout:g} s), memory after {args.settle:g} s idle, idle CPU over "
                    f"{args.window:g} s, memory guard MemAvailable >= {args.mem_floor_gib:g} GiB, "
                    f"at most {args.concurrency} handshakes in flight in all")
        if args.client == "both":  # every run twice: the old client, then the lean one
            runs = [(*run, c) for run in runs for c in ("old", "lean")]
        else:
            runs = [(*run, args.client) for run in runs]
        lines.append(f"- clients: {', '.join(sorted({c for *_, c in runs}))} (lean: paced at "
                     f"{args.client_rate:g} connects/s per client process)")
        if args.repeat > 1:
            lines.append(f"- {args.repeat} rounds: every run above once per round, in that order")
        if args.pin:
            lines.append("- pinned: every server on CPU 0, its clients on CPU 1")
        for rep in range(args.repeat):
            for kind, k, w, api, client in runs:
                if GUARD.tripped:
                    break
                r = await run_one(kind, k, w, args, ping_interval=args.ping_interval,
                                  ping_timeout=args.ping_timeout, hold=args.hold, window=args.window,
                                  settle=args.settle, api=api, client=client, pin=args.pin)
                r["capped"] = (kind in PEERS or kind == FLOOR) and k < n
                r["rep"] = rep
                if GUARD.tripped:
                    r.setdefault("limit", GUARD.tripped)
                results.append(r)
        text = table(results) + "\n\n" + client_table(results)
    text += "\n\n" + "\n".join(f"- {x}" for x in notes(results, args))
    if not args.heartbeat_cost:
        text += "\n\n" + EXPLAIN.format(settle=args.settle, page=PAGE)
    print()
    print(text)
    append_results(args.out, f"connections.py {date}", lines, text)
    return 0


def client_table(results: list[dict]) -> str:
    """The load side next to the server: client CPU and memory per connection, old client vs lean."""
    out = ["| client | server | open / asked | clients | time to open | client CPU-s opening / whole run "
           "| client CPU-s per 1,000 conns | client RSS / conn above idle (total) | server RSS / conn "
           "| server CPU-s opening / whole run | client / server CPU | lost | client CPU vs old | client RSS vs old |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "client_cpu_s" not in r:
            continue
        old = next((o for o in results if o.get("client") == "old" and o["server"] == r["server"]
                    and o.get("api") == r.get("api") and "client_cpu_s" in o), None)
        per_k = r["client_cpu_s"] * 1000 / max(r["open"], 1)
        name = r["server"] + (f" ({r['api']})" if r["server"] == "fastws" else "")
        if old is None or old is r:
            vs_cpu = vs_rss = "-"
        else:
            vs_cpu = f"{per_k / (old['client_cpu_s'] * 1000 / max(old['open'], 1)):.2f}x"
            vs_rss = f"{r['client_rss_delta_per_conn'] / old['client_rss_delta_per_conn']:.2f}x"
        out.append(f"| {r['client']} | {name} | {r['open']:,} / {r['target']:,} | {r['clients']} "
                   f"| {r['open_s']:.1f} s | {r['client_cpu_open_s']:.1f} / {r['client_cpu_s']:.1f} "
                   f"| {per_k:.2f} | {_b(r['client_rss_delta_per_conn'])} ({_b(r['client_rss_per_conn'])}) "
                   f"| {_b(r['rss_per_conn'])} | {r['open_cpu_s']:.1f} / {r['server_cpu_s']:.1f} "
                   f"| {r['client_cpu_s'] / r['server_cpu_s']:.2f}x | {r['lost']} | {vs_cpu} | {vs_rss} |")
    if len(out) == 2:
        return ""
    out.append("")
    out.append("*client CPU-s* = user + system CPU of the client processes from their ready line (imports done) "
               "to the end of opening / to the end of the hold (opening + settle + window + hold with the "
               "server's pings answered); *per 1,000 conns* = the whole-run figure per 1,000 connections held; "
               "*client RSS / conn above idle* = (VmRSS after opening and the settle - VmRSS once ready) / "
               "connections, and in brackets the whole VmRSS / connections; *server CPU-s* = all workers, "
               "from the first connect to the end of opening / of the hold.")
    return "\n".join(out)


def hb_table(results: list[dict]) -> str:
    out = ["| server | connections | server CPU in window | % of one core | pings in window "
           "| CPU vs fastws | server CPU µs / ping | µs / ping vs fastws | lost | server RSS / conn |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = results[0] if results and "idle_cpu_s" in results[0] else None
    for r in results:
        name = {"fastws": "fastws (timer wheel)", "timer-baseline": "one call_later per connection"}[r["server"]]
        if "idle_cpu_s" not in r:
            out.append(f"| {name} | {r.get('open', 0):,} | {r.get('error') or r.get('limit')} | | | | | | |")
            continue
        per = r["idle_cpu_s"] * 1e6 / r["window_pings"] if r["window_pings"] else float("nan")
        ref_per = ref["idle_cpu_s"] * 1e6 / ref["window_pings"] if ref and ref["window_pings"] else float("nan")
        ratio = f"{r['idle_cpu_s'] / ref['idle_cpu_s']:.2f}x" if ref and r is not ref else "-"
        pratio = f"{per / ref_per:.2f}x" if ref and r is not ref else "-"
        out.append(f"| {name} | {r['open']:,} | {r['idle_cpu_s']:.2f} s / {r['window_s']:.0f} s "
                   f"| {r['idle_cpu_pct']:.1f}% | {r['window_pings']:,} | {ratio} | {per:.1f} | {pratio} "
                   f"| {r['lost']} | {_b(r['rss_per_conn'])} |")
    out.append("")
    out.append("Read the µs / ping columns first: the two servers need not send as many pings in the "
               "window (fastws pings after interval/2 .. interval of silence, then checks again only after "
               "ping_timeout; the baseline pings every interval), so total CPU compares schedules as well "
               "as timers. Each ping costs a write, a pong read and a parse on both servers; the timer's own "
               "cost is what is left of the per-ping difference.")
    return "\n".join(out)


def _interval(text: str):
    return None if text.lower() in ("none", "off", "0") else float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--connections", type=int, help="connections to open (default 10,000; "
                    "15,000 for --heartbeat-cost; peers are capped at 15,000)")
    ap.add_argument("--workers", type=int, help="fastws worker processes (default ceil(N / 15,000))")
    ap.add_argument("--clients", type=int, help="client processes (default ceil(N / 15,000))")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds the connections are held once open")
    ap.add_argument("--ping-interval", type=_interval, default=20.0, help="server keepalive (default 20 s)")
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    ap.add_argument("--api", choices=("listener", "handler", "both"), default="listener",
                    help="fastws API; both: two fastws runs, listener then handler")
    ap.add_argument("--server", choices=("fastws",) + PEERS + ("bare", FLOOR), default="fastws")
    ap.add_argument("--floor", action="store_true",
                    help="after fastws, the bare keepalive floor (bench/load/conn_peers.py bare) at the same N "
                         "on as many processes, with fastws's idle CPU per ping against it")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds: every run once per round, alternating (with --hs-floor: the ratio to the "
                         "floor of each round and their median)")
    ap.add_argument("--pin", action="store_true",
                    help="the server on CPU 0, the clients on CPU 1 (with --workers 1: the worker's rate on a core of "
                         "its own, without the clients' processes moving onto its core between handshakes)")
    ap.add_argument("--hs-floor", action="store_true",
                    help="also run the bare uvloop handshake floor (bench/load/conn_peers.py handshake-floor) and print "
                         "each server's CPU per handshake and its ratio to the floor")
    ap.add_argument("--compare", action="store_true",
                    help="fastws, then picows and websockets at min(N, 15,000), with ratios")
    ap.add_argument("--heartbeat-cost", action="store_true",
                    help="server CPU of keepalive: fastws vs one call_later per connection")
    ap.add_argument("--hb-interval", type=float, default=2.0, help="ping interval for --heartbeat-cost")
    ap.add_argument("--hb-settle", type=float, default=3.0, help="seconds before the --heartbeat-cost window")
    ap.add_argument("--settle", type=float, default=5.0, help="idle seconds before memory is read")
    ap.add_argument("--window", type=float, default=20.0, help="seconds of the idle CPU window")
    ap.add_argument("--concurrency", type=int, default=512, help="handshakes in flight, all clients together")
    ap.add_argument("--stagger", type=int, default=0,
                    help="client processes opening at the same time, the next starting when one is done "
                         "(default 0: all at once; --concurrency is shared by these)")
    ap.add_argument("--client", choices=("lean", "old", "both"), default="lean",
                    help="client processes: lean (bench/load/conn_lean.py: one loop, paced opening, the Cython "
                         "codec; default), old (bench/load/conn_client.py), both: each run twice, old then lean")
    ap.add_argument("--client-rate", type=float, default=1000.0,
                    help="lean client: connects per second per client process, paced (default 1,000; 0: unpaced, "
                         "as fast as --concurrency allows, as the old client; the wall-clock handshakes/s "
                         "columns are bounded by this rate x clients)")
    ap.add_argument("--mem-floor-gib", type=float, default=2.0,
                    help="stop opening when MemAvailable falls under this (default 2 GiB)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--first-src", type=int, default=2, metavar="K",
                    help="clients bind to 127.0.0.K, K+1, ... (default 2; another K keeps clear of "
                         "a bench running at the same time)")
    ap.add_argument("--out", help="append the tables, date, command and machine to this markdown file "
                                  "(bench/results/latest.md: to history.md, see bench/README.md)")
    args = ap.parse_args()
    if args.pin and (args.workers != 1 or (os.cpu_count() or 1) < 2):
        ap.error("--pin takes --workers 1 on a machine of two CPUs or more")
    if not 2 <= args.first_src <= 254:
        ap.error("--first-src must be 2..254")
    _NEXT_SRC[0] = args.first_src
    if args.heartbeat_cost:
        args.ping_timeout = min(args.ping_timeout, 10.0)
    return run_guarded(amain(args), args.mem_floor_gib)  # opening or holding: the memory guard watches


if __name__ == "__main__":
    sys.exit(main())
