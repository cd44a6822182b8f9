"""The Redis broker across processes: single Redis against a three-master Redis Cluster, and
what presence costs.

    python bench/e2e/broker_cluster.py [--procs 3] [--subs 10000] [--topics 10] [--rate 20]
                                       [--seconds 10] [--presence-conns 10000] [--presence-topics 1000]
                                       [--per-conn 10] [--presence-ttl 9] [--window 30]
                                       [--parts delivery,presence] [--out bench/results/latest.md]

Everything on loopback; the servers are ``fastws push`` processes, the clients lean uvloop
protocols in their own processes (this file run with ``--client``), one per fastws process,
source addresses 127.0.0.2, .3, ... A memory guard stops every process started here (by PID)
when MemAvailable falls under 2 GiB, and at exit.

- **delivery**: for each broker, single Redis (the baseline) and a six-node Redis Cluster
  (three masters, three replicas, ``redis-cli --cluster create``), ``--procs`` fastws
  processes each with ``--subs`` subscribers spread over ``--topics`` topics. Latency phase:
  ``--rate`` publishes a second (POST /publish through the processes in turn, the body the
  publisher's CLOCK_MONOTONIC ns) for ``--seconds``; every delivery's latency = arrival -
  that stamp; p50, p99 over all deliveries (the clients merge 1%-wide histograms).
  Throughput phase: 8 publisher threads POST back to back for ``--seconds``; deliveries/s
  counted by the clients. Ratios: cluster over single Redis, same run.
- **presence**: one fastws process with ``--presence-conns`` connections, each subscribed to
  ``--per-conn`` topics out of ``--presence-topics`` (conns x per-conn subscriptions: the
  "local subscribers"), once without presence (the baseline) and once with
  ``--presence --presence-ttl``; after the subscriptions settle, over ``--window`` seconds:
  Redis commands per second (INFO total_commands_processed, our INFO calls subtracted), the
  fastws process's CPU and Redis's CPU; also the commands the subscribing itself took.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bench/: the harness

OP_TEXT = 0x1
BUCKET = math.log(1.01)  # latency histogram: 1%-wide buckets


# ====================================================================== client process
def client_main(args) -> None:
    """Open ``--count`` subscribers to ``--port`` (topics from ``--queries``, in turn) and
    answer stdin commands: ``stats`` (deliveries and the latency histogram since the last
    stats), ``close``."""
    import asyncio

    import uvloop

    if args.queries.startswith("gen:"):  # gen:TOPICS:PER: connection i takes PER topics from i * PER on
        _, topics, per = args.queries.split(":")
        topics, per = int(topics), int(per)
        queries = ["?topics=" + ",".join(f"p{(i * per + j) % topics}" for j in range(per))
                   for i in range(min(args.count, topics))]
    else:
        queries = args.queries.split("|")
    srcs = args.src.split(",")
    hist: dict = {}
    counts = {"opened": 0, "failed": 0, "deliveries": 0, "lost": 0, "bad": 0}

    class Sub(asyncio.Protocol):
        __slots__ = ("buf", "transport", "upgraded", "waiter")

        def __init__(self, waiter):
            self.buf = b""
            self.upgraded = False
            self.waiter = waiter
            self.transport = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            now = time.monotonic_ns()
            buf = self.buf + data if self.buf else data
            if not self.upgraded:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                ok = buf.startswith(b"HTTP/1.1 101")
                self.upgraded = ok
                if not self.waiter.done():
                    self.waiter.set_result(ok)
                buf = buf[end + 4:]
            i, n = 0, len(buf)
            while n - i >= 2:
                op = buf[i] & 0x0F
                ln = buf[i + 1] & 0x7F
                h = 2
                if ln == 126:
                    if n - i < 4:
                        break
                    ln = int.from_bytes(buf[i + 2:i + 4], "big")
                    h = 4
                elif ln == 127:
                    if n - i < 10:
                        break
                    ln = int.from_bytes(buf[i + 2:i + 10], "big")
                    h = 10
                if n - i < h + ln:
                    break
                if op == OP_TEXT:
                    payload = buf[i + h:i + h + ln]
                    try:
                        lat = (now - int(payload)) / 1000
                        b = int(math.log(max(lat, 1.0)) / BUCKET)
                        hist[b] = hist.get(b, 0) + 1
                        counts["deliveries"] += 1
                    except ValueError:
                        counts["bad"] += 1
                i += h + ln
            self.buf = buf[i:] if i < n else b""

        def connection_lost(self, exc):
            if self.upgraded:
                counts["lost"] += 1

    async def open_one(k):
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        src = srcs[k % len(srcs)]
        key = base64.b64encode(os.urandom(16)).decode()
        try:
            transport, _ = await loop.create_connection(lambda: Sub(waiter), "127.0.0.1", args.port,
                                                        local_addr=(src, 0))
            transport.write((f"GET /ws{queries[k % len(queries)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            if await asyncio.wait_for(waiter, 30):
                counts["opened"] += 1
                return transport
            transport.close()
        except (OSError, asyncio.TimeoutError):
            pass
        counts["failed"] += 1
        return None

    async def main():
        loop = asyncio.get_running_loop()
        transports = []
        sem = asyncio.Semaphore(200)

        async def guarded(k):
            async with sem:
                return await open_one(k)

        transports = [t for t in await asyncio.gather(*(guarded(k) for k in range(args.count))) if t]
        print(json.dumps({"event": "opened", **counts}), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "stats":
                print(json.dumps({"event": "stats", **counts, "hist": hist}), flush=True)
                hist.clear()
                counts["deliveries"] = 0
            elif line in ("close", ""):
                for t in transports:
                    t.abort()
                print(json.dumps({"event": "closed"}), flush=True)
                return

    uvloop.run(main())


# ====================================================================== orchestrator
class Client:
    def __init__(self, port, count, queries, srcs):
        from harness.run import GUARD, child_env

        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", "--port", str(port),
                                      "--count", str(count), "--queries", "|".join(queries), "--src", srcs],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
        GUARD.track(self.proc.pid)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a client process ended")
        return json.loads(line)

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self):
        try:
            self.ask("close")
        except (OSError, RuntimeError, ValueError):
            pass
        from harness.run import stop
        stop(self.proc)


def start_push(url, *extra):
    from harness.run import GUARD, child_env

    proc = subprocess.Popen([sys.executable, "-m", "fastws", "push", "--port", "0", "--log-level", "warning",
                             "--ping-interval", "none", "--redis", url, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env())
    GUARD.track(proc.pid)
    line = proc.stdout.readline()
    if "listening on http://127.0.0.1:" not in line:
        raise RuntimeError(f"fastws push did not start: {line!r}")
    proc.port = int(line.split("http://127.0.0.1:")[1].split()[0])
    return proc


def percentile(hist: dict, q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    need = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= need:
            return math.exp((b + 0.5) * BUCKET)
    return float("nan")


def merge(stats):
    hist: dict = {}
    for s in stats:
        for b, n in s["hist"].items():
            hist[int(b)] = hist.get(int(b), 0) + n
    return hist, sum(s["deliveries"] for s in stats)


class Publisher:
    """POST /publish/<topic> with keep-alive; the body is CLOCK_MONOTONIC ns."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, topic) -> bool:
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("POST", f"/publish/{topic}", body=str(time.monotonic_ns()))
                resp = self.conn.getresponse()
                resp.read()
                return resp.status == 200
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return False


