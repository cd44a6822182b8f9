"""User-space instructions per accepted WebSocket connection, counted by valgrind (callgrind).

    python bench/e2e/handshake_instructions.py [--n 2000] [--servers listener,handler,handshake-floor]
                                               [--out bench/results/latest.md] [--keep DIR]

The connections bench (bench/load/connections.py) measures the server's CPU time
per handshake, which moves by 1.5x between runs on this shared machine.
Instruction counts do not: each server runs under callgrind, one
bench/load/conn_client.py process opens N connections (20 handshakes in flight,
real upgrade requests with a random key, the accept checked), and the
server's counters are dumped before and after the opening
(`callgrind_control -d`); the second dump divided by the connections opened
is the server's user-space instructions per accepted connection: accept,
transport and protocol set-up, reading and checking the request, the 101,
the listener or handler started. The kernel's side (accept, read, write,
epoll) is not counted; it is the same system calls for every server.

Servers: ``listener`` and ``handler`` are ``python -m fastws echo`` with that
API (the CLI's defaults otherwise: keepalive 20 s, /metrics and /healthz on,
so the server's process_request runs); ``listener+proxy-v1`` (``-v2``) the
same with ``--proxy-protocol``, each connection beginning with a PROXY
header (in the request's write); ``handshake-floor`` is
bench/load/conn_peers.py's bare uvloop protocol (read to CRLF CRLF, real
Sec-WebSocket-Accept, canned 101, no checks): what uvloop and one Python
callback cost. Prints the ratio of each to the floor.

Access control (issue #15; every server gets the same request, with an
``Authorization: Bearer <JWT>`` header): ``listener-hook`` / ``handler-hook``
add a plain ``authenticate`` function that compares the header
(bench/e2e/hook_echo.py), ``-async-hook`` the same as an ``async def``,
``-jwt`` is ``fastws echo --jwt-secret`` (``fastws.auth.JWTAuth``, HS256, a
token with ``exp``). The table's last column compares each variant with its
API level without a hook, in the same run:

    python bench/e2e/handshake_instructions.py --servers \
        listener,listener-hook,listener-async-hook,listener-jwt,handler,handler-jwt,handshake-floor
"""
from __future__ import annotations

import argparse
import glob
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.meta import REPO, callgrind_total, free_port  # noqa: E402
from harness.run import BENCH, append_results, child_env, head, spawn, stamp, stop  # noqa: E402

LOAD = BENCH / "load"
FLOOR = "handshake-floor"


# Every server of a run gets the same upgrade request: with this bearer token
# (a JWT, HS256, valid for a day) in an Authorization header.
JWT_SECRET = "bench-handshake-secret-0123456789abcdef"
VARIANTS = ("", "-async-hook", "-hook", "-jwt", "+proxy-v1", "+proxy-v2")  # longest suffix first


def bearer_token() -> str:
    import jwt  # PyJWT: pip install 'fastws[auth]'

    now = int(time.time())
    return jwt.encode({"sub": "bench", "iat": now, "exp": now + 86400}, JWT_SECRET, algorithm="HS256")


def _server_cmd(name: str, port: int, token: str, extra=()) -> list[str]:
    if name == FLOOR:
        return [sys.executable, str(LOAD / "conn_peers.py"), FLOOR, "--port", str(port)]
    api, variant = name, ""
    for suffix in VARIANTS[1:]:
        if name.endswith(suffix):
            api, variant = name[: -len(suffix)], suffix
            break
    echo = ["--port", str(port), "--api", api, "--log-level", "warning", *extra]
    if variant in ("-hook", "-async-hook"):
        kind = "sync" if variant == "-hook" else "async"
        return [sys.executable, str(Path(__file__).with_name("hook_echo.py")), kind, token, *echo]
    if variant == "-jwt":
        echo += ["--jwt-secret", JWT_SECRET]
    if variant.startswith("+proxy-"):  # the client begins each connection with a PROXY header
        echo += ["--proxy-protocol", "--forwarded-allow-ips", "127.0.0.2"]
    return [sys.executable, "-m", "fastws", "echo", *echo]


def _client_extra(name: str) -> list[str]:
    """``listener+proxy-v1``: the client begins each connection with a PROXY v1 header."""
    _, _, proxy = name.partition("+proxy-")
    return ["--proxy", proxy] if proxy else []


