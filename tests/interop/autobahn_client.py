"""Autobahn|Testsuite in client mode: ``wstest -m fuzzingserver`` against fastws's clients.

The server direction (``wstest -m fuzzingclient`` against ``fastws echo``) is
tests/interop/test_autobahn.py; this is the other one. wstest listens on a free
loopback port and our client, with its default settings (``max_size`` raised to
16 MiB for the 9.* cases), connects to it as an echo client::

    GET /getCaseCount                  -> N (one text message)
    GET /runCase?case=I&agent=A        -> echo every message until the server closes
    GET /updateReports?agent=A         -> wstest writes index.json and the HTML report

Usage (from the repository root; docs/conformance.md#client-mode)::

    python tests/interop/autobahn_client.py --client async --client sync \\
        --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*' --outdir /tmp/ab-client

It installs wstest with ``../shared/tools/autobahn/run.sh --install-only`` (or
``$FASTWS_AUTOBAHN_HARNESS``; its Python 2.7 venv in ``~/.cache/autobahn-wstest``),
starts wstest by PID, stops it by PID, and summarises each agent with the harness's
summarise.py. The agent is ``fastws-CLIENT-IMPLEMENTATION``. Exit status: 0 when every
selected case of every client is OK, NON-STRICT or INFORMATIONAL; 1 when one failed,
is UNIMPLEMENTED (permessage-deflate not negotiated) or is missing from the report;
2 on a harness error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: this checkout's fastws
    sys.path.insert(0, str(ROOT))

import fastws  # noqa: E402
from fastws import syncclient  # noqa: E402

HARNESS = pathlib.Path(os.environ.get("FASTWS_AUTOBAHN_HARNESS", ROOT.parent / "shared/tools/autobahn/run.sh"))
WSTEST = pathlib.Path(os.environ.get("AUTOBAHN_HOME", pathlib.Path.home() / ".cache/autobahn-wstest")) / "venv2/bin/wstest"
# The CI selection (pytest -m autobahn): groups 1-10 in full, and permessage-deflate
# at its smallest size (1000 messages of 16 bytes) in 12.1 and every way 13.* answers
# the offer (13.2: no context takeover, 13.3: client_max_window_bits=9, 13.4: 15,
# 13.5/13.6: both, 13.7: several offers).
CI_CASES = ("1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,"
            "12.1.1,13.1.1,13.2.1,13.3.1,13.4.1,13.5.1,13.6.1,13.7.1")
MAX_SIZE = 16 * 1024 * 1024 + 1024  # 9.1.6 / 9.2.6 send 16 MiB
CASE_TIMEOUT = 600.0  # wstest judges: it gives a case up to 480 s (12.*, 13.*: 1000 messages of up to 256 KiB)
OPEN_TIMEOUT = 60.0  # connect + handshake: wstest answers late while it writes a report


class HarnessError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the clients
async def _async_echo(url: str, timeout: float) -> None:
    async def echo() -> None:
        try:
            async with fastws.connect(url, max_size=MAX_SIZE, open_timeout=OPEN_TIMEOUT) as ws:
                async for message in ws:
                    await ws.send(message)
        except fastws.ConnectionClosed:
            pass  # what a case that ends in a protocol error looks like here

    await asyncio.wait_for(echo(), timeout)


async def _async_text(url: str) -> str:
    async with fastws.connect(url, open_timeout=OPEN_TIMEOUT) as ws:
        message = await ws.recv()
    return message if isinstance(message, str) else message.decode()


LOOP_ERRORS: list = []  # what reached the event loop's exception handler: a failure too


def run_async(base: str, agent: str) -> int:
    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: LOOP_ERRORS.append(f"{agent}: {context.get('message')}: "
                                                     f"{context.get('exception')!r}"))
        count = int(await _async_text(f"{base}/getCaseCount"))
        for case in range(1, count + 1):
            try:
                await _async_echo(f"{base}/runCase?case={case}&agent={agent}", CASE_TIMEOUT)
            except (fastws.FastWSError, OSError) as exc:  # the report says how wstest saw it
                print(f"autobahn-client: {agent}: case {case}: {type(exc).__name__}: {exc}")
        await _async_echo(f"{base}/updateReports?agent={agent}", 60.0)
        return count

    return asyncio.run(main())


def _sync_echo(url: str, timeout: float) -> None:
    until = time.monotonic() + timeout
    ws = syncclient.connect(url, max_size=MAX_SIZE, timeout=OPEN_TIMEOUT)
    try:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{url}: not over within {timeout} s")
            ws.send(ws.recv(timeout=left))
    except fastws.ConnectionClosed:
        pass
    finally:
        ws.close()


def run_sync(base: str, agent: str) -> int:
    ws = syncclient.connect(f"{base}/getCaseCount", timeout=OPEN_TIMEOUT)
    try:
        message = ws.recv(timeout=30)
    finally:
        ws.close()
    count = int(message if isinstance(message, str) else message.decode())
    for case in range(1, count + 1):
        try:
            _sync_echo(f"{base}/runCase?case={case}&agent={agent}", CASE_TIMEOUT)
        except (fastws.FastWSError, OSError) as exc:  # the report says how wstest saw it
            print(f"autobahn-client: {agent}: case {case}: {type(exc).__name__}: {exc}")
    _sync_echo(f"{base}/updateReports?agent={agent}", 60.0)
    return count


CLIENTS = {"async": run_async, "sync": run_sync}


# ---------------------------------------------------------------- wstest
def ensure_wstest() -> pathlib.Path:
    if not HARNESS.exists():
        raise HarnessError(f"Autobahn harness not found at {HARNESS} (set FASTWS_AUTOBAHN_HARNESS)")
    run = subprocess.run(["bash", str(HARNESS), "--install-only"], capture_output=True, text=True, timeout=900)
    if run.returncode != 0 or not WSTEST.exists():
        raise HarnessError(f"wstest install failed: {run.stderr[-2000:]}")
    return WSTEST


def start_wstest(wstest: pathlib.Path, outdir: pathlib.Path, port: int, cases: list[str],
                 exclude: list[str]) -> subprocess.Popen:
    spec = outdir / "fuzzingserver.json"
    spec.write_text(json.dumps({
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(outdir),
        "options": {"failByDrop": False},
        "cases": cases or ["*"],
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }, indent=2))
    log = open(outdir / "wstest.log", "wb")
    proc = subprocess.Popen([str(wstest), "-m", "fuzzingserver", "-s", str(spec), "--webport", "0"],
                            cwd=outdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 30
    while True:  # wait until it accepts connections (or died)
        if proc.poll() is not None:
            raise HarnessError(f"wstest exited {proc.returncode}: {(outdir / 'wstest.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                stop(proc)
                raise HarnessError("wstest did not listen within 30 s")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarise(outdir: pathlib.Path, agent: str, count: int, expect_all: bool) -> tuple[int, dict]:
    """Run the harness's summarise.py for one agent; (exit status, counts)."""
    script = HARNESS.parent / "summarise.py"
    args = [sys.executable, str(script), str(outdir), agent, "--fail-on-unimplemented"]
    if expect_all:
        args.append("--expect-all")
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    print(run.stdout.replace("fuzzingclient results", "fuzzingserver (client mode) results"), end="")
    if run.returncode == 2:
        raise HarnessError(f"no report for {agent}: {run.stdout[-500:]}")
    shutil.copy(outdir / "summary.tsv", outdir / f"summary-{agent}.tsv")
    rows = (outdir / f"summary-{agent}.tsv").read_text().splitlines()[1:]
    counts = {"ok": 0, "non-strict": 0, "unimplemented": 0, "failed": 0}
    for row in rows:
        counts[row.split("\t")[1]] += 1
    status = run.returncode
    if len(rows) != count:
        print(f"autobahn-client: {agent}: {len(rows)} cases in the report, {count} selected")
        counts["failed"] += max(count - len(rows), 0)
        status = 1
    return status, counts


