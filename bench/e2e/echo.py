"""Echo benchmark: fastws against picows, websockets, aiohttp and a raw TCP echo.

    python bench/e2e/echo.py [--servers a,b,...] [--rows r1,r2,...] [--duration S]
                             [--quick] [--out bench/results/latest.md]

Each server runs in its own process (bench/harness/servers.py, uvloop, pinned to
CPU 0) one after another; this process is the client for all of them (pinned to
CPU 1, the same code for every server: bench/harness/client.py). Per row it opens the
connections, warms up, then counts echoes completed in the timed window and
reads the server's CPU time (user+sys, /proc/PID/task/*/schedstat, in ns) at
the window's edges. Ratios are against the first "picows" server of the run.
Benchmarks never pass or fail; they print figures.

``--rounds R`` (R > 1) measures differently, for rows whose servers differ by
less than this machine's drift (a few percent): every server is started at
once (the idle ones wait in epoll and cost nothing), and each row runs R
rounds in which every server gets one window, in an order that alternates
from round to round; the table gives each server's median over its R windows,
the range of its server CPU per message, and the paired ratio: the median
over rounds of its CPU per message over picows's in the same round (windows
of one round are adjacent in time, so drift between rounds cancels). Slow
drift and bursts of neighbour load then fall on every server alike.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness import servers  # noqa: E402
from harness.client import client_frame, connect  # noqa: E402
from harness.meta import free_port  # noqa: E402
from harness.run import Child, append_results, head, proc_cpu_ns, stamp  # noqa: E402
from harness.servers import RAW, SERVERS  # noqa: E402

# name: (payload bytes, connections)
ROWS = {
    "rr-32B": (32, 1),
    "rr-1KiB": (1024, 1),
    "rr-64KiB": (64 * 1024, 1),
    "rr-1MiB": (2**20, 1),
    "c1000-32B": (32, 1000),
}
DEFAULT_SERVERS = "picows,fastws-listener,fastws-handler,websockets,aiohttp,bare-uvloop"
SERVER_CPU, CLIENT_CPU = 0, 1
BATCH = 100  # connections opened at once
CLIENT_BOUND = 90  # client CPU % from which a row's msg/s says more about the client
QUIET = 15  # busy % (two CPUs summed) under which the machine counts as quiet
NOISY = 25  # "other" CPU % from which a row is flagged as disturbed


# ------------------------------------------------------------ measuring ----
def cpu_idle_ticks(cpus) -> dict:
    """{cpu: (idle+iowait ticks, total ticks)} from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    v = [int(x) for x in vals]
                    out[int(name[3:])] = (v[3] + v[4], sum(v[:8]))
    except OSError:
        pass
    return out


def busy_pct(a: dict, b: dict) -> float:
    """Busy % of the CPUs in a and b, summed (0..100 x CPUs), between two samples."""
    total = 0.0
    for cpu in a:
        if cpu in b and b[cpu][1] > a[cpu][1]:
            total += 100 * (1 - (b[cpu][0] - a[cpu][0]) / (b[cpu][1] - a[cpu][1]))
    return total


async def wait_quiet(timeout: float) -> float:
    """Wait until both bench CPUs are idle (other sessions' builds are noise).

    Returns the busy % seen last (summed over the two CPUs)."""
    deadline = time.monotonic() + timeout
    while True:
        a = cpu_idle_ticks((SERVER_CPU, CLIENT_CPU))
        await asyncio.sleep(0.5)
        busy = busy_pct(a, cpu_idle_ticks((SERVER_CPU, CLIENT_CPU)))
        if busy <= QUIET or time.monotonic() > deadline:
            return busy


async def run_row(host, port, pid, raw, size, conns, duration, warmup):
    payload = os.urandom(size)
    frame = payload if raw else client_frame(payload)
    clients = []
    try:
        for i in range(0, conns, BATCH):
            clients += await asyncio.gather(
                *(connect(host, port, frame, size, raw) for _ in range(min(BATCH, conns - i)))
            )
        for c in clients:
            c.start()
        await asyncio.sleep(warmup)
        n0 = sum(c.count for c in clients)
        i0 = cpu_idle_ticks((SERVER_CPU, CLIENT_CPU))
        s0, k0, t0 = proc_cpu_ns(pid), time.process_time_ns(), time.perf_counter()
        await asyncio.sleep(duration)
        n1 = sum(c.count for c in clients)
        s1, k1, t1 = proc_cpu_ns(pid), time.process_time_ns(), time.perf_counter()
        i1 = cpu_idle_ticks((SERVER_CPU, CLIENT_CPU))
        for c in clients:
            c.running = False
        await asyncio.wait_for(asyncio.gather(*(c.idle for c in clients)), 30)
        errors = [c.error for c in clients if c.error]
        if errors:
            raise errors[0]
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    secs = t1 - t0
    msgs = n1 - n0
    return {
        "msgs": msgs,
        "rate": msgs / secs,
        "srv_us": (s1 - s0) / 1e3 / msgs if msgs else float("nan"),
        "srv_pct": (s1 - s0) / 1e9 / secs * 100,
        "cli_pct": (k1 - k0) / 1e9 / secs * 100,
        # CPU used by anything but the two bench processes (softirq included):
        "other": max(0.0, busy_pct(i0, i1) - (s1 - s0) / 1e7 / secs - (k1 - k0) / 1e7 / secs),
    }


