"""What an idle held connection costs the server, object by object, against the bare floor.

    python bench/micro/conn_memory.py [--n 2000] [--servers bare,listener] [--baseline DIR] [--pure]

For each server, in a child process of its own: ``listener`` is ``fastws echo
--api listener`` with the CLI's defaults (heartbeats on; started through
``fastws.cli.main`` so that the server is built exactly as the command builds
it), ``bare`` the floor of bench/load/conn_peers.py (a plain uvloop
``asyncio.Protocol`` with a canned 101, pinging from one timer). A client
process opens N connections (the upgrade request of bench/load/conn_lean.py,
pongs answered), then the server process measures itself:

- RSS per held connection (``/proc/self/statm``, after - before the N, in a
  run without tracemalloc);
- tracemalloc per held connection, by the Python line that allocated (in a
  second run; what C code allocates inside the event loop's own callbacks is
  counted on the line that runs the loop, labelled "event loop (C)");
- the objects one connection keeps and no other connection shares
  (``gc.get_referents`` from the protocol object, stopped at the other
  connections and their transports), by field, with ``sys.getsizeof`` (GC
  header included; pymalloc rounds each block up to 16 bytes, shown beside),
  plus the registry's table per entry (the server's connection set, the bare
  floor's ping buckets).

Every row is compared with the bare floor of the same run (ratio). ``--baseline
DIR`` also measures another checkout (built in place); ``--pure`` adds the
pure-Python twins. Small N on purpose (the machine is shared): the 100,000
figure is bench/load/connections.py's. See docs/design/memory.md.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _block(n: int) -> int:
    """What pymalloc hands out for a request of n bytes (16-byte classes up to 512)."""
    return (n + 15) // 16 * 16 if n <= 512 else n


# ------------------------------------------------------------------ the walk
def _unique(root, stops: set, extra=()) -> dict:
    """id -> object reachable from ``root`` (and ``extra``), not descending
    into the objects in ``stops`` (ids) nor into modules, types and functions."""
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    seen = {}
    todo = [root, *extra]
    while todo:
        o = todo.pop()
        i = id(o)
        if i in seen or i in stops:
            continue
        if isinstance(o, skip) and o is not root and not (isinstance(o, types.BuiltinMethodType)
                                                          and getattr(o, "__self__", None) is not None
                                                          and not isinstance(o.__self__, types.ModuleType)):
            continue
        seen[i] = o
        todo.extend(gc.get_referents(o))
    return seen


def _fields(obj) -> list[str]:
    names = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    if hasattr(obj, "__dict__"):
        names.append("__dict__")
    return names


def breakdown(protos: list, transport_of, registry_bytes: int) -> dict:
    """The objects the middle connection of ``protos`` keeps for itself, by field."""
    a, b = protos[len(protos) // 2], protos[len(protos) // 2 + 1]
    ta, tb = transport_of(a), transport_of(b)
    others = {id(p) for p in protos} | {id(transport_of(p)) for p in protos}
    # What b reaches (stopped at other connections) is shared, not a's own.
    shared = _unique(b, others - {id(b), id(tb)}, extra=(tb,))
    stops = (others - {id(a), id(ta)}) | set(shared)
    rows = []
    own = {}

    def take(label, objs):
        size = blocks = 0
        kinds = {}
        for o in objs:
            if id(o) in own or id(o) in stops:
                continue
            own[id(o)] = o
            s = sys.getsizeof(o)
            size += s
            blocks += _block(s)
            kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
        if size:
            rows.append({"what": label, "bytes": size, "blocks": blocks,
                         "types": ", ".join(f"{k} x{v}" if v > 1 else k for k, v in kinds.items())})

    take(f"{type(a).__name__} object (basicsize {type(a).__basicsize__})", [a])
    for name in _fields(a):
        try:
            value = getattr(a, name) if name != "__dict__" else a.__dict__
        except AttributeError:
            continue
        if value is ta:
            continue
        take(f".{name}", _unique(value, stops | set(own)).values())
    # cdef fields and anything else gc sees but no slot names
    take("other referents (C fields)", _unique(a, stops | set(own)).values())
    take(f"transport {type(ta).__name__} (Python object; its libuv handle is C, see tracemalloc)", [ta])
    take("reached from the transport", _unique(ta, stops | set(own)).values())
    rows.append({"what": "registry table, per entry", "bytes": registry_bytes, "blocks": registry_bytes, "types": ""})
    return {"rows": rows, "referrers": sorted({type(r).__name__ for r in gc.get_referrers(a)})}


# ------------------------------------------------------------------ server child
class Probe:
    """Reads commands on stdin inside the server's loop: base, measure."""

    def __init__(self, kind: str, trace: bool, find):
        self.kind, self.trace, self.find = kind, trace, find
        self.rss0 = 0
        self.snap0 = None

    def attach(self, loop) -> None:
        os.set_blocking(0, False)
        loop.add_reader(0, self._command)

    def _command(self) -> None:
        line = sys.stdin.readline().strip()
        if line == "base":
            gc.collect()
            self.rss0 = _rss()
            if self.trace:
                self.snap0 = __import__("tracemalloc").take_snapshot()
            print("BASE", flush=True)
        elif line.startswith("measure"):
            n = int(line.split()[1])
            gc.collect()
            out = {"kind": self.kind, "rss": (_rss() - self.rss0) / n}
            if self.trace:
                import tracemalloc

                snap = tracemalloc.take_snapshot()
                tracemalloc.stop()
                sites = {}
                for st in snap.compare_to(self.snap0, "lineno"):
                    fr = st.traceback[0]
                    where = f"{Path(fr.filename).name}:{fr.lineno}"
                    if "runners.py" in fr.filename or "base_events.py" in fr.filename or "runner.py" in fr.filename:
                        where = "event loop (C)"
                    sites[where] = sites.get(where, 0) + st.size_diff
                out["traced"] = sum(sites.values()) / n
                out["sites"] = sorted(((w, s / n) for w, s in sites.items() if abs(s / n) >= 2),
                                      key=lambda x: -x[1])
            else:
                protos, transport_of, registry = self.find()
                out["held"] = len(protos)
                out["walk"] = breakdown(protos, transport_of, registry)
            print("RESULT " + json.dumps(out), flush=True)


