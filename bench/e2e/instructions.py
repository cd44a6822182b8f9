"""User-space instructions per echo round trip, counted by valgrind (callgrind).

    python bench/e2e/instructions.py [--servers picows,fastws-listener,...] [--sizes 32,1024] [--n 3000]

    # the rate limiter's cost: limits off, messages/s on, messages/s and bytes/s on
    python bench/e2e/instructions.py --servers picows,fastws-listener,fastws-listener-rate,\
        fastws-listener-limits,fastws-handler,fastws-handler-rate,fastws-handler-limits

    # a change against a baseline checkout (built in place), in one batch,
    # alternating, each cell the fewest of 3 runs
    python bench/e2e/instructions.py --baseline ../fastws-main --repeat 3 --servers fastws-listener,...

Wall-clock and CPU-time benches on this shared 2-core machine move by up to
1.6x between two runs of the same server. Instruction counts do not: each
server from bench/harness/servers.py runs under callgrind, one `websockets` sync
client does warm-up round trips, then the counters are dumped
(`callgrind_control -d`), N round trips of SIZE-byte binary messages run, and
the counters are dumped again; the second dump divided by N is the server's
user-space instructions per message (receive, parse, handler, build, write;
the kernel's side of read/write/epoll is not counted, and is the same system
calls for every server: `strace -c` shows 3 per round trip for each). The
servers run with PYTHONHASHSEED=0 (or the one set): then a count repeats to
a few instructions. What still moves it is a client frame arriving in two
reads (``--repeat`` keeps the fewest of R runs) and, for messages over 1,000
bytes or so (above glibc's tcache, so every round trip's buffers go through
``_int_malloc``/``_int_free``), the heap's layout, which any change to what
the process allocates moves (another build, another PYTHONPATH): up to
+-250 instructions per 1 KiB round trip (see docs/performance.md).

Prints a table with the ratio to picows (and, for the -rate and -limits
variants, the change against the same API level with limits off); `--out FILE` appends it (with date,
command and machine) to a markdown file such as bench/results/latest.md (which sends
it to bench/results/history.md, see bench/README.md).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, callgrind_total, free_port  # noqa: E402
from harness.run import append_results, child_env, head, spawn, stamp, stop  # noqa: E402

DEFAULT = "picows,fastws-listener,fastws-handler,websockets,aiohttp"


def measure(name: str, size: int, n: int, warmup: int = 500, tree: Path | None = None) -> float | None:
    """Instructions per round trip of server NAME, or None if it cannot run here
    (``tree``: another checkout of fastws, built, whose code and servers.py run)."""
    import websockets.sync.client as wsclient

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="fastws-cg-")
    root = REPO if tree is None else tree
    # A fixed hash seed (0 unless PYTHONHASHSEED is set): dict and set
    # layouts, their probes and the heap's layout the same in every run.
    env = child_env(PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    if tree is not None:  # the same PYTHONPATH, with the baseline in place of this checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    proc = spawn(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable,
         str(root / "bench" / "harness" / "servers.py"), name, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root, env=env)
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
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="another checkout of fastws (built in place, e.g. `git worktree add DIR main`): "
                         "each server also runs from it, alternating with this one, in the same batch")
    ap.add_argument("--repeat", type=int, default=1, metavar="R",
                    help="run each server R times (alternating with the baseline) and keep the fewest "
                         "instructions: a run costs more, never less, when the client's frame arrives "
                         "in two reads (the machine busy)")
    ap.add_argument("--out", help="append the table to this markdown file (bench/results/latest.md: "
                                  "to history.md, see bench/README.md)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt-get install -y valgrind)")
    servers = args.servers.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    rows = []
    trees = [(None, "")] if args.baseline is None else [(args.baseline.resolve(), " (baseline)"), (None, "")]
    for size in sizes:
        for name in servers:
            runs: dict = {}
            for _ in range(args.repeat):
                for tree, tag in trees:
                    if name == "picows" and tree is not None:
                        continue  # not fastws: the same in both
                    t0 = time.time()
                    ir = measure(name, size, args.n, tree=tree)
                    runs.setdefault(tag, []).append(ir)
                    print(f"{size:>6} B {name + tag:16} {'-' if ir is None else f'{ir:,.0f}':>10} "
                          f"instructions/msg ({time.time() - t0:.0f} s)", flush=True)
            for tag, irs in runs.items():
                rows.append((size, name + tag, None if None in irs else min(irs)))
    base = {size: ir for size, name, ir in rows if name == "picows" and ir}
    # fastws-listener-rate, -limits (bench/harness/servers.py): also against
    # the same API level with limits off, measured in this run.
    same = {(size, name): ir for size, name, ir in rows}
    table = ["| size | server | user-space instructions/msg | vs picows | vs limits off |"
             + (" vs baseline |" if args.baseline else ""),
             "|---|---|---:|---:|---:|" + ("---:|" if args.baseline else "")]
    for size, name, ir in rows:
        ratio = ir / base[size] if ir and size in base else None
        plain, tag = name.split(" ", 1) if " " in name else (name, "")
        off = None
        if plain.endswith(("-rate", "-limits")):
            off = same.get((size, plain.rsplit("-", 1)[0] + (" " + tag if tag else "")))
        delta = f"{ir - off:+,.0f} ({(ir / off - 1) * 100:+.1f}%)" if ir and off else ""
        old = same.get((size, plain + " (baseline)")) if not tag else None
        vs_old = f"{ir - old:+,.0f} ({(ir / old - 1) * 100:+.1f}%)" if ir and old else ""
        table.append(f"| {size} B | {name} | {'n/a' if ir is None else f'{ir:,.0f}'} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {delta} |"
                     + (f" {vs_old} |" if args.baseline else ""))
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