# -------------------------------------------------------------- servers ----
def server_proc(name: str, host: str, pin: bool) -> Child:
    """bench/harness/servers.py NAME on a free port (pinned to SERVER_CPU if pin)."""
    port = free_port(host)
    return Child([sys.executable, servers.__file__, name, "--host", host, "--port", str(port)],
                 host=host, port=port, cpu=SERVER_CPU if pin else None, name=name)


# -------------------------------------------------------------- report ----
def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def median_result(runs: dict, ref_runs: dict | None) -> dict:
    """One server's windows of one row ({round: result}): the median of each
    figure, the range of the server CPU per message, and the paired ratio:
    the median over rounds of (this server's CPU per message / the
    reference's in the same round), which drift between rounds cannot bias."""
    vals = list(runs.values())
    r = {k: statistics.median(x[k] for x in vals) for k in ("rate", "srv_us", "srv_pct", "cli_pct", "other")}
    r["msgs"] = sum(x["msgs"] for x in vals)
    r["range"] = (min(x["srv_us"] for x in vals), max(x["srv_us"] for x in vals))
    pairs = [x["srv_us"] / ref_runs[rnd]["srv_us"] for rnd, x in runs.items() if ref_runs and rnd in ref_runs]
    r["paired"] = statistics.median(pairs) if pairs else None
    return r


def table(rows, labels, results, ref) -> str:
    ranged = any(isinstance(r, dict) and "range" in r for r in results.values())
    out = ["| bench | server | msg/s | vs picows | server CPU µs/msg | vs picows "
           + ("| µs/msg min-max | paired vs picows " if ranged else "")
           + "| server CPU | client CPU | other CPU |",
           "|---|---|---:|---:|---:|---:|" + ("---:|---:|" if ranged else "") + "---:|---:|---:|"]
    for row in rows:
        base = results.get((row, ref)) if ref else None
        base = base if isinstance(base, dict) else None
        for label in labels:
            r = results.get((row, label))
            if r is None:
                continue
            if isinstance(r, str):
                out.append(f"| {row} | {label} | {r} | | | | | | |" + (" | |" if ranged else ""))
                continue
            rr = f"{r['rate'] / base['rate']:.2f}x" if base else "-"
            cr = f"{r['srv_us'] / base['srv_us']:.2f}x" if base else "-"
            flag = " (client-bound)" if r["cli_pct"] >= CLIENT_BOUND else ""
            flag += " (noisy)" if r["other"] >= NOISY else ""
            span = ""
            if ranged and "range" in r:
                paired = f"{r['paired']:.3f}x" if r.get("paired") is not None else "-"
                span = f"| {r['range'][0]:.1f}-{r['range'][1]:.1f} | {paired} "
            out.append(f"| {row} | {label} | {fmt_rate(r['rate'])}{flag} | {rr} | {r['srv_us']:.1f} | {cr} "
                       f"{span}| {r['srv_pct']:.0f}% | {r['cli_pct']:.0f}% "
                       f"| {r['other']:.0f}% |")
    return "\n".join(out)


# ---------------------------------------------------------------- main ----
def _progress(row, label, r) -> None:
    print(f"  {row:10} {label:16} {fmt_rate(r['rate']):>10} msg/s "
          f"{r['srv_us']:7.1f} µs/msg server CPU {r['srv_pct']:3.0f}% "
          f"client CPU {r['cli_pct']:3.0f}% other {r['other']:3.0f}%", file=sys.stderr, flush=True)


async def _start(name, label, args, pin, notes):
    """A server process, listening; None (and a note) if it cannot run here."""
    srv = server_proc(name, args.host, pin)
    why = await srv.ready()
    if why is None:
        return srv
    notes.append(f"{label}: {why}")
    print(f"  {label}: {why}", file=sys.stderr, flush=True)
    await srv.stop()
    return None


async def _window(args, srv, name, label, row, notes, where=""):
    """One timed window of ``row`` on one server, once the machine is quiet."""
    size, conns = ROWS[row]
    if args.quiet_wait > 0:
        busy = await wait_quiet(args.quiet_wait)
        if busy > QUIET:
            notes.append(f"{label} {row}{where}: machine busy ({busy:.0f}% of 200%) when the window "
                         f"started, after {args.quiet_wait:g} s wait")
    return await run_row(args.host, srv.port, srv.pid, name in RAW, size, conns,
                         args.duration, args.warmup)


