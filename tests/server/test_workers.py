"""Worker processes sharing the port (SO_REUSEPORT) under a supervisor."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import websockets.sync.client as ws_sync

from util import UNIT


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return sorted(out)


def _sockets_of(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture
def workers_server():
    proc = subprocess.Popen([sys.executable, "-m", "fastws", "echo", "--port", "0", "--workers", "2",
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "workers 2" in line, line
    port = int(line.split("ws://127.0.0.1:")[1].split()[0])
    deadline = time.monotonic() + 10 * UNIT
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = _children(proc.pid)
    yield proc, port
    if proc.poll() is None:
        proc.terminate()  # the supervisor stops its workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _reap(kids)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pids, timeout=10):
    """Wait for processes this test started (the workers) to be gone."""
    deadline = time.monotonic() + timeout * UNIT
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _echo(port, text="x"):
    deadline = time.monotonic() + 5 * UNIT
    while True:
        try:
            with ws_sync.connect(f"ws://127.0.0.1:{port}", open_timeout=2) as ws:
                ws.send(text)
                return ws.recv(timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_two_workers_both_serve(workers_server):
    proc, port = workers_server
    kids = _children(proc.pid)
    assert len(kids) == 2
    conns = []
    try:
        for i in range(40):
            ws = ws_sync.connect(f"ws://127.0.0.1:{port}").__enter__()
            ws.send(str(i))
            assert ws.recv(timeout=5) == str(i)
            conns.append(ws)
        # Each worker holds some of the 40 connections (SO_REUSEPORT spreads them).
        held = [_sockets_of(pid) for pid in kids]
        assert all(n >= 2 for n in held), held
    finally:
        for ws in conns:
            ws.close()


def test_killed_worker_is_restarted_and_port_keeps_serving(workers_server):
    proc, port = workers_server
    before = _children(proc.pid)
    os.kill(before[0], signal.SIGKILL)
    # Connections the kernel had already queued on the killed worker's
    # listening socket are reset (SO_REUSEPORT keeps one queue per socket);
    # the supervisor starts a new worker within moments.
    deadline = time.monotonic() + 10 * UNIT
    while time.monotonic() < deadline:
        after = _children(proc.pid)
        if len(after) == 2 and before[0] not in after:
            break
        time.sleep(0.05)
    assert len(after) == 2 and before[0] not in after
    time.sleep(0.3 * UNIT)  # the new worker binds and listens
    for i in range(40):  # both workers answer again, every time
        assert _echo(port, f"still here {i}") == f"still here {i}"


def test_sigterm_stops_all_workers_gracefully(workers_server):
    proc, port = workers_server
    ws = ws_sync.connect(f"ws://127.0.0.1:{port}").__enter__()
    ws.send("a")
    assert ws.recv(timeout=5) == "a"
    kids = _children(proc.pid)
    proc.terminate()
    with pytest.raises(Exception) as info:
        ws.recv(timeout=10)
    assert info.value.rcvd.code == 1001
    assert proc.wait(20) == 0
    for pid in kids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_serve_workers_points_to_run():
    import fastws
    from fastws.apps import EchoListener

    with pytest.raises(fastws.ConfigError, match="fastws.run"):
        fastws.serve(EchoListener, "127.0.0.1", 0, workers=2)
    with pytest.raises(fastws.ConfigError, match="unknown option"):
        fastws.serve(EchoListener, "127.0.0.1", 0, max_sise=10)


def test_workers_exit_when_the_supervisor_is_killed(workers_server):
    """A supervisor killed with SIGKILL leaves no orphan workers serving on
    (they get SIGTERM from the kernel and drain)."""
    proc, port = workers_server
    kids = _children(proc.pid)
    assert len(kids) == 2
    proc.kill()
    proc.wait()
    assert _reap(kids) == []


@pytest.mark.parametrize("attempt", range(3))
def test_the_start_line_comes_when_every_worker_listens(attempt):
    """The line that says the server listens is printed only once every
    worker does: a client that connects on it at once (no retry) is served,
    and by each worker (connections spread over both listening sockets)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastws", "echo", "--port", "0", "--workers", "2",
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        kids = _children(proc.pid)
        assert len(kids) == 2
        held = [_sockets_of(pid) for pid in kids]
        for c in conns:
            c.close()
        # each worker: its listening socket plus some of the 40 accepted ones
        assert all(n >= 3 for n in held), held
    finally:
        kids = _children(proc.pid)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _reap(kids)
