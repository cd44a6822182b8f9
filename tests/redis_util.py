"""A throwaway redis-server for the broker tests (Debian's redis-server package).

Nothing is installed here: tests/run.sh apt-gets redis-server when it is
missing. Without it the tests skip with the reason, or fail when CI=true or
FASTWS_REQUIRE_REDIS is set.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from util import UNIT

REDIS_SERVER = "redis-server"


def redis_or_skip() -> str:
    path = shutil.which(REDIS_SERVER)
    if path is None:
        reason = f"the broker tests need {REDIS_SERVER} (apt-get install -y redis-server; tests/run.sh does it)"
        if os.environ.get("CI") == "true" or os.environ.get("FASTWS_REQUIRE_REDIS"):
            pytest.fail(reason + " (CI=true or FASTWS_REQUIRE_REDIS is set)")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a loopback port in a temporary directory, no persistence;
    stopped by its PID. ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, tmpdir, port=None):
        self.binary = redis_or_skip()
        self.dir = str(tmpdir)
        self.port = port or free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 10 * UNIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.proc.stdout.read()!r}")
            if self.ping():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in time")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args) -> bytes:
        """One command over a raw socket (RESP); the raw reply."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"".join(parts))
            time.sleep(0.05)
            return s.recv(1 << 16)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()  # by its own Popen handle, i.e. by PID
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