def _child(kind: str, port: int, trace: bool) -> None:
    if trace:
        import tracemalloc

        tracemalloc.start()
    if kind == "bare":
        sys.path.insert(0, str(ROOT / "bench" / "load"))
        sys.path.insert(0, str(ROOT / "bench"))
        import uvloop
        from conn_peers import run_bare

        def find():
            protos = [o for o in gc.get_objects() if type(o).__name__ == "Bare" and o.bucket is not None]
            buckets = {id(p.bucket): p.bucket for p in protos}
            return protos, (lambda p: p.transport), sum(map(sys.getsizeof, buckets.values())) // max(1, len(protos))

        probe = Probe(kind, trace, find)

        async def main():
            probe.attach(asyncio.get_running_loop())
            await run_bare(HOST, port, 60.0, 60.0)

        uvloop.run(main())
        return
    import fastws
    import fastws.cli as cli
    import fastws.runner as runner

    server_box = []

    def find():
        server = server_box[0]
        protos = list(server.connections)
        return protos, (lambda p: p.transport), sys.getsizeof(server.connections) // max(1, len(protos))

    probe = Probe(kind, trace, find)
    real_run = runner.run

    def on_server(server):
        server_box.append(server)
        loop = asyncio.get_running_loop()

        async def ready():
            while not server.sockets:
                await asyncio.sleep(0.01)
            probe.attach(loop)
            print(f"READY {fastws.IMPLEMENTATION} {fastws.__file__}", flush=True)

        loop.create_task(ready())

    def run(**kw):
        kw["on_server"] = on_server
        kw["on_start"] = None
        return real_run(**kw)

    runner.run = run  # the CLI imports it when it runs
    cli.main(["echo", "--api", "listener", "--host", HOST, "--port", str(port), "--ping-interval", "60",
              "--ping-timeout", "60", "--log-level", "warning"])


