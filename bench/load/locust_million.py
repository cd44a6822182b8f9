"""Connections held by locust (bench/load/locustfile.py PoolHoldUser or HoldUser) against a WebSocket server.

    python bench/load/locust_million.py --users 20000 --server-workers 2 --locust-workers 2 --user both
    python bench/load/locust_million.py --users 100000 --server-workers 6 --locust-workers 6
    python bench/load/locust_million.py --server websockets --users 10000 --locust-workers 1

``--user pool`` (default): ``PoolHoldUser`` (fastws.locust.PoolUser), one locust
user per ``--pool-size`` connections, each user one greenlet driving its whole
pool; ``--users`` is then the number of connections.  ``--user hold``: the
one-connection-per-user ``HoldUser`` (fastws.locust.WebSocketUser), as in the
runs before PoolUser existed.  ``--user both``: hold, then pool, in the same
invocation, with the ratio of their locust-worker bytes per held connection.

One run on this machine: start the server (``fastws echo --workers N``, or a
one-process websockets / picows echo server from bench/harness/servers.py), a locust
master and ``--locust-workers`` workers (headless, HoldUser: connect from
127.0.0.2 ... , answer the server's pings, PING every 30 s), ramp to
``--users`` at ``--spawn-rate`` (as fast as connections complete), hold
``--hold`` seconds once the server holds them all (or the count stopped
growing for ``--stall`` seconds), stop.  Every 2 s it
samples, from /proc: the memory and open sockets of the server processes and
of the locust workers, and the machine's available memory; it aborts the run
(SIGTERM everything it started) if available memory falls below
``--min-available-gib``.  Memory per connection: for the server, the least-squares slope of RSS
against the sockets it holds over the samples (so its baseline does not
count); for the locust workers, (RSS at the peak - RSS of the idle workers
before the spawn) / sockets held, i.e. user + greenlet + connection (users
are all spawned at once and wait for their connect slot, so a slope would
mix the two).  The workers start first, alone, and their idle RSS is read
once it is steady (2 s), before the master starts and spawns the users.  Failures come from locust's CSV, peak connections from the
``fastws.locust`` stats (--ws-stats-file).

A process can hold at most ~19,900 sockets here (RLIMIT_NOFILE 20,000, not
raisable), so each server worker and each locust worker must stay below that.
The result is printed and appended to ``--json`` (default
bench/load/locust_million.json) for bench/results/.
"""
from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: the harness

from harness import servers  # noqa: E402
from harness.meta import REPO, free_port, machine, versions  # noqa: E402
from harness.run import (GUARD, child_env, fd_count, mem_available, rss_kib, sockstat_tcp, spawn, stop,  # noqa: E402
                         tree, wait_port)
from harness.run import proc_cpu_ns as cpu_ns  # noqa: E402

