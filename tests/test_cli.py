"""The fastws command as a user runs it: a subprocess."""
from __future__ import annotations

import subprocess
import sys

import pytest
import websockets.sync.client as ws_sync


def run(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "fastws", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help():
    out = run("--help")
    assert out.returncode == 0 and "echo" in out.stdout
    out = run("echo", "--help")
    assert out.returncode == 0
    for flag in ("--host", "--port", "--max-size", "--log-level", "--api", "--ping-interval"):
        assert flag in out.stdout


@pytest.mark.parametrize("args", [
    ["echo", "--port", "abc"],
    ["echo", "--max-size", "lots"],
    ["echo", "--log-level", "loud"],
    ["nosuchcommand"],
    ["echo", "--ping-timeout", "0"],
])
def test_bad_flags_one_line_exit_2(args):
    out = run(*args)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3  # argparse: usage + one error line
    assert "error" in out.stderr


def test_port_in_use_is_one_line_exit_2():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("echo", "--port", str(port))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "cannot listen" in out.stderr


@pytest.mark.parametrize("api", ["listener", "handler"])
def test_echo_serves_and_stops_on_sigterm(api):
    proc = subprocess.Popen([sys.executable, "-m", "fastws", "echo", "--port", "0", "--api", api],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line and "implementation" in line, line
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        with ws_sync.connect(f"ws://127.0.0.1:{port}") as ws:
            ws.send("hello")
            assert ws.recv() == "hello"
            proc.terminate()
            # Graceful shutdown: the client sees 1001 going away.
            with pytest.raises(Exception) as info:
                ws.recv(timeout=10)
            assert getattr(info.value, "rcvd", None) is not None and info.value.rcvd.code == 1001
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
