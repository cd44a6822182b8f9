"""Throwaway Redis servers for the broker tests (Debian's redis-server package):
one ``RedisServer``, or a six-node ``RedisCluster`` (three masters, three
replicas) made with ``redis-cli --cluster create``.

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

from util import UNIT, stop_process

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


def free_ports(n: int) -> list[int]:
    """N distinct free ports: the sockets are held open together while the
    kernel picks, so no port is handed out twice (separate ``free_port()``
    calls may return the same port when nothing listens on it in between)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RedisServer:
    """redis-server on a loopback port in a temporary directory, no persistence;
    stopped by its PID. ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, tmpdir, port=None, extra=()):
        self.binary = redis_or_skip()
        self.dir = str(tmpdir)
        self.port = port or free_port()
        self.extra = list(extra)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning", *self.extra],
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

    def cli(self, *args) -> str:
        """``redis-cli -p PORT ARGS``: the reply as redis-cli prints it (raw)."""
        out = subprocess.run([shutil.which("redis-cli") or "redis-cli", "-h", "127.0.0.1", "-p", str(self.port),
                              *map(str, args)], capture_output=True, text=True, timeout=10 * UNIT)
        return out.stdout

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc)


class RedisCluster:
    """Six redis-servers in cluster mode on free loopback ports, each in its
    own directory under ``tmpdir``, joined with ``redis-cli --cluster create
    --cluster-replicas 1`` (three masters, three replicas). A small
    ``cluster-node-timeout`` makes a failover take a few seconds;
    ``cluster-require-full-coverage no`` keeps the other shards serving while
    one has no master. ``stop()`` stops every node by PID."""

    def __init__(self, tmpdir, node_timeout_ms: int = 1000):
        redis_or_skip()  # redis-cli comes in the same Debian package (redis-tools, its dependency)
        self.nodes = []
        ports = free_ports(12)  # six client ports and six bus ports, all distinct
        for i in range(6):
            d = os.path.join(str(tmpdir), f"node{i}")
            os.makedirs(d, exist_ok=True)
            self.nodes.append(RedisServer(d, port=ports[i], extra=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                # the bus on a free port (not port + 10000, which may be taken or above 65535)
                "--cluster-port", str(ports[6 + i]), "--repl-diskless-sync-delay", "0",
                "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no"]))

    @property
    def url(self) -> str:
        """The broker's URL: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> "RedisCluster":
        try:
            for node in self.nodes:
                node.start()
            out = subprocess.run(
                [shutil.which("redis-cli"), "--cluster", "create",
                 *[f"127.0.0.1:{n.port}" for n in self.nodes], "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=60 * UNIT)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def info(self, node) -> dict:
        text = node.cli("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok, sees three
        masters owning all slots, and every master has a replica."""
        deadline = time.monotonic() + timeout * UNIT
        while True:
            if all(self._settled(n) for n in self.nodes if n.proc is not None):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not settle: " + repr([self.info(n) for n in self.nodes
                                                                          if n.proc is not None]))
            time.sleep(0.05)

    def _settled(self, node) -> bool:
        info = self.info(node)
        if not (info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
                and info.get("cluster_size") == "3"):
            return False
        repl = dict(line.split(":", 1) for line in node.cli("INFO", "replication").split() if ":" in line)
        if repl.get("role") == "slave":  # synced (a replica that never synced cannot be promoted)
            return repl.get("master_link_status") == "up" and repl.get("master_sync_in_progress") == "0"
        return int(repl.get("connected_slaves", "0")) >= 1

    def masters(self) -> list:
        return [n for n in self.nodes if n.proc is not None and n.cli("ROLE").split()[:1] == ["master"]]

    def owner(self, key: str):
        """The running master that serves ``key``'s slot."""
        masters = self.masters()
        slot = int(masters[0].cli("CLUSTER", "KEYSLOT", key).strip())
        for node in masters:
            if self._serves(node, slot):
                return node
        return None

    def _serves(self, node, slot: int) -> bool:
        text = node.cli("CLUSTER", "NODES")
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 8 and "myself" in fields[2]:
                for r in fields[8:]:
                    if r.startswith("["):
                        continue
                    a, _, b = r.partition("-")
                    if int(a) <= slot <= int(b or a):
                        return True
        return False

    def migrate_slot(self, key: str, dst) -> None:
        """Move ``key``'s slot, with its keys, to the master ``dst`` (what
        ``redis-cli --cluster reshard`` does for one slot)."""
        src = self.owner(key)
        slot = int(src.cli("CLUSTER", "KEYSLOT", key))
        src_id, dst_id = src.cli("CLUSTER", "MYID").strip(), dst.cli("CLUSTER", "MYID").strip()
        assert dst.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id).strip() == "OK"
        assert src.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id).strip() == "OK"
        keys = src.cli("CLUSTER", "GETKEYSINSLOT", slot, 1000).split()
        if keys:
            assert src.cli("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys).strip() == "OK"
        for node in (dst, src, *[m for m in self.masters() if m not in (src, dst)]):
            assert node.cli("CLUSTER", "SETSLOT", slot, "NODE", dst_id).strip() == "OK"

    def kill(self, node) -> None:
        """SIGKILL one node by its PID (a crash: no shutdown, no last words)."""
        proc, node.proc = node.proc, None
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