# ------------------------------------------------------------------ client
def _client(port: int, n: int) -> None:
    import base64

    import uvloop

    head = (b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " % (HOST.encode(), port))
    pong = b"\x8a\x80\x00\x00\x00\x00"
    opened = [0]

    class C(asyncio.Protocol):
        __slots__ = ("t", "done", "buf")

        def __init__(self, done):
            self.done, self.buf = done, b""

        def connection_made(self, t):
            self.t = t
            t.write(head + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")

        def data_received(self, data):
            if self.done is not None:
                self.buf += data
                if b"\r\n\r\n" in self.buf:
                    if not self.buf.startswith(b"HTTP/1.1 101"):
                        raise SystemExit(f"refused: {self.buf[:80]!r}")
                    self.done.set_result(None)
                    self.done = self.buf = None
            elif data[:1] == b"\x89":
                self.t.write(pong)

    async def one(sem):
        async with sem:
            done = asyncio.get_running_loop().create_future()
            await asyncio.get_running_loop().create_connection(lambda: C(done), HOST, port)
            await done
            opened[0] += 1

    async def main():
        sem = asyncio.Semaphore(50)
        await asyncio.gather(*(one(sem) for _ in range(n)))
        print(f"OPEN {opened[0]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it

    uvloop.run(main())


# ------------------------------------------------------------------ parent
def _expect(proc, prefix: str, timeout: float = 120.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    raise RuntimeError(f"no {prefix!r} from {proc.args}")


def measure(tree: Path, kind: str, n: int, trace: bool, pure: bool) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))  # the harness (the parent only: not in the children's RSS)
    from harness.meta import free_port
    from harness.run import stop
    env = {**os.environ, "PYTHONPATH": str(tree), "FASTWS_PURE_PYTHON": "1" if pure else "0"}
    port = free_port(HOST)
    me = str(Path(__file__).resolve())
    srv = subprocess.Popen([sys.executable, me, "--child", kind, "--port", str(port)] + (["--trace"] if trace else []),
                           env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cli = None
    try:
        info = _expect(srv, "READY")
        srv.stdin.write("base\n")
        srv.stdin.flush()
        _expect(srv, "BASE")
        cli = subprocess.Popen([sys.executable, me, "--client", "--port", str(port), "--n", str(n)],
                               env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        got = int(_expect(cli, "OPEN"))
        time.sleep(0.5)  # let the server settle the last reads (not a condition: a measurement delay)
        srv.stdin.write(f"measure {got}\n")
        srv.stdin.flush()
        out = json.loads(_expect(srv, "RESULT"))
        out["info"] = info
        return out
    finally:
        stop(*([cli] if cli is not None else []), srv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="connections held (default 2,000)")
    ap.add_argument("--servers", default="bare,listener")
    ap.add_argument("--baseline", type=Path, metavar="DIR", help="another checkout, built in place, in the same run")
    ap.add_argument("--pure", action="store_true", help="also the pure-Python twins (FASTWS_PURE_PYTHON=1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.port, args.trace)
    if args.client:
        return _client(args.port, args.n)
    print(f"- command: `python bench/micro/conn_memory.py --n {args.n} --servers {args.servers}"
          + (f" --baseline {args.baseline}" if args.baseline else "") + (" --pure" if args.pure else "") + "`")
    print(f"- {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}, "
          f"Python {sys.version.split()[0]}")
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    runs = []
    for kind in args.servers.split(","):
        for pure in ([False, True] if args.pure and kind != "bare" else [False]):
            for label, tree in (trees if kind != "bare" else trees[:1]):
                plain = measure(tree, kind, args.n, False, pure)
                traced = measure(tree, kind, args.n, True, pure)
                name = kind if kind == "bare" else f"{kind} ({label}, {plain['info'].split()[0]})"
                runs.append((name, plain, traced))
    floor = next((r for r in runs if r[0] == "bare"), None)

    def ratio(x, y):
        return f"{x / y:.2f}x" if y else "-"

    print()
    print("| server | held | RSS / conn | vs floor | tracemalloc / conn | vs floor | own objects / conn (getsizeof) | in 16 B blocks |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, plain, traced in runs:
        own = sum(r["bytes"] for r in plain["walk"]["rows"])
        blocks = sum(r["blocks"] for r in plain["walk"]["rows"])
        f_rss = floor[1]["rss"] if floor else 0
        f_tr = floor[2]["traced"] if floor else 0
        print(f"| {name} | {plain['held']:,} | {plain['rss']:,.0f} B | {ratio(plain['rss'], f_rss)} "
              f"| {traced['traced']:,.0f} B | {ratio(traced['traced'], f_tr)} | {own:,} B | {blocks:,} B |")
    for name, plain, traced in runs:
        print(f"\n#### {name}: the objects one connection keeps (referrers: {', '.join(plain['walk']['referrers'])})\n")
        print("| what | bytes | in 16 B blocks | objects |")
        print("|---|---:|---:|---|")
        for r in plain["walk"]["rows"]:
            print(f"| {r['what']} | {r['bytes']:,} | {r['blocks']:,} | {r['types']} |")
        print(f"\n{name}: tracemalloc per connection by allocating line (>= 2 B)\n")
        print("| line | bytes / conn |")
        print("|---|---:|")
        for where, size in traced["sites"][:16]:
            print(f"| {where} | {size:,.1f} |")


if __name__ == "__main__":
    main()
