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


def test_help_lists_chat_and_push():
    out = run("--help")
    assert "chat" in out.stdout and "push" in out.stdout
    for command, flags in (("chat", ()), ("push", ("--token",))):
        out = run(command, "--help")
        assert out.returncode == 0
        for flag in ("--host", "--port", "--max-size", "--log-level", "--workers", *flags):
            assert flag in out.stdout, (command, flag)


@pytest.mark.parametrize("args,words", [
    (["chat", "--workers", "2"], "one process"),
    (["push", "--workers", "4"], "shared broker"),
    (["push", "--max-size", "2MiB"], "1048576"),
    (["push", "--token", "has space"], "token"),
])
def test_chat_push_refusals_one_line_exit_2(args, words):
    out = run(*args)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr, out.stderr


def _start(*args, env=None):
    import os

    proc = subprocess.Popen([sys.executable, "-m", "fastws", *args, "--port", "0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    return proc, line, int(line.split("http://127.0.0.1:")[1].split()[0]) if "http://" in line else None


def _stop(proc):
    proc.terminate()
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in proc.stderr.read()


def test_chat_command_serves_page_and_room():
    import json
    import urllib.request

    proc, line, port = _start("chat")
    try:
        assert "chat listening on http://127.0.0.1:" in line and "WebSocket at /ws" in line, line
        assert "implementation" in line and "loop" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200 and b"<!DOCTYPE html>" in resp.read()
        with ws_sync.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "login", "name": "cli"}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "welcome", "name": "cli", "users": ["cli"]}
            # The default --max-size holds the longest text at its worst (it was 4 KiB: 1009).
            for text in ("字" * 1400, "😀" * 2000):
                ws.send(json.dumps({"type": "message", "text": text}))
                assert json.loads(ws.recv(timeout=5))["text"] == text
            ws.send(json.dumps({"type": "message", "text": "字" * 2001}))
            assert json.loads(ws.recv(timeout=5))["code"] == "bad_text"
    finally:
        _stop(proc)


def test_push_command_publishes_with_token_from_env():
    import urllib.error
    import urllib.request

    proc, line, port = _start("push", env={"FASTWS_TOKEN": "Zq9-secret"})
    try:
        assert "push listening on http://127.0.0.1:" in line and "token required" in line, line
        assert "Zq9-secret" not in line  # the token itself is never printed
        with ws_sync.connect(f"ws://127.0.0.1:{port}/ws?topics=alerts") as ws:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/publish/alerts", data=b"fire", method="POST")
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=5)
            assert info.value.code == 401
            req.add_header("Authorization", "Bearer Zq9-secret")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200 and resp.read() == b'{"delivered":1}\n'
            assert ws.recv(timeout=5) == "fire"
    finally:
        _stop(proc)
