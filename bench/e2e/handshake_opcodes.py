"""Python bytecodes per accepted connection, per function: the listener server or the floor.

    python bench/e2e/handshake_opcodes.py listener|handshake-floor [--n 300]

callgrind (bench/e2e/handshake_split.py) sees C functions only; the Python
frames of a handshake are one lump there. This runs the server under a
``sys.settrace`` tracer that counts the bytecodes executed (``f_trace_opcodes``)
and the calls of each Python function, opens N connections with
bench/load/conn_client.py (20 in flight) and prints the counts of the opening
window per connection. The tracer slows the server many times over: the counts
are exact, the time is meaningless. See docs/design/handshake.md#where-the-instructions-go.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, free_port  # noqa: E402
from harness.run import BENCH, child_env, spawn, stop  # noqa: E402


def traced(out: str, argv: list[str]) -> None:
    """In the server process: count, SIGUSR1 resets, SIGUSR2 writes OUT."""
    counts: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()

    def where(code):
        return code.co_filename.rsplit("/", 2)[-1], code.co_firstlineno, code.co_name

    def local(frame, event, arg):
        if event == "opcode":
            counts[where(frame.f_code)] += 1
        return local

    def on_call(frame, event, arg):
        if event != "call":
            return None
        frame.f_trace_opcodes = True
        calls[where(frame.f_code)] += 1
        return local

    def dump(*_):
        with open(out, "w") as f:
            json.dump([[list(k), v, calls[k]] for k, v in counts.most_common()], f)

    signal.signal(signal.SIGUSR1, lambda *_: (counts.clear(), calls.clear()))
    signal.signal(signal.SIGUSR2, dump)
    sys.settrace(on_call)
    sys.argv = argv
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(argv[0], run_name="__main__")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("server", choices=["listener", "handshake-floor"])
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    port = free_port()
    out = os.path.join(tempfile.mkdtemp(prefix="fastws-hs-ops-"), "ops.json")
    env = child_env()
    if args.server == "listener":
        cmd = ["-m", "fastws", "echo", "--port", str(port), "--api", "listener", "--log-level", "warning"]
    else:
        cmd = [str(BENCH / "load" / "conn_peers.py"), "handshake-floor", "--port", str(port)]
    server = spawn([sys.executable, __file__, "--traced", out, *cmd], cwd=REPO, env=env,
                   stdout=subprocess.PIPE, text=True)
    client = None
    try:
        if not server.stdout.readline():
            sys.exit(f"{args.server} did not start")
        client = spawn([sys.executable, str(BENCH / "load" / "conn_client.py"), "--port", str(port),
                        "--count", str(args.n), "--src", "127.0.0.2", "--concurrency", "20"],
                       cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def event(want: str) -> dict:
            while True:
                text = client.stdout.readline()
                if not text:
                    raise RuntimeError("the client exited")
                ev = json.loads(text)
                if ev.get("ev") == want:
                    return ev

        event("ready")
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(0.5)  # the handler runs between bytecodes; nothing else happens meanwhile
        client.stdin.write("open\n")
        client.stdin.flush()
        opened = event("opened")["open"]
        os.kill(server.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        if client is not None:
            stop(client, sig=signal.SIGKILL)
        stop(server, timeout=10)
    with open(out) as f:
        data = json.load(f)
    total = sum(v for _, v, _ in data)
    frames = sum(c for _, _, c in data)
    print(f"{args.server}: {opened:,} opened, {total / opened:,.1f} bytecodes and {frames / opened:.1f} "
          "Python calls per connection")
    print("| function | bytecodes per connection | calls per connection |")
    print("|---|---:|---:|")
    for (path, line, name), v, c in data:
        if v / opened >= 1:
            print(f"| {path}:{line} {name} | {v / opened:,.1f} | {c / opened:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--traced":
        traced(sys.argv[2], sys.argv[3:])
    else:
        main()