PER_PROCESS = 19000  # sockets a process may hold here (RLIMIT_NOFILE 20,000), with a margin
PER_SOURCE = 25000   # connections per source address (~28,000 ephemeral ports toward one server port)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def slope(xs, ys):
    """Least-squares slope of ys against xs (None if xs do not vary)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def run(args, kind: str) -> dict:
    out = Path(args.out) / kind
    out.mkdir(parents=True, exist_ok=True)
    if kind == "pool":
        pool_size = min(args.pool_size, args.users)
        users, user_class = math.ceil(args.users / pool_size), "PoolHoldUser"
    else:
        pool_size, users, user_class = 1, args.users, "HoldUser"
    port = args.port or free_port("127.0.0.1")
    mport = free_port("127.0.0.1")
    lw = args.locust_workers or max(1, math.ceil(args.users / 16000))
    if args.users / lw > PER_PROCESS:
        raise SystemExit(f"{args.users} users over {lw} locust workers is more than {PER_PROCESS} "
                         "sockets per process: use more --locust-workers")
    avail0 = mem_available()
    log(f"available memory {avail0 / 2**30:.1f} GiB")
    if avail0 < (args.min_available_gib + 2) * 2**30:
        raise SystemExit("not enough available memory to start")

    if args.server == "fastws":
        server_cmd = [sys.executable, "-m", "fastws", "echo", "--port", str(port), "--workers",
                      str(args.server_workers), "--log-level", "warning", "--ping-interval",
                      str(args.server_ping), "--ping-timeout", str(args.server_ping_timeout)]
    else:
        server_cmd = [sys.executable, servers.__file__, args.server, "--port", str(port)]
    procs = []
    server = spawn(server_cmd, env=child_env(), cwd=str(REPO), stdout=subprocess.DEVNULL,
                   stderr=open(out / "server.log", "w"))
    procs.append(server)
    result = {"server": args.server, "server_workers": args.server_workers if args.server == "fastws" else 1,
              "user": user_class, "pool_size": pool_size, "locust_users": users,
              "users": users * pool_size, "locust_workers": lw, "spawn_rate": args.spawn_rate, "stagger": args.stagger,
              "max_connecting": args.max_connecting,
              "hold": args.hold, "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        if not wait_port(port):
            raise SystemExit("server did not start: " + (out / "server.log").read_text()[-2000:])
        time.sleep(1.0)
        server_base = sum(rss_kib(p) for p in tree(server.pid))
        server_fd_base = sum(fd_count(p) for p in tree(server.pid))  # listeners, pipes, ...
        # -t is only a safety bound: the run is stopped (SIGTERM to the master,
        # which then writes its CSV and stats) --hold seconds after the server
        # holds every connection, or after the count stopped growing for
        # --stall seconds.
        run_time = args.time_limit or int(math.ceil(users * pool_size / args.spawn_rate) * 4 + args.hold + 120)
        lf = str(HERE / "locustfile.py")
        lenv = child_env()
        lenv["FASTWS_HOLD_PING"] = str(args.client_ping)
        lenv["FASTWS_LOCUST_SOURCES"] = str(args.sources)
        lenv["FASTWS_CONNECT_TIMEOUT"] = str(args.connect_timeout)
        # All users are spawned at once (one spawn message from the master:
        # locust 2.47 workers re-build their argument parser for every option
        # of every spawn message, which stalled workers at 400 users/s); each
        # worker paces its own connects at rate / workers.
        # --stagger K: K workers open at a time, in waves, each at spawn_rate /
        # K (on 2 cores, 50 processes opening at once spent most of their CPU
        # switching between each other); worker i starts when worker i - K has
        # an answer to every one of its connects (bench/load/locustfile.py), so
        # a wave the server answers slowly delays the next one.
        at_once = min(args.stagger or lw, lw)
        per_worker_rate = args.spawn_rate / at_once
        waves = out / "waves"
        if at_once < lw:
            waves.mkdir(exist_ok=True)
        # Closed loop: at most --max-connecting handshakes in flight, all the
        # users opening at a time together (each its share): when the server
        # slows down (a million connections pinging on two cores), the users
        # wait for it instead of queueing more connects than it can answer
        # within the connect timeout.
        opening_users = math.ceil(users / lw) * at_once
        lenv["FASTWS_MAX_CONNECTING"] = str(max(1, args.max_connecting // opening_users))
        lenv["FASTWS_CONNECT_RATE"] = str(per_worker_rate)
        lenv["FASTWS_POOL_CONNECTIONS"] = str(pool_size)
        master_cmd = [sys.executable, "-m", "locust", "-f", lf, user_class, "--master", "--headless",
                      "--master-bind-host", "127.0.0.1", "--master-bind-port", str(mport),
                      "--expect-workers", str(lw), "-u", str(users), "-r", str(users),
                      "-t", f"{run_time}s", "--host", f"ws://127.0.0.1:{port}", "--csv", str(out / "hold"),
                      "--ws-stats-file", str(out / "ws.json"), "--ws-stats-interval", "10",
                      "--only-summary", "--stop-timeout", "20", "--html", str(out / "report.html")]
        # The workers first, alone: their RSS once loaded and idle (steady for
        # 2 s) is the baseline of the bytes per held connection; then the
        # master (a worker's zmq socket connects to it when it comes).
        workers = []
        own_k = math.ceil(math.ceil(users * pool_size / lw) / PER_SOURCE)   # addresses per worker
        for i in range(lw):
            # worker i starts when worker i - K has finished opening (bench/load/locustfile.py)
            wenv = lenv if at_once >= lw else dict(lenv, FASTWS_WAVE_DIR=str(waves), FASTWS_WAVE_ID=str(i),
                                                   FASTWS_WAVE_AFTER=str(i - at_once) if i >= at_once else "")
            if kind == "pool" and not args.shared_sources:
                # each worker its own source addresses, their ports picked in
                # order by the pool (PoolUser.own_source_addresses): the
                # kernel's port search over 64 shared addresses stalled the
                # connects near 900,000
                wenv = dict(wenv, FASTWS_LOCUST_OWN_SOURCES=",".join(
                    str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.0.0.2")) + i * own_k + j))
                    for j in range(own_k)))
            w = spawn([sys.executable, "-m", "locust", "-f", lf, user_class, "--worker",
                       "--master-host", "127.0.0.1", "--master-port", str(mport)],
                      env=wenv, cwd=str(out), stdout=subprocess.DEVNULL,
                      stderr=open(out / f"worker{i}.log", "w"))
            workers.append(w)
            procs.append(w)
        idle_rss, steady, t_idle = 0, 0, time.monotonic()
        while steady < 4 and time.monotonic() - t_idle < 30:
            time.sleep(0.5)
            now_rss = sum(rss_kib(w.pid) for w in workers) * 1024
            steady = steady + 1 if now_rss and abs(now_rss - idle_rss) < 256 * 1024 else 0
            idle_rss = now_rss
        master = spawn(master_cmd, env=lenv, cwd=str(out), stdout=open(out / "master.out", "w"),
                       stderr=subprocess.STDOUT)
        procs.append(master)
        log(f"server {args.server} pid {server.pid}, locust master {master.pid}, workers "
            f"{[w.pid for w in workers]}; {users} {user_class} x {pool_size} connections at "
            f"{args.spawn_rate}/s, run time {run_time}s")
        samples = []
        t0 = time.monotonic()
        aborted = None
        cpu0 = {p: cpu_ns(p) for p in tree(server.pid) + [w.pid for w in workers]}
        deadline = t0 + run_time + 120
        plateau_at = None   # when the server first held every user (or stopped growing)
        best, best_t = 0, time.monotonic()
        target = users * pool_size
        inuse0 = sockstat_tcp()['inuse']
        # Counting the sockets of every process (listing /proc/PID/fd) costs
        # the kernel time in proportion to the sockets: at a million, a count
        # of all 112 processes took over a minute of a saturated machine. So
        # each sample reads the cheap figures (memory, CPU, /proc/net/sockstat)
        # and the sockets are counted at most 1/20 of the time, and always at
        # the plateau and at the end of the hold.
        next_count, hold_done = 0.0, False
        while master.poll() is None:
            time.sleep(2)
            spids = tree(server.pid)
            s = {
                "t": round(time.monotonic() - t0, 1),
                "avail": mem_available(),
                "server_rss": sum(rss_kib(p) for p in spids) * 1024,
                "client_rss": sum(rss_kib(w.pid) for w in workers) * 1024,
                "server_cpu": sum(cpu_ns(p) - cpu0.get(p, 0) for p in spids) / 1e9,
                "client_cpu": sum(cpu_ns(w.pid) - cpu0.get(w.pid, 0) for w in workers) / 1e9,
                "tcp_pairs": max(0, sockstat_tcp()['inuse'] - inuse0) // 2,   # both ends of loopback pairs, handshakes included
            }
            now = time.monotonic()
            hold_done = plateau_at is not None and now - plateau_at >= args.hold
            if now >= next_count or hold_done or (plateau_at is None and s["tcp_pairs"] >= target):
                c0 = time.monotonic()
                s["server_fds"] = sum(fd_count(p) for p in spids) - server_fd_base
                s["client_fds"] = sum(fd_count(w.pid) for w in workers)
                took = time.monotonic() - c0
                next_count = time.monotonic() + 20 * took
            samples.append(s)
            if len(samples) % 5 == 0 or "server_fds" in s:
                counted = (f"server fds {s['server_fds']:,}; locust fds {s['client_fds']:,}; "
                           if "server_fds" in s else "")
                log(f"t={s['t']:.0f}s {counted}TCP pairs {s['tcp_pairs']:,}; server rss "
                    f"{s['server_rss'] / 2**20:,.0f} MiB; locust rss {s['client_rss'] / 2**20:,.0f} MiB; "
                    f"available {s['avail'] / 2**30:.1f} GiB")
            if GUARD.low(s["avail"]):
                aborted = f"available memory {s['avail'] / 2**30:.1f} GiB < {args.min_available_gib} GiB"
                log("ABORT: " + aborted)
                stop(master, *workers, timeout=30)
                break
            now = time.monotonic()
            if s["tcp_pairs"] > best + 50:
                best, best_t = s["tcp_pairs"], now
            if plateau_at is None and (s.get("server_fds", 0) >= target or now - best_t > args.stall):
                plateau_at = now
                result["ramp_seconds"] = round(now - t0, 1)
                log(f"plateau: server sockets {s.get('server_fds', s['tcp_pairs']):,}, TCP pairs "
                    f"{s['tcp_pairs']:,}; holding {args.hold:.0f}s")
            if hold_done and "server_fds" in s:
                log(f"hold done (server sockets {s['server_fds']:,}): stopping locust (SIGTERM to the master)")
                result["server_at_hold_end"] = s["server_fds"]
                master.send_signal(signal.SIGTERM)
                try:
                    master.wait(120)
                except subprocess.TimeoutExpired:
                    aborted = "master did not stop after SIGTERM"
                    stop(master, *workers, timeout=30)
                break
            if now > deadline:
                aborted = "master did not stop in time"
                log("ABORT: " + aborted)
                stop(master, *workers, timeout=30)
                break
        end = time.monotonic() + 60  # workers close their connections, then exit
        for w in workers:
            try:
                w.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        stop(*workers, timeout=30)
        result["aborted"] = aborted
        result["master_exit"] = master.returncode
        result["samples"] = len(samples)
        counted = [s for s in samples if "server_fds" in s]
        peak = max(counted, key=lambda s: s["server_fds"]) if counted else {}
        result["server_peak_connections"] = peak.get("server_fds")  # sockets beyond the idle server's fds
        result["client_peak_fds"] = max((s["client_fds"] for s in counted), default=None)
        result["server_rss_at_peak"] = peak.get("server_rss")
        result["server_rss_base"] = server_base * 1024
        result["client_rss_at_peak"] = peak.get("client_rss")
        result["min_available"] = min((s["avail"] for s in samples), default=None)
        result["server_cpu_s"] = samples[-1]["server_cpu"] if samples else None
        result["client_cpu_s"] = samples[-1]["client_cpu"] if samples else None
        ramp = [s for s in samples[:-1] if "server_fds" in s]  # the last sample may be taken while users stop
        # Client side: every user (greenlet + User object) exists from the
        # spawn on, before its connect, so the RSS slope against sockets would
        # mix the two; per held connection = (RSS at the peak - RSS of the idle
        # workers at the first sample, before the spawn) / connections held.
        held = peak.get("client_fds") if samples else None
        result["client_rss_idle"] = idle_rss
        result["client_bytes_per_conn"] = ((peak.get("client_rss") - idle_rss) / held
                                           if samples and held else None)
        result["client_bytes_per_conn_slope"] = slope([s["client_fds"] for s in ramp], [s["client_rss"] for s in ramp])
        result["server_bytes_per_conn"] = slope([s["server_fds"] for s in ramp], [s["server_rss"] for s in ramp])
        try:
            result["ws_stats"] = json.loads((out / "ws.json").read_text())
        except (OSError, ValueError):
            result["ws_stats"] = None
        try:
            with open(out / "hold_stats.csv") as f:
                rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
            result["requests"] = {f"{k[0]} {k[1]}".strip(): {"count": int(r["Request Count"]),
                                                             "failures": int(r["Failure Count"]),
                                                             "median_ms": r["Median Response Time"],
                                                             "p99_ms": r.get("99%")}
                                  for k, r in rows.items()}
            with open(out / "hold_failures.csv") as f:
                result["failures"] = [dict(r) for r in csv.DictReader(f)][:10]
        except OSError as exc:
            result["requests"] = f"no CSV: {exc}"
        result["html_report"] = str(out / "report.html") if (out / "report.html").exists() else None
        result["per_locust_worker"] = round(args.users / lw)
        result["timeline"] = [{k: (round(v / 2**20) if k.endswith("rss") or k == "avail" else v)
                               for k, v in s.items()} for s in samples[::5]]
        return result
    finally:
        stop(*procs[1:], timeout=30)
        stop(server, timeout=30)


def _sigterm(*_):
    raise SystemExit("SIGTERM")


def main() -> int:
    signal.signal(signal.SIGTERM, _sigterm)  # so that `finally` stops what this started
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="fastws", choices=["fastws", "websockets", "picows"])
    ap.add_argument("--server-workers", type=int, default=2, help="fastws echo --workers (default 2)")
    ap.add_argument("--users", type=int, default=10000, help="connections to hold (default 10,000)")
    ap.add_argument("--user", choices=["pool", "hold", "both"], default="pool",
                    help="pool: PoolHoldUser (PoolUser, --pool-size connections per locust user; default); "
                         "hold: HoldUser (WebSocketUser, one per user); both: hold then pool, with their ratio")
    ap.add_argument("--pool-size", type=int, default=1000, help="connections per PoolHoldUser (default 1,000)")
    ap.add_argument("--locust-workers", type=int, default=0, help="locust worker processes (default: users/16,000)")
    ap.add_argument("--spawn-rate", type=float, default=400.0, help="connects per second, all workers (default 400)")
    ap.add_argument("--stagger", type=int, default=0,
                    help="locust workers opening at the same time, in waves (default 0: all at once); "
                         "--spawn-rate is shared by them")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds to hold after the ramp (default 30)")
    ap.add_argument("--connect-timeout", type=float, default=30.0, help="HoldUser connect + handshake timeout (default 30 s)")
    ap.add_argument("--max-connecting", type=int, default=2000,
                    help="PoolHoldUser: handshakes in flight, all users together (each user gets its share, "
                         "at least 1; default 2,000)")
    ap.add_argument("--stall", type=float, default=30.0, help="treat the count as final when it has not grown for this long (default 30 s)")
    ap.add_argument("--client-ping", type=float, default=30.0, help="HoldUser PING interval, s (default 30)")
    ap.add_argument("--server-ping", type=float, default=20.0, help="fastws --ping-interval, s (default 20)")
    ap.add_argument("--server-ping-timeout", type=float, default=20.0, help="fastws --ping-timeout, s (default 20)")
    ap.add_argument("--sources", type=int, default=64,
                    help="loopback source addresses 127.0.0.2.. shared by the workers (HoldUser, and PoolHoldUser "
                         "with --shared-sources; default 64)")
    ap.add_argument("--shared-sources", action="store_true",
                    help="PoolHoldUser: the --sources addresses shared by every worker, the kernel picking the "
                         "ports, instead of each worker its own addresses (one per 25,000 connections) whose "
                         "ports the pool picks in order")
    ap.add_argument("--time-limit", type=int, default=0,
                    help="locust's -t, a safety bound (default: 4 x connections / spawn rate + hold + 120 s)")
    ap.add_argument("--min-available-gib", type=float, default=3.0, help="abort below this (default 3)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", default="/tmp/fastws-locust-million")
    ap.add_argument("--json", default=str(HERE / "locust_million.json"))
    args = ap.parse_args()
    GUARD.floor_gib = args.min_available_gib
    print(machine())
    print(versions())
    kinds = ["hold", "pool"] if args.user == "both" else [args.user]
    results, status = [], 0
    for kind in kinds:
        result = run(args, kind)
        results.append(result)
        summary = {k: v for k, v in result.items() if k not in ("timeline",)}
        print(json.dumps(summary, indent=1, default=str))
        try:
            with open(args.json) as f:
                allr = json.load(f)
        except (OSError, ValueError):
            allr = []
        allr.append(result)
        with open(args.json, "w") as f:
            json.dump(allr, f, indent=1, default=str)
        reqs = result.get("requests")
        fails = reqs["Aggregated"]["failures"] if isinstance(reqs, dict) and "Aggregated" in reqs else None
        result["failures_total"] = fails
        log(f"{result['user']}: peak held (server sockets): {result['server_peak_connections']}, locust peak open: "
            f"{(result['ws_stats'] or {}).get('peak_open')}, failures: {fails}, aborted: {result['aborted']}")
        if result["aborted"] or fails != 0:
            status = 1
        if GUARD.low():
            log("memory guard: not starting the next run")
            break
    print(table(results))
    return status


def table(results: list) -> str:
    """The runs as a markdown table; with both users, the ratio of their bytes per held connection."""
    def n(x, fmt="{:,.0f}"):
        return "-" if x is None else fmt.format(x)

    out = ["| user | connections asked | held (server sockets / locust peak open) | failures "
           "| CONNECT median / p99 ms | locust RSS at peak (idle) | locust B / held conn | vs HoldUser "
           "| server B / conn (slope) | CPU s server / locust | locust CPU ms / conn |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    ref = next((r for r in results if r["user"] == "HoldUser" and r.get("client_bytes_per_conn")), None)
    for r in results:
        reqs = r.get("requests") if isinstance(r.get("requests"), dict) else {}
        conn = next((v for k, v in reqs.items() if k.startswith("CONNECT")), {})
        held = r.get("client_peak_fds") or 0
        ratio = ("-" if ref is None or r is ref or not r.get("client_bytes_per_conn")
                 else f"{r['client_bytes_per_conn'] / ref['client_bytes_per_conn']:.2f}x")
        cpu_ms = r["client_cpu_s"] * 1000 / held if held and r.get("client_cpu_s") is not None else None
        name = r["user"] + (f" (x{r['pool_size']:,} per user, {r['locust_users']} users)" if r["pool_size"] > 1 else "")
        out.append(
            f"| {name} | {r['users']:,} | {n(r.get('server_peak_connections'))} / "
            f"{n((r.get('ws_stats') or {}).get('peak_open'))} | {n(r.get('failures_total'))} "
            f"| {conn.get('median_ms', '-')} / {conn.get('p99_ms', '-')} "
            f"| {n((r.get('client_rss_at_peak') or 0) / 2**20)} MiB ({n((r.get('client_rss_idle') or 0) / 2**20)} MiB) "
            f"| {n(r.get('client_bytes_per_conn'))} | {ratio} | {n(r.get('server_bytes_per_conn'))} "
            f"| {n(r.get('server_cpu_s'), '{:.1f}')} / {n(r.get('client_cpu_s'), '{:.1f}')} | {n(cpu_ms, '{:.2f}')} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