def _failed(results, notes, row, label, srv, exc) -> None:
    results[(row, label)] = f"failed: {type(exc).__name__}"
    notes.append(f"{label} {row}: {type(exc).__name__}: {exc} (server stderr: {srv.tail()})")
    print(f"  {row:10} {label:16} FAILED {exc!r}", file=sys.stderr, flush=True)


async def run_sequential(args, names, labels, rows, pin, results, notes) -> None:
    """One server at a time; per row the best (highest msg/s) of --repeat windows."""
    for name, label in zip(names, labels):
        srv = await _start(name, label, args, pin, notes)
        if srv is None:
            continue
        try:
            for row in rows:
                try:
                    runs = [await _window(args, srv, name, label, row, notes) for _ in range(args.repeat)]
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    _failed(results, notes, row, label, srv, exc)
                    if srv.proc.poll() is not None:
                        break
                    continue
                results[(row, label)] = max(runs, key=lambda r: r["rate"])
                _progress(row, label, results[(row, label)])
        finally:
            await srv.stop()


async def run_rounds(args, names, labels, rows, pin, results, notes) -> None:
    """--rounds: all servers up at once; per row, R rounds of one window each."""
    procs = {}
    try:
        for name, label in zip(names, labels):
            srv = await _start(name, label, args, pin, notes)
            if srv is not None:
                procs[label] = (name, srv)
        live = [label for label in labels if label in procs]
        for row in rows:
            runs = {label: {} for label in live}
            for rnd in range(args.rounds):
                for label in (live if rnd % 2 == 0 else live[::-1]):
                    if (row, label) in results:  # failed earlier in this row
                        continue
                    name, srv = procs[label]
                    try:
                        r = await _window(args, srv, name, label, row, notes, f" round {rnd + 1}")
                    except Exception as exc:  # noqa: BLE001 - reported in the table
                        _failed(results, notes, row, label, srv, exc)
                        continue
                    runs[label][rnd] = r
                    _progress(row, f"{label} r{rnd + 1}", r)
            for label in live:
                if (row, label) not in results and runs[label]:
                    results[(row, label)] = median_result(runs[label], runs.get("picows"))
    finally:
        for _, srv in procs.values():
            await srv.stop()


async def amain(args) -> int:
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for n in names:
        if n not in SERVERS:
            sys.exit(f"unknown server {n!r}; known: {', '.join(SERVERS)}")
    for r in rows:
        if r not in ROWS:
            sys.exit(f"unknown row {r!r}; known: {', '.join(ROWS)}")
    if args.conns != 1000:
        ROWS[f"c{args.conns}-32B"] = (32, args.conns)
        rows = [f"c{args.conns}-32B" if r == "c1000-32B" else r for r in rows]

    pin = len(os.sched_getaffinity(0)) >= 2 and not args.no_pin
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})

    # The same server may be listed twice (e.g. picows first and last) to see drift.
    labels, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        labels.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    ref = "picows" if "picows" in names else None

    date = stamp()
    lines = head(
        __file__, date,
        f"- setup: server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}" if pin
        else "- setup: no CPU pinning",
        f"- window: {args.duration:g} s timed after {args.warmup:g} s warm-up per row"
        f"{f', best of {args.repeat}' if args.repeat > 1 else ''}"
        f"{f', median of {args.rounds} interleaved rounds (all servers running, order alternating)' if args.rounds > 1 else ''}; "
        "binary messages, unfragmented, request/response on each connection",
    )
    print("\n".join(lines), flush=True)

    results = {}
    notes = []
    run = run_rounds if args.rounds > 1 else run_sequential
    await run(args, names, labels, rows, pin, results, notes)

    text = table(rows, labels, results, ref)
    if notes:
        text += "\n\n" + "\n".join(f"- note: {n}" for n in notes)
    print()
    print(text)
    append_results(args.out, f"echo.py {date}", lines, text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=DEFAULT_SERVERS,
                    help=f"comma list, may repeat one (default {DEFAULT_SERVERS}; "
                         f"all: {','.join(SERVERS)})")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {','.join(ROWS)}")
    ap.add_argument("--duration", type=float, default=3.0, help="timed seconds per row")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before each timed window")
    ap.add_argument("--conns", type=int, default=1000, help="connections of the c1000 row")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each row this many times and keep the best (highest msg/s)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="R > 1: start every server at once and give each R interleaved windows "
                         "per row, in alternating order; report medians (see the docstring)")
    ap.add_argument("--quick", action="store_true", help="1 s windows, 0.3 s warm-up")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each row, wait up to this many seconds for both CPUs to be idle "
                         "(0: don't wait)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    ap.add_argument("--out", help="append the table, date and command to this markdown file "
                                  "(bench/results/latest.md: to history.md, see bench/README.md)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
