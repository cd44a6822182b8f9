"""User-space instructions per echo round trip, counted by valgrind (callgrind).

    python bench/e2e/instructions.py [--servers picows,fastws-listener,...] [--sizes 32,1024] [--n 3000]

    # the rate limiter's cost: limits off, messages/s on, messages/s and bytes/s on
    python bench/e2e/instructions.py --servers picows,fastws-listener,fastws-listener-rate,\
        fastws-listener-limits,fastws-handler,fastws-handler-rate,fastws-handler-limits

Wall-clock and CPU-time benches on this shared 2-core machine move by up to
1.6x between two runs of the same server. Instruction counts do not: each
server from bench/harness/servers.py runs under callgrind, one `websockets` sync
client does warm-up round trips, then the counters are dumped
(`callgrind_control -d`), N round trips of SIZE-byte binary messages run, and
the counters are dumped again; the second dump divided by N is the server's
user-space instructions per message (receive, parse, handler, build, write;
the kernel's side of read/write/epoll is not counted, and is the same system
calls for every server: `strace -c` shows 3 per round trip for each).

Prints a table with the ratio to picows (and, for the -rate and -limits
variants, the change against the same API level with limits off); `--out FILE` appends it (with date,
command and machine) to a markdown file such as bench/results/latest.md (which sends
it to bench/results/history.md, see bench/README.md).
"""
from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness import servers  # noqa: E402
from harness.meta import REPO, callgrind_total, free_port  # noqa: E402
from harness.run import append_results, child_env, head, spawn, stamp, stop  # noqa: E402

DEFAULT = "picows,fastws-listener,fastws-handler,websockets,aiohttp"


def measure(name: str, size: int, n: int, warmup: int = 500) -> float | None:
    """Instructions per round trip of server NAME, or None if it cannot run here."""
    import websockets.sync.client as wsclient

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="fastws-cg-")
    proc = spawn(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable,
         servers.__file__, name, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, env=child_env())
    try:
        line = proc.stdout.readline()
        if not line.startswith(b"READY"):
            proc.wait(60)
            return None
        ws = wsclient.connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None,
                              open_timeout=120, close_timeout=30)
        msg = b"x" * size
        for _ in range(warmup):
            ws.send(msg)
            ws.recv()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        for _ in range(n):
            ws.send(msg)
            ws.recv()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        ws.close()
        dumps = sorted(glob.glob(f"{tmp}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        return callgrind_total(dumps[1]) / n
    finally:
        stop(proc, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=DEFAULT, help=f"comma list (default {DEFAULT})")
    ap.add_argument("--sizes", default="32,1024", help="message sizes in bytes (default 32,1024)")
    ap.add_argument("--n", type=int, default=3000, help="measured round trips per server and size")
    ap.add_argument("--out", help="append the table to this markdown file (bench/results/latest.md: "
                                  "to history.md, see bench/README.md)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt-get install -y valgrind)")
    servers = args.servers.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    rows = []
    for size in sizes:
        for name in servers:
            t0 = time.time()
            ir = measure(name, size, args.n)
            rows.append((size, name, ir))
            print(f"{size:>6} B {name:16} {'-' if ir is None else f'{ir:,.0f}':>10} instructions/msg "
                  f"({time.time() - t0:.0f} s)", flush=True)
    base = {size: ir for size, name, ir in rows if name == "picows" and ir}
    # fastws-listener-rate, -limits (bench/harness/servers.py): also against
    # the same API level with limits off, measured in this run.
    same = {(size, name): ir for size, name, ir in rows}
    table = ["| size | server | user-space instructions/msg | vs picows | vs limits off |",
             "|---|---|---:|---:|---:|"]
    for size, name, ir in rows:
        ratio = ir / base[size] if ir and size in base else None
        off = same.get((size, name.rsplit("-", 1)[0])) if name.endswith(("-rate", "-limits")) else None
        delta = f"{(ir / off - 1) * 100:+.1f}%" if ir and off else ""
        table.append(f"| {size} B | {name} | {'n/a' if ir is None else f'{ir:,.0f}'} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {delta} |")
    print("\n".join(table))
    if args.out:
        date = stamp()
        lines = head(__file__, date,
                     f"- method: {args.n} round trips of one `websockets` sync client, after 500 warm-up; "
                     "server user-space instructions only (kernel side: the same 3 system calls per round "
                     "trip for every server)")
        append_results(args.out, f"instructions.py {date}: instructions per round trip (callgrind)",
                       lines, "\n".join(table))


if __name__ == "__main__":
    main()
