"""FastAPI echo endpoint under uvicorn: fastws's --ws protocol against uvicorn's own.

    python bench/e2e/uvicorn_echo.py [--impls websockets,websockets-sansio,wsproto,fastws]
                                     [--rows rr-32B,rr-1KiB,c100-32B] [--duration S] [--out bench/results/latest.md]

The same FastAPI app (one ``@app.websocket("/")`` that echoes text and bytes
through ``await ws.receive()`` / ``send_bytes``) runs under uvicorn
(httptools, uvloop, pinned to CPU 0) once per ``--ws`` implementation, one
after another; the client is bench/harness/client.py on CPU 1 (the same client as
bench/e2e/echo.py). ``fastws`` is ``--ws fastws.uvicorn:WebSocketProtocol``.
Ratios are against the first ``websockets`` (uvicorn's default) of the run.
Per-message deflate is off for every implementation (``--ws-per-message-deflate
false``): fastws does not negotiate it, and it would change what is measured.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import textwrap
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from echo import CLIENT_CPU, SERVER_CPU, run_row, wait_quiet  # noqa: E402
from harness.meta import free_port  # noqa: E402
from harness.run import Child, append_results, child_env, head, stamp  # noqa: E402

APP = textwrap.dedent('''
    from fastapi import FastAPI, WebSocket

    app = FastAPI()

    @app.websocket("/")
    async def echo(ws: WebSocket):
        await ws.accept()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                await ws.send_bytes(data)
            else:
                await ws.send_text(message["text"])
''')

IMPLS = {
    "websockets": "websockets",
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
    "fastws": "fastws.uvicorn:WebSocketProtocol",
}
ROWS = {"rr-32B": (32, 1), "rr-1KiB": (1024, 1), "c100-32B": (32, 100)}


def uvicorn(impl: str, appdir: str, host: str, pin: bool) -> Child:
    """uvicorn serving the app in appdir with ``--ws`` impl; ready when its port accepts."""
    port = free_port(host)
    return Child(
        [sys.executable, "-m", "uvicorn", "echoapp:app", "--host", host, "--port", str(port),
         "--ws", IMPLS[impl.split("#")[0]], "--http", "httptools", "--loop", "uvloop",
         "--log-level", "warning", "--no-access-log", "--ws-per-message-deflate", "false"],
        host=host, port=port, ready_text=None, cpu=SERVER_CPU if pin else None, env=child_env(appdir),
        cwd=appdir, name=impl)


async def amain(args) -> int:
    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and os.cpu_count() >= 2
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})
    appdir = tempfile.mkdtemp(prefix="fastws-uvbench-")
    Path(appdir, "echoapp.py").write_text(APP)
    date = stamp()
    header = head(
        __file__, date,
        f"- more versions: uvicorn {_version('uvicorn')}, fastapi {_version('fastapi')}, "
        f"starlette {_version('starlette')}, wsproto {_version('wsproto')}",
        f"- setup: uvicorn (httptools, uvloop) on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; "
        f"FastAPI echo endpoint; {args.duration} s timed after {args.warmup} s warm-up, best of {args.repeat}",
    )
    print("\n".join(header), flush=True)
    results = {}
    for impl in impls:
        server = uvicorn(impl, appdir, args.host, pin)
        why = await server.ready(timeout=30.0, tail=5)
        if why is not None:
            print(f"  {impl}: {why}")
            await server.stop(signal.SIGINT)
            continue
        try:
            for row in rows:
                size, conns = ROWS[row]
                best = None
                for _ in range(args.repeat):
                    if args.quiet_wait:
                        await wait_quiet(args.quiet_wait)
                    r = await run_row(args.host, server.port, server.pid, False, size, conns,
                                      args.duration, args.warmup)
                    if best is None or r["rate"] > best["rate"]:
                        best = r
                results[(impl, row)] = best
                print(f"  {row:9s}  {impl:18s} {best['rate']:>10,.0f} msg/s  {best['srv_us']:7.1f} µs/msg "
                      f"server CPU {best['srv_pct']:4.0f}%  client CPU {best['cli_pct']:4.0f}%  "
                      f"other {best['other']:4.0f}%", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported, next implementation
            print(f"  {impl}: failed: {type(exc).__name__}: {exc}")
        finally:
            await server.stop(signal.SIGINT)
    ref = next((i for i in impls if i.split("#")[0] == "websockets"), impls[0])
    lines = ["| row | --ws | msg/s | vs websockets | server CPU µs/msg | vs websockets | other CPU |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        base = results.get((ref, row))
        for impl in impls:
            r = results.get((impl, row))
            if r is None:
                continue
            ratio = f"{r['rate'] / base['rate']:.2f}x" if base else "-"
            cpu = f"{r['srv_us'] / base['srv_us']:.2f}x" if base else "-"
            lines.append(f"| {row} | {impl} | {r['rate']:,.0f} | {ratio} | {r['srv_us']:.1f} | {cpu} | "
                         f"{r['other']:.0f}% |")
    table = "\n".join(lines)
    print(table)
    append_results(args.out, f"uvicorn_echo.py {date}: uvicorn --ws, FastAPI echo", header, table)
    return 0


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impls", default="websockets,websockets-sansio,wsproto,fastws,websockets#2",
                   help="comma list of %s (a #N suffix repeats one)" % ", ".join(IMPLS))
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
