"""A throwaway HAProxy in TCP mode for the PROXY protocol tests (Debian's haproxy package).

Nothing is installed here: tests/run.sh apt-gets haproxy when it is missing.
Without it the tests skip with the reason, or fail when CI=true or
FASTWS_REQUIRE_HAPROXY is set.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from redis_util import free_port
from util import UNIT, stop_process

HAPROXY = "haproxy"


def haproxy_or_skip() -> str:
    path = shutil.which(HAPROXY) or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
    if path is None:
        reason = f"the PROXY protocol tests need {HAPROXY} (apt-get install -y haproxy; tests/run.sh does it)"
        if os.environ.get("CI") == "true" or os.environ.get("FASTWS_REQUIRE_HAPROXY"):
            pytest.fail(reason + " (CI=true or FASTWS_REQUIRE_HAPROXY is set)")
        pytest.skip(reason)
    return path


CONFIG = """\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h

# only to tell that HAProxy listens: accepted and closed, never forwarded
frontend ready
    bind 127.0.0.1:{ready}
    tcp-request connection reject

frontend ws_v1
    bind 127.0.0.1:{v1}
    default_backend fastws_v1

frontend ws_v2
    bind 127.0.0.1:{v2}
    default_backend fastws_v2

backend fastws_v1
{check}    server s1 127.0.0.1:{backend} send-proxy{check_server}

backend fastws_v2
{check}    server s1 127.0.0.1:{backend} send-proxy-v2{check_server}
"""


class HAProxy:
    """haproxy -db -f haproxy.cfg in a temporary directory, on free loopback
    ports, in front of 127.0.0.1:``backend``: ``port_v1`` sends PROXY v1
    (``send-proxy``), ``port_v2`` v2 (``send-proxy-v2``). With ``health``
    HAProxy's health checks (GET /healthz, every 100 ms) go through the
    PROXY protocol too. Stopped by its PID."""

    def __init__(self, tmpdir, backend: int, health: bool = False):
        self.binary = haproxy_or_skip()
        self.dir = str(tmpdir)
        self.port_v1, self.port_v2, self.ready = free_port(), free_port(), free_port()
        self.config = os.path.join(self.dir, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(ready=self.ready, v1=self.port_v1, v2=self.port_v2, backend=backend,
                                  check="    option httpchk GET /healthz\n" if health else "",
                                  check_server=" check inter 100ms" if health else ""))
        self.proc = None

    def start(self) -> "HAProxy":
        self.proc = subprocess.Popen([self.binary, "-db", "-f", self.config], cwd=self.dir,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10 * UNIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.proc.stdout.read()!r}")
            try:
                socket.create_connection(("127.0.0.1", self.ready), timeout=1).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not listen on {self.ready} in time")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc)
        proc.stdout.close()

    def __enter__(self) -> "HAProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP socket from ``source`` (e.g. 127.0.0.2) to 127.0.0.1:``port``."""
    sock = socket.socket()
    sock.settimeout(timeout * UNIT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock
