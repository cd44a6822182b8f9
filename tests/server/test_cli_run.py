"""``fastws run module:app`` as a user runs it: a subprocess, a third-party client."""
from __future__ import annotations

import asyncio
import os
import signal
import textwrap

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cliutil import Command, get, run, wait_for
from util import UNIT, RawClient

APP = textwrap.dedent('''
    import os
    import fastws

    async def handler(ws):
        async for message in ws:
            if message == "pid":
                await ws.send(str(os.getpid()))
            elif message == "path":
                await ws.send(f"{ws.path} {ws.subprotocol}")
            else:
                await ws.send(message)

    class Upper(fastws.Listener):
        def on_message(self, data):
            self.ws.send(data.upper() if isinstance(data, str) else data)

    class Nested:
        handler = handler

    def sync_handler(ws):
        pass

    NUMBER = 3
''')


@pytest.fixture
def appdir(tmp_path):
    (tmp_path / "myapp.py").write_text(APP)
    (tmp_path / "broken.py").write_text("import os\nvalue = 1 / 0\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    return str(tmp_path)


@pytest.mark.parametrize("spec,kind,sent,expected", [
    ("myapp:handler", "handler", "abc", "abc"),
    ("myapp:Upper", "listener", "abc", "ABC"),
    ("myapp:Nested.handler", "handler", "x", "x"),
])
def test_run_import_string_serves(appdir, spec, kind, sent, expected):
    with Command("run", spec, "--port", "0", "--log-level", "warning", cwd=appdir) as cmd:
        line = cmd.line
        assert f"serving {spec} ({kind}) on ws://127.0.0.1:" in line, line
        for word in ("workers 1", "implementation ", "loop "):
            assert word in line, line
        with ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/") as ws:
            ws.send(sent)
            assert ws.recv(timeout=5) == expected
    assert cmd.proc.returncode == 0 and "Traceback" not in cmd.stderr


def test_env_variables_configure_every_flag(appdir):
    env = {"FASTWS_PORT": "0", "FASTWS_MAX_SIZE": "100", "FASTWS_SUBPROTOCOLS": "v2,v1",
           "FASTWS_LOG_LEVEL": "warning", "FASTWS_LIMIT_CONNECTIONS": "1"}
    with Command("run", "myapp:handler", cwd=appdir, env=env) as cmd:
        with ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/p", subprotocols=["v1", "v2"]) as ws:
            ws.send("path")
            assert ws.recv(timeout=5) == "/p v2"
            with pytest.raises(InvalidStatus) as info:  # FASTWS_LIMIT_CONNECTIONS=1
                ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/")
            assert info.value.response.status_code == 503
            ws.send("y" * 101)  # FASTWS_MAX_SIZE=100
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1009
    # a flag wins over its variable
    with Command("run", "myapp:handler", "--port", "0", cwd=appdir, env={"FASTWS_PORT": "1"}) as cmd:
        assert cmd.port not in (None, 1)


@pytest.mark.parametrize("args,env,words", [
    (["run", "nosuchmodule:app"], {}, "no module named 'nosuchmodule'"),
    (["run", "myapp:missing"], {}, "has no attribute 'missing'"),
    (["run", "broken:app"], {}, "ZeroDivisionError"),
    (["run", "syntax:app"], {}, "SyntaxError"),
    (["run", "myapp"], {}, "module:attribute"),
    (["run", "myapp:sync_handler"], {}, "async def sync_handler(ws)"),
    (["run", "myapp:NUMBER"], {}, "not an async handler"),
    (["run", "myapp:handler", "--workers", "0"], {}, "--workers"),
    (["run", "myapp:handler", "--limit-connections", "many"], {}, "--limit-connections"),
    (["run", "myapp:handler", "--backlog", "-5"], {}, "--backlog"),
    (["run", "myapp:handler", "--timeout-graceful-shutdown", "soon"], {}, "--timeout-graceful-shutdown"),
    (["run", "myapp:handler", "--ssl-keyfile", "key.pem"], {}, "--ssl-certfile"),
    (["run", "myapp:handler", "--ssl-certfile", "nothere.pem"], {}, "not found"),
    (["run", "myapp:handler"], {"FASTWS_PORT": "eighty"}, "--port"),
    (["run", "myapp:handler"], {"FASTWS_LOG_LEVEL": "loud"}, "FASTWS_LOG_LEVEL"),
    (["run", "myapp:handler", "--uds", "/nonexistent-dir/x.sock"], {}, "cannot listen"),
    (["run", "myapp:handler", "--ping-timeout", "0"], {}, "ping_timeout"),
])
def test_bad_options_and_imports_one_line_exit_2(appdir, args, env, words):
    out = run(*args, cwd=appdir, env=env)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith("fastws: error:") and words in lines[0], out.stderr


def test_help_explains_every_flag():
    out = run("run", "--help")
    assert out.returncode == 0
    for flag in ("--host", "--port", "--uds", "--backlog", "--workers", "--ssl-certfile", "--ssl-keyfile",
                 "--log-level", "--access-log", "--max-size", "--ping-interval", "--ping-timeout",
                 "--origins", "--limit-connections", "--timeout-graceful-shutdown"):
        assert flag in out.stdout, flag
        assert f"FASTWS_{flag[2:].upper().replace('-', '_')}" in out.stdout.replace("\n", "").replace(" ", ""), flag
    assert "run" in run("--help").stdout


def test_sigterm_drains_1001_healthz_503_then_exits(appdir):
    cmd = Command("run", "myapp:handler", "--port", "0", "--timeout-graceful-shutdown", "3",
                  "--log-level", "warning", cwd=appdir)
    try:
        port = cmd.port
        assert get(f"http://127.0.0.1:{port}/healthz")[:1] == (200,)
        raw = RawClient(port, "/", timeout=10)  # never answers the close frame
        assert raw.status == 101
        with ws_sync.connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            cmd.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd.code == 1001
        assert raw.recv_close()[0] == 1001
        # draining: still listening, healthz says 503 and new upgrades get 503
        status, headers, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 503 and body == b"draining\n" and headers["Retry-After"]
        with pytest.raises(InvalidStatus) as refused:
            ws_sync.connect(f"ws://127.0.0.1:{port}/")
        assert refused.value.response.status_code == 503
        assert cmd.proc.wait(10 * UNIT) == 0  # graceful timeout (3 s) aborts the silent client
    finally:
        cmd.stop()
    assert "Traceback" not in cmd.stderr


def test_workers_2_serve_from_two_pids(appdir):
    with Command("run", "myapp:handler", "--port", "0", "--workers", "2", "--log-level", "warning",
                 cwd=appdir) as cmd:
        assert "workers 2" in cmd.line
        pids = set()

        def two_pids():
            for _ in range(20):
                try:
                    with ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/") as ws:
                        ws.send("pid")
                        pids.add(int(ws.recv(timeout=5)))
                except (OSError, ConnectionClosed, InvalidStatus):
                    pass  # a worker still starting
            return len(pids) >= 2
        assert wait_for(two_pids, 20 * UNIT), pids
        assert cmd.proc.pid not in pids  # the supervisor does not serve
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == cmd.proc.pid


def test_unix_socket(appdir, tmp_path):
    path = str(tmp_path / "fastws.sock")
    with Command("run", "myapp:handler", "--uds", path, "--log-level", "warning", cwd=appdir) as cmd:
        assert f"unix:{path}" in cmd.line

        async def main():
            import websockets

            async with websockets.unix_connect(path, "ws://localhost/") as ws:
                await ws.send("over unix")
                return await asyncio.wait_for(ws.recv(), 5)
        assert asyncio.run(main()) == "over unix"


def test_access_log_one_line_per_handshake_none_per_message(appdir):
    cmd = Command("run", "myapp:handler", "--port", "0", "--access-log", cwd=appdir)
    try:
        with ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/room?x=1", subprotocols=None) as ws:
            for _ in range(50):
                ws.send("m")
                ws.recv(timeout=5)
    finally:
        cmd.stop()
    access = [ln for ln in cmd.stderr.splitlines() if "fastws.access" in ln]
    assert len(access) == 1, cmd.stderr
    assert '"GET /room?x=1 HTTP/1.1" 101 - ' in access[0] and "127.0.0.1:" in access[0] and "ms" in access[0]
    assert len(cmd.stderr.splitlines()) < 10  # nothing per message at INFO