def measure(name: str, n: int, token: str, keep: str | None = None, extra=()) -> tuple[float, int]:
    """(instructions per accepted connection, connections opened) for server NAME.

    With KEEP, the opening's callgrind dump is copied to KEEP/NAME.cg.out (for
    callgrind_annotate, see docs/design/handshake.md#where-the-instructions-go)."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="fastws-hs-cg-")
    env = child_env()
    server = spawn(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *_server_cmd(name, port, token, extra)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = None
    try:
        line = server.stdout.readline()  # "READY ..." or fastws's "... listening on ..."
        if not line:
            raise RuntimeError(f"{name} did not start under valgrind")
        client = spawn(
            [sys.executable, str(LOAD / "conn_client.py"), "--port", str(port), "--count", str(n),
             "--src", "127.0.0.2", "--concurrency", "20", "--header", f"Authorization: Bearer {token}",
             *_client_extra(name)],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def event(want: str) -> dict:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                text = client.stdout.readline()
                if not text:
                    raise RuntimeError("the client exited")
                ev = json.loads(text)
                if ev.get("ev") == want:
                    return ev
            raise RuntimeError(f"no {want} from the client")

        event("ready")
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True)
        client.stdin.write("open\n")
        client.stdin.flush()
        opened = event("opened")["open"]
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True)
        client.stdin.write("close\n")
        client.stdin.flush()
        event("closed")
    finally:
        if client is not None:
            stop(client, sig=signal.SIGKILL)
        stop(server, timeout=30)
    dumps = sorted(glob.glob(f"{tmp}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    try:
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(dumps[1], Path(keep) / f"{name}.cg.out")
            (Path(keep) / f"{name}.opened").write_text(f"{opened}\n")
        return callgrind_total(dumps[1]) / max(opened, 1), opened
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="connections opened per server (default 2,000)")
    ap.add_argument("--servers", default=f"listener,handler,{FLOOR}")
    ap.add_argument("--keep", metavar="DIR", help="keep each server's callgrind dump of the opening in DIR "
                                                  "(for bench/e2e/handshake_split.py)")
    ap.add_argument("--echo-args", default="", metavar="ARGS",
                    help="more options for the fastws servers, e.g. '--ping-interval 3600': on a busy machine "
                         "the opening window under valgrind can outlast ping_interval/2, and the keepalive "
                         "pings of the first connections then count as handshake instructions")
    ap.add_argument("--out", help="append the table (with date, command and machine) to this markdown file")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    date = stamp()
    token = bearer_token()
    lines = head(__file__, date, f"- {args.n:,} connections per server, 20 handshakes in flight, one client process, "
                                 f"each upgrade with `Authorization: Bearer <a {len(token)}-character HS256 JWT>`"
                                 + (f"; fastws servers with `{args.echo_args}`" if args.echo_args else ""))
    print("\n".join(lines), flush=True)
    results = {}
    for name in names:
        results[name] = measure(name, args.n, token, args.keep, args.echo_args.split())
        print(f"  {name}: {results[name][0]:,.0f} instructions per connection ({results[name][1]:,} opened)",
              file=sys.stderr, flush=True)
    floor = results.get(FLOOR, (None,))[0]
    rows = ["| server | opened | instructions per accepted connection | vs the floor | above the floor "
            "| vs no hook |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, (ir, opened) in results.items():
        label = f"fastws ({name})" if name != FLOOR else FLOOR
        ratio = f"{ir / floor:.2f}x" if floor and name != FLOOR else "-"
        above = f"{ir - floor:,.0f}" if floor and name != FLOOR else "-"
        suffix = next((s for s in VARIANTS[1:] if name.endswith(s)), None)
        plain = results.get(name[: -len(suffix)], (None,))[0] if suffix else None
        versus = f"+{ir - plain:,.0f} ({(ir / plain - 1) * 100:+.1f}%)" if plain else "-"
        rows.append(f"| {label} | {opened:,} | {ir:,.0f} | {ratio} | {above} | {versus} |")
    text = "\n".join(rows)
    print()
    print(text)
    append_results(args.out, f"handshake_instructions.py {date}", lines, text)


if __name__ == "__main__":
    main()
