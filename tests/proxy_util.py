"""Throwaway proxies for the proxy tests: Debian's tinyproxy (HTTP CONNECT,
Basic credentials) and PyPI's pproxy (SOCKS5 and SOCKS4, user:password).

Each runs on a free loopback port in a temporary directory and is stopped by
its PID. Nothing is installed here: tests/run.sh apt-gets tinyproxy when it
is missing and pproxy comes with the test extra. Without one the tests skip
with the reason, or fail when CI=true or FASTWS_REQUIRE_PROXY is set.

``tcp_ports(pid)``: the local ports of a process's TCP sockets (from /proc),
to check that a connection the server accepted came from the proxy.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from util import UNIT, wait_until

USER, PASSWORD = "alice", "s3cret"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("FASTWS_REQUIRE_PROXY"):
        pytest.fail(reason + " (CI=true or FASTWS_REQUIRE_PROXY is set)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def tcp_ports(pid: int) -> set:
    """Local ports of the TCP sockets that process ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class _Process:
    name = ""

    def __init__(self, tmpdir):
        self.dir = str(tmpdir)
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.dir, f"{self.name}.log")

    def _start(self, argv) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            wait_until(lambda: self.proc.poll() is not None or listening(self.port), timeout=10)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"{self.name} did not listen on port {self.port} in time: {self.output()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.output()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5 * UNIT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class TinyProxy(_Process):
    """tinyproxy in the foreground (-d), CONNECT allowed to ``connect_ports``
    only (403 for the others), Basic credentials USER:PASSWORD required
    unless ``auth`` is False."""

    name = "tinyproxy"

    def __init__(self, tmpdir, connect_ports, auth: bool = True):
        super().__init__(tmpdir)
        binary = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None)
        if binary is None:
            _missing("the proxy tests need tinyproxy (apt-get install -y tinyproxy; tests/run.sh does it)")
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", "MaxClients 50", "LogLevel Connect",
                 "Allow 127.0.0.1", "DisableViaHeader Yes"]
        lines += [f"ConnectPort {p}" for p in connect_ports]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        conf = os.path.join(self.dir, "tinyproxy.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._start([binary, "-d", "-c", conf])

    def url(self, credentials: str | None = f"{USER}:{PASSWORD}") -> str:
        user = f"{credentials}@" if credentials else ""
        return f"http://{user}127.0.0.1:{self.port}"


class PProxy(_Process):
    """pproxy listening for SOCKS5 and SOCKS4 (``scheme``), with
    USER:PASSWORD required (SOCKS5) unless ``auth`` is False."""

    name = "pproxy"

    def __init__(self, tmpdir, scheme: str = "socks5", auth: bool = True):
        super().__init__(tmpdir)
        try:
            import pproxy  # noqa: F401
        except ImportError:
            _missing("the SOCKS tests need pproxy (pip install -e '.[test]')")
        listen = f"{scheme}://127.0.0.1:{self.port}"
        if auth:
            listen += f"#{USER}:{PASSWORD}"
        # pproxy's main() installs uvloop when it can, then asks for
        # asyncio.get_event_loop(), which uvloop's policy refuses (no current
        # loop): run it on asyncio's own loop, uvloop hidden from it.
        boot = ("import asyncio, sys; sys.modules['uvloop'] = None; "
                "asyncio.set_event_loop(asyncio.new_event_loop()); "
                "from pproxy.server import main; sys.argv[0] = 'pproxy'; main()")
        self._start([sys.executable, "-c", boot, "-l", listen, "-v", "--auth", "0"])

    def url(self, scheme: str = "socks5", credentials: str | None = f"{USER}:{PASSWORD}") -> str:
        user = f"{credentials}@" if credentials else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}"
