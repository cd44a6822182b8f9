"""Every Python example of the README runs as written, against a live server.

Each ```python block is run as a file of its own in a fresh interpreter (so a
top-level ``async with`` or a fragment fails here as it would for a reader),
with the port 8765 of the text replaced by a free one. A block that serves
(``fastws.serve``/``fastws.run``) is started and must echo for a real client
(websockets); any other block runs against ``fastws echo`` and must exit 0.
"""
from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import pytest
import websockets.sync.client as ws_sync

from util import UNIT

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _blocks() -> list:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc) -> None:
    deadline = time.monotonic() + 20 * UNIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the example exited with {proc.returncode}:\n{out}\n{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {port}")


def _start(args, tmp_path, name, code=None):
    if code is not None:
        script = tmp_path / f"{name}.py"
        script.write_text(code)
        args = [str(script)]
    # a fresh directory, as a reader's own file would run (not the source tree)
    return subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_the_readme_has_python_examples():
    assert len(_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, tmp_path):
    code = _blocks()[index]
    port = _free_port()
    code = code.replace("8765", str(port))
    if "fastws.serve(" in code or "fastws.run(" in code:
        proc = _start(None, tmp_path, f"example{index}", code)
        try:
            _wait_port(port, proc)
            with ws_sync.connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
                ws.send("hello")
                assert ws.recv(timeout=10) == "hello"
                ws.send(b"\x00\x01")
                assert ws.recv(timeout=10) == b"\x00\x01"
        finally:
            _stop(proc)
        return
    server = _start(["-m", "fastws", "echo", "--port", str(port), "--log-level", "warning"], tmp_path, "echo")
    try:
        _wait_port(port, server)
        script = tmp_path / f"example{index}.py"
        script.write_text(code)
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout
    finally:
        _stop(server)