def drive(base: str, agents: dict) -> dict:
    """Run every client (agent -> run function) through the cases, one after
    the other (wstest is one single-threaded process: together they would not
    be faster, and one agent's report generation would stall the other's
    handshakes); {agent: case count}."""
    counts: dict = {}
    for agent, run in agents.items():
        started = time.monotonic()
        try:
            counts[agent] = run(base, agent)
        except (fastws.FastWSError, OSError) as exc:  # not even the case count or the report
            raise HarnessError(f"{agent}: {type(exc).__name__}: {exc}") from exc
        print(f"autobahn-client: {agent}: {counts[agent]} cases in {time.monotonic() - started:.0f} s")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="append", choices=sorted(CLIENTS),
                        help="the client(s) to test (default: both)")
    parser.add_argument("--cases", default="*",
                        help="wstest case patterns, comma-separated ('ci': the CI selection; default '*')")
    parser.add_argument("--exclude", default="", help="case patterns to leave out")
    parser.add_argument("--outdir", default="autobahn-reports/client-mode")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # terminated: the finally below stops wstest
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if args.cases == "ci":
        args.cases = CI_CASES
    cases, exclude = split(args.cases), split(args.exclude)
    outdir = pathlib.Path(args.outdir).resolve()
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    try:
        wstest = ensure_wstest()
        port = free_port()
        proc = start_wstest(wstest, outdir, port, cases, exclude)
    except HarnessError as exc:
        print(f"autobahn-client: harness error: {exc}")
        return 2
    status = 0
    totals = {}
    try:
        base = f"ws://127.0.0.1:{port}"
        agents = {f"fastws-{client}-{fastws.IMPLEMENTATION}": CLIENTS[client]
                  for client in args.client or sorted(CLIENTS)}
        counts = drive(base, agents)
        if proc.poll() is not None:
            raise HarnessError(f"wstest exited {proc.returncode} during the run")
        for agent, count in counts.items():
            rc, totals[agent] = summarise(outdir, agent, count, args.cases == "*" and not exclude)
            status = max(status, rc)
    except HarnessError as exc:
        print(f"autobahn-client: harness error: {exc}")
        return 2
    finally:
        stop(proc)
    if LOOP_ERRORS:
        print(f"autobahn-client: {len(LOOP_ERRORS)} errors reached the event loop:", *LOOP_ERRORS[:20], sep="\n  ")
        status = max(status, 1)
    for agent, c in totals.items():
        print(f"autobahn-client: {agent}: {c['ok']} ok, {c['non-strict']} non-strict/informational, "
              f"{c['unimplemented']} unimplemented, {c['failed']} failed")
    print(f"autobahn-client: report {outdir / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