def delivery_part(args, url, label):
    from harness.run import stop

    procs = [start_push(url) for _ in range(args.procs)]
    clients = []
    try:
        queries = [f"?topics=t{i}" for i in range(args.topics)]
        for k, p in enumerate(procs):
            srcs = ",".join(f"127.0.{1 + k}.{2 + j}" for j in range(max(1, args.subs // 15000 + 1)))
            clients.append(Client(p.port, args.subs, queries, srcs))
        opened = [c.read() for c in clients]
        assert all(o["opened"] == args.subs for o in opened), opened
        time.sleep(1.0)  # the brokers' SUBSCRIBEs settle
        for c in clients:
            c.ask("stats")
        # latency at a fixed rate
        pubs = [Publisher(p.port) for p in procs]
        n = int(args.rate * args.seconds)
        t0 = time.monotonic()
        failed = 0
        for i in range(n):
            due = t0 + i / args.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            failed += not pubs[i % len(pubs)].post(f"t{i % args.topics}")
        time.sleep(1.0)
        hist, deliveries = merge([c.ask("stats") for c in clients])
        expected = (n - failed) * args.subs * len(procs) // args.topics
        lat = {"p50": percentile(hist, 0.50), "p99": percentile(hist, 0.99), "deliveries": deliveries,
               "expected": expected, "failed": failed}
        # throughput: 8 publishers back to back
        stop_at = time.monotonic() + args.seconds
        posted = [0] * 8

        def flood(j):
            pub = Publisher(procs[j % len(procs)].port)
            i = j
            while time.monotonic() < stop_at:
                posted[j] += pub.post(f"t{i % args.topics}")
                i += 8

        threads = [threading.Thread(target=flood, args=(j,)) for j in range(8)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        time.sleep(1.0)
        hist2, deliveries2 = merge([c.ask("stats") for c in clients])
        lat.update(publishes_s=sum(posted) / elapsed, deliveries_s=deliveries2 / elapsed,
                   flood_p50=percentile(hist2, 0.5), flood_p99=percentile(hist2, 0.99))
        print(f"  {label}: {lat}", flush=True)
        return lat
    finally:
        for c in clients:
            c.stop()
        stop(*procs)


def redis_info(node) -> dict:
    """INFO all, plus ``evalsha``: the EVALSHA calls (the scripts clients sent; the commands
    scripts run inside count in total_commands_processed, not here)."""
    text = node.cli("INFO", "all")
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    stat = info.get("cmdstat_evalsha", "calls=0,")
    info["evalsha"] = int(stat.split("calls=", 1)[1].split(",", 1)[0])
    return info


def presence_part(args, redis, label, extra):
    from harness.run import proc_cpu_ns, stop

    proc = start_push(redis.url, *extra)
    client = None
    try:
        queries = [f"gen:{args.presence_topics}:{args.per_conn}"]
        info = redis_info(redis)
        before, scripts_before = int(info["total_commands_processed"]), info["evalsha"]
        redis_cpu_start = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        t0, cpu_start = time.monotonic(), proc_cpu_ns(proc.pid)
        srcs = ",".join(f"127.0.9.{2 + j}" for j in range(args.presence_conns // 15000 + 1))
        client = Client(proc.port, args.presence_conns, queries, srcs)
        opened = client.read()
        assert opened["opened"] == args.presence_conns, opened
        open_s = time.monotonic() - t0
        time.sleep(3.0)  # joins written
        info = redis_info(redis)
        join_cmds = int(info["total_commands_processed"]) - before - 2  # (two INFO)
        join_scripts = info["evalsha"] - scripts_before
        join_cpu_s = (proc_cpu_ns(proc.pid) - cpu_start) / 1e9
        join_redis_cpu_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - redis_cpu_start
        client_cpu_s = proc_cpu_ns(client.proc.pid) / 1e9
        info0 = redis_info(redis)
        cpu0, rcpu0, w0 = proc_cpu_ns(proc.pid), float(info0["used_cpu_user"]) + float(info0["used_cpu_sys"]), \
            time.monotonic()
        time.sleep(args.window)
        info1 = redis_info(redis)
        cpu1, w1 = proc_cpu_ns(proc.pid), time.monotonic()
        rcpu1 = float(info1["used_cpu_user"]) + float(info1["used_cpu_sys"])
        window = w1 - w0
        cmds = int(info1["total_commands_processed"]) - int(info0["total_commands_processed"]) - 1
        row = {"subscriptions": args.presence_conns * args.per_conn, "open_s": open_s, "join_cmds": join_cmds,
               "join_scripts": join_scripts, "join_cpu_s": join_cpu_s, "join_redis_cpu_s": join_redis_cpu_s,
               "client_cpu_s": client_cpu_s, "cmds_s": cmds / window,
               "scripts_s": (info1["evalsha"] - info0["evalsha"]) / window, "server_cpu_pct": (cpu1 - cpu0) / 1e9 / window * 100,
               "redis_cpu_pct": (rcpu1 - rcpu0) / window * 100}
        if "--presence" in extra:
            status, body = get_presence(proc.port, "p7")
            row["presence_p7"] = body.get("total") if status == 200 else status
            t = time.monotonic()
            for _ in range(20):
                get_presence(proc.port, "p7")
            row["get_presence_ms"] = (time.monotonic() - t) / 20 * 1000
        print(f"  {label}: {row}", flush=True)
        return row
    finally:
        if client is not None:
            client.stop()
        stop(proc)


def get_presence(port, topic):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/presence/{topic}?limit=10")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--queries", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--subs", type=int, default=10000, help="subscribers per fastws process (< 19,000)")
    ap.add_argument("--topics", type=int, default=10)
    ap.add_argument("--rate", type=float, default=20.0, help="publishes per second in the latency phase")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--presence-conns", type=int, default=10000)
    ap.add_argument("--presence-topics", type=int, default=1000)
    ap.add_argument("--per-conn", type=int, default=10, help="topics per connection (at most 64)")
    ap.add_argument("--presence-ttl", type=float, default=9.0)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--parts", default="delivery,presence")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return 0
    if not 1 <= args.subs <= 19000 or not 1 <= args.presence_conns <= 19000 or not 1 <= args.per_conn <= 64:
        ap.error("--subs and --presence-conns at most 19,000 (one client process each), --per-conn 1..64")
    from harness.run import GUARD, append_results, head, stamp

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests"))
    from redis_util import RedisCluster, RedisServer  # the tests' throwaway Redis servers

    GUARD.watch()
    date = stamp()
    lines = head(__file__, date)
    print("\n".join(lines), flush=True)
    parts = args.parts.split(",")
    text = []
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "single"))
        single = RedisServer(os.path.join(tmp, "single")).start()
        cluster = None
        try:
            if "delivery" in parts:
                cluster = RedisCluster(os.path.join(tmp, "cluster")).start()
                print(f"delivery: {args.procs} fastws processes x {args.subs} subscribers over {args.topics} "
                      f"topics", flush=True)
                rows = {"single Redis": delivery_part(args, single.url, "single Redis"),
                        "Redis Cluster (3 masters)": delivery_part(args, cluster.url, "Redis Cluster")}
                base = rows["single Redis"]
                text += [f"### Publish to delivery: {args.procs} fastws processes x {args.subs:,} subscribers "
                         f"({args.topics} topics)", "",
                         f"Latency phase: {args.rate:g} publishes/s for {args.seconds:g} s "
                         f"({args.subs * args.procs // args.topics:,} deliveries each); throughput phase: 8 "
                         f"publishers back to back for {args.seconds:g} s.", "",
                         "| broker | p50 ms | p99 ms | vs single p99 | deliveries (expected) | publishes/s "
                         "(flood) | deliveries/s (flood) | vs single | flood p99 ms |",
                         "|---|---|---|---|---|---|---|---|---|"]
                for name, r in rows.items():
                    text.append(f"| {name} | {r['p50'] / 1000:.2f} | {r['p99'] / 1000:.2f} | "
                                f"{r['p99'] / base['p99']:.2f}x | {r['deliveries']:,} ({r['expected']:,}) | "
                                f"{r['publishes_s']:,.0f} | {r['deliveries_s']:,.0f} | "
                                f"{r['deliveries_s'] / base['deliveries_s']:.2f}x | {r['flood_p99'] / 1000:.1f} |")
                text.append("")
                cluster.stop()
                cluster = None
            if "presence" in parts:
                subs = args.presence_conns * args.per_conn
                print(f"presence: {subs:,} subscriptions ({args.presence_conns:,} connections x {args.per_conn}) "
                      f"over {args.presence_topics:,} topics", flush=True)
                off = presence_part(args, single, "presence off", [])
                single.cli("FLUSHALL")
                on = presence_part(args, single, "presence on",
                                   ["--presence", "--presence-ttl", f"{args.presence_ttl:g}"])
                text += [f"### Presence: {subs:,} local subscriptions ({args.presence_conns:,} connections x "
                         f"{args.per_conn} topics) over {args.presence_topics:,} topics, one fastws process, "
                         f"single Redis", "",
                         f"Steady state over {args.window:g} s; presence TTL {args.presence_ttl:g} s "
                         f"(refresh every {args.presence_ttl / 3:g} s).", "",
                         "Commands sent: the scripts (EVALSHA) fastws sent; commands run: Redis's "
                         "total_commands_processed, which counts the commands inside scripts too.", "",
                         "| | opening s | subscribing: fastws CPU s | subscribing: scripts sent | subscribing: "
                         "commands run | steady scripts sent/s | steady commands run/s | fastws CPU % | Redis CPU % "
                         "| GET /presence ms |",
                         "|---|---|---|---|---|---|---|---|---|---|"]
                for name, r in (("presence off (baseline)", off), ("presence on", on)):
                    text.append(f"| {name} | {r['open_s']:.1f} | {r['join_cpu_s']:.2f} | {r['join_scripts']:,} | "
                                f"{r['join_cmds']:,} | {r['scripts_s']:.1f} | "
                                f"{r['cmds_s']:.1f} | {r['server_cpu_pct']:.2f} | {r['redis_cpu_pct']:.2f} | "
                                f"{r.get('get_presence_ms', float('nan')):.2f} |")
                text.append("")
                text.append(f"Presence on over off: steady Redis commands/s +{on['cmds_s'] - off['cmds_s']:.1f}, "
                            f"fastws CPU +{on['server_cpu_pct'] - off['server_cpu_pct']:.2f} points; "
                            f"GET /presence/p7 listed {on.get('presence_p7')} members.")
        finally:
            if cluster is not None:
                cluster.stop()
            single.stop()
    out = "\n".join(text)
    print(out)
    if GUARD.tripped:
        print(GUARD.tripped)
        return 1
    path = append_results(args.out, f"broker_cluster.py {date[:10]}", lines, out)
    if path:
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
