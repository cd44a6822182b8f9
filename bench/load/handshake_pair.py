"""fastws's handshakes against the floor's, at the same time: CPU per handshake by offered rate.

    python bench/load/handshake_pair.py [--rates 1000,2000,4000,8000] [-n 8000] [--repeat 3]
                                        [--api listener|handler] [--pair fastws,handshake-floor|fastws@DIR,fastws]
                                        [--ping-interval 60] [--mem-floor-gib 2] [--out FILE]

bench/load/connections.py --hs-floor runs fastws, then the floor, one after
the other: on this 2-core machine one such round moves by 10-15% from the
next (other processes, the host), so a ratio needs many rounds and still
moves by some 5% from one run of seven to the next. Here both servers run at
once, each fed by its own lean client (bench/load/conn_lean.py, paced at
half the offered rate, its own source address): whatever the machine does
meanwhile, both servers go through it together. Each round opens ``-n``
connections to each server, reads each server's CPU over the opening
(``/proc/PID/task/*/schedstat``), and gives fastws's CPU per handshake
against the floor's; one round's ratio lands within about 1-2% of the next.

The offered rate decides how many handshakes a server finds per wake-up: at
1,000 a second nearly each one wakes an idle server whose caches the
clients and the kernel have just used, and a handshake costs what its code
and data take to come back into the caches; at 8,000 a second they come in
bursts. The ratio at each rate shows what fastws's larger footprint per
handshake (llhttp, the timer wheel, the connection and listener objects)
costs in each case (docs/design/handshake.md#the-rate-by-load).

Both servers keep connections alive with a ping every ``--ping-interval``
seconds (60 by default). fastws checks a connection's keepalive at half the
interval after it opened; were that check inside the opening (2,000
connections a second for 8,000 connections takes 8 s; 500 a second, 16 s), the
round would count work done per held connection and second, which the floor
does not do, as handshake cost: the interval must be more than twice the
slowest round's opening (checked before anything starts).

The floor is bench/load/conn_peers.py handshake-floor (reads the head up to
CRLF CRLF, writes a canned 101 with the real Sec-WebSocket-Accept).
``--pair A,B`` pairs any two of fastws and conn_peers.py's servers, e.g.
``fastws,handshake-floor-parser`` (the floor with fastws's parsing: what is
left is the connection machinery) or ``handshake-floor-parser,handshake-floor``
(the parsing alone). ``fastws@DIR`` is the fastws of another checkout (DIR/fastws
with its extension built in place, ``python setup.py build_ext --inplace``; the server
runs with DIR as its working directory), so that ``--pair fastws@/tmp/variant,fastws``
pairs a change against main: two identical fastws servers paired give 0.98x-0.99x, so
effects under 2% do not show (docs/design/handshake.md#the-accept-path-in-c-measured). Every
process is started and stopped here, by PID; loopback only; a memory guard
stops everything when MemAvailable falls under ``--mem-floor-gib``; each
round is bounded in time. Benchmarks print figures; they never pass or fail.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # connections.py: the server and client processes
sys.path.insert(0, str(HERE.parent))  # bench/: the harness
from conn_peers import PEERS  # noqa: E402
from connections import FLOOR, Client, Server, log, plan_clients  # noqa: E402
from harness.run import GUARD, append_results, head, proc_cpu_ns, run_guarded, stamp  # noqa: E402


async def one_round(rate: float, n: int, api: str, host: str, pair: tuple[str, str], ping: float) -> dict:
    """Both servers at once, each with its own client at rate / 2; CPU µs per handshake of each."""
    a, b = pair
    servers = {a: Server(a, host, 1, api, ping, ping), b: Server(b, host, 1, api, ping, ping)}
    clients: dict[str, Client] = {}
    r: dict = {"rate": rate, "n": n}
    try:
        await asyncio.gather(*(s.ready() for s in servers.values()))
        for i, (kind, srv) in enumerate(servers.items()):
            (count, srcs), = plan_clients(n, 1)
            clients[kind] = await Client.start(i, host, srv.port, count, srcs, 256, kind="lean", rate=rate / 2)
        await asyncio.gather(*(c.ready(30) for c in clients.values()))
        cpu0 = {k: proc_cpu_ns(s.proc.pid) for k, s in servers.items()}
        t0 = time.monotonic()
        for c in clients.values():
            await c.send("open")
        waits = {k: asyncio.ensure_future(c.expect("opened", 3600)) for k, c in clients.items()}
        deadline = t0 + 60 + 4 * n / (rate / 2)
        while not all(w.done() for w in waits.values()):
            await asyncio.sleep(0.1)
            why = (GUARD.tripped or ("memory guard: MemAvailable under the floor" if GUARD.low() else None)
                   or (f"the round took longer than {deadline - t0:.0f} s" if time.monotonic() > deadline else None))
            if why:
                r["limit"] = why
                for c in clients.values():
                    await c.send("halt")
                break
        done = {k: await asyncio.wait_for(w, 60) for k, w in waits.items()}
        cpu1 = {k: proc_cpu_ns(s.proc.pid) for k, s in servers.items()}
        for k in servers:
            opened = done[k]["open"]
            r[k] = {"open": opened, "failed": done[k]["failed"], "cpu_s": (cpu1[k] - cpu0[k]) / 1e9,
                    "us": (cpu1[k] - cpu0[k]) / 1e3 / max(opened, 1), "open_s": done[k]["t1"] - done[k]["t0"]}
        r["ratio"] = r[b]["us"] / r[a]["us"]  # A's handshakes per CPU-second / B's
    except Exception as exc:  # noqa: BLE001 - reported in the table
        r["error"] = f"{type(exc).__name__}: {exc}"
        log(f"round at {rate:g}/s FAILED: {r['error']}")
    finally:
        await asyncio.gather(*(c.stop() for c in clients.values()), return_exceptions=True)
        await asyncio.gather(*(s.stop() for s in servers.values()), return_exceptions=True)
    return r


def table(results: list[dict], api: str, pair: tuple[str, str]) -> str:
    a, b = pair
    name = {k: k + (f" ({api})" if k.split("@")[0] == "fastws" else "") for k in pair}
    out = [f"| offered (both servers) | rounds | {name[a]} µs / handshake | {name[b]} µs / handshake "
           f"| {a} / {b}, handshakes per CPU-second, round by round | median | opened, failed |",
           "|---:|---:|---:|---:|---|---:|---|"]
    for rate in sorted({r["rate"] for r in results}):
        rs = [r for r in results if r["rate"] == rate and "ratio" in r]
        bad = [r for r in results if r["rate"] == rate and "ratio" not in r]
        if not rs:
            out.append(f"| {rate:,.0f}/s | 0 | - | - | {bad[0].get('error') or bad[0].get('limit')} | - | - |")
            continue
        fw = statistics.median(r[a]["us"] for r in rs)
        fl = statistics.median(r[b]["us"] for r in rs)
        ratios = [r["ratio"] for r in rs]
        opened = sum(r[a]["open"] + r[b]["open"] for r in rs)
        failed = sum(r[a]["failed"] + r[b]["failed"] for r in rs)
        limits = "; ".join(sorted({r["limit"] for r in rs if r.get("limit")}))
        out.append(f"| {rate:,.0f}/s | {len(rs)} | {fw:.1f} | {fl:.1f} | "
                   f"{', '.join(f'{x:.2f}x' for x in ratios)} | **{statistics.median(ratios):.2f}x** "
                   f"| {opened:,}, {failed}{' (' + limits + ')' if limits else ''} |")
    return "\n".join(out)


async def amain(args) -> int:
    lines = head(__file__, stamp())
    a, b = args.pair
    lines.append(f"- per round: {a} and {b} at once (fastws: `fastws echo`, 1 process, {args.api} API), each fed "
                 f"{args.n:,} connections by its own lean client at half the offered rate; CPU of each server "
                 f"over the opening; keepalive on, ping interval {args.ping_interval:g} s")
    results = []
    for rep in range(args.repeat):
        for rate in args.rates:
            if GUARD.tripped:
                break
            r = await one_round(rate, args.n, args.api, args.host, args.pair, args.ping_interval)
            results.append(r)
            if "ratio" in r:
                log(f"round {rep + 1} at {rate:,.0f}/s: {a} {r[a]['us']:.1f} µs, {b} "
                    f"{r[b]['us']:.1f} µs per handshake: {r['ratio']:.3f}x")
    text = table(results, args.api, args.pair)
    print()
    print("\n".join(lines))
    print()
    print(text)
    append_results(args.out, f"handshake_pair.py {stamp()}", lines, text)
    return 0


def _checkout(kind: str) -> bool:
    """``fastws@DIR`` where DIR holds a fastws package and its extension built in
    place (run from there: connections.Server), so that neither the twins nor
    the installed extension stand in for the checkout's."""
    if not kind.startswith("fastws@"):
        return False
    where = Path(kind.split("@", 1)[1])
    return (where / "fastws" / "__init__.py").is_file() and any((where / "fastws_ext").glob("core.*.so"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,4000,8000",
                    help="offered handshakes per second, both servers together (comma list)")
    ap.add_argument("-n", type=int, default=8000, help="connections per server per round (at most 15,000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per rate")
    ap.add_argument("--api", choices=("listener", "handler"), default="listener")
    ap.add_argument("--pair", default=f"fastws,{FLOOR}",
                    help="the two servers, A,B: fastws or a bench/load/conn_peers.py server (ratio: A against B)")
    ap.add_argument("--ping-interval", type=float, default=60.0,
                    help="the servers' ping interval in seconds (default 60): the first keepalive check, at "
                         "half of it, must come after the opening, which takes n / (rate / 2) seconds")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mem-floor-gib", type=float, default=2.0)
    ap.add_argument("--out", help="append the table, date and command to this markdown file")
    args = ap.parse_args()
    args.pair = tuple(f"fastws@{Path(k.split('@', 1)[1]).resolve()}" if k.startswith("fastws@") else k
                      for k in args.pair.split(","))
    if (len(args.pair) != 2 or args.pair[0] == args.pair[1]
            or not all(k in ("fastws", *PEERS) or _checkout(k) for k in args.pair)):
        ap.error(f"--pair takes two different servers of: fastws, fastws@DIR (a checkout with its extension "
                 f"built in place), {', '.join(sorted(PEERS))}")
    if not 1 <= args.n <= 15000:
        ap.error("-n must be 1..15,000 (one process per server, open-file limit 20,000)")
    try:
        args.rates = [float(x) for x in args.rates.split(",")]
    except ValueError:
        ap.error(f"--rates takes numbers separated by commas, not {args.rates!r}")
    if not all(0 < r < float("inf") for r in args.rates):
        ap.error("--rates must all be finite and above 0")
    longest = args.n / (min(args.rates) / 2)
    if longest >= args.ping_interval / 2:
        # fastws would check the keepalive of the connections opened first
        # (at half the ping interval) inside the window: work per held
        # connection and second, not per handshake, and the floor has none.
        ap.error(f"the slowest round opens for {longest:g} s: --ping-interval must be more than twice that")
    return run_guarded(amain(args), args.mem_floor_gib)


if __name__ == "__main__":
    sys.exit(main())
