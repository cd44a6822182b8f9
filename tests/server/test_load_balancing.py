"""The HAProxy configuration of docs/deployment/load-balancing.md, for real.

Debian's ``haproxy`` runs the very file the page publishes (its addresses
replaced by loopback ports) in front of two ``fastws push --redis URL
--history N`` processes sharing one redis-server. WebSocket clients (the
third-party ``websockets`` library) connect through HAProxy; one node is
killed with SIGKILL while publishes (POSTed through HAProxy) go on; its
clients reconnect through HAProxy, land on the other node and resume with
``since=`` without a gap. tests/run.sh installs haproxy when it is missing
(skipped locally without it, failed when CI=true: tests/haproxy_util.py).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import re
import subprocess
import time

import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed

from haproxy_util import haproxy_or_skip
from redis_util import RedisServer, free_port
from test_broker import push_procs  # noqa: F401 (a fixture)
from util import UNIT, wait_until

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "deployment" / "load-balancing.md"


def published_config(port: int, nodes) -> str:
    """The page's HAProxy block with loopback addresses."""
    text = PAGE.read_text(encoding="utf-8")
    config = re.search(r"```haproxy\n(.*?)```", text, re.S).group(1)
    assert "bind :8080" in config and "server node2 10.0.0.2:8080" in config
    config = config.replace("bind :8080", f"bind 127.0.0.1:{port}")
    for i, node_port in enumerate(nodes, 1):
        config = config.replace(f"server node{i} 10.0.0.{i}:8080", f"server node{i} 127.0.0.1:{node_port}")
    config = config.replace("maxconn 200000", "maxconn 1000").replace("maxconn 50000", "maxconn 500")
    return config


def post(port, topic, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * UNIT)
    try:
        conn.request("POST", f"/publish/{topic}", body=body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data.startswith(b"{") else data)
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def healthy(port) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def test_haproxy_in_front_of_two_nodes_failover_resumes_gap_free(tmp_path, push_procs):
    binary = haproxy_or_skip()
    redis = RedisServer(tmp_path).start()
    proxy = None
    stack = contextlib.ExitStack()
    try:
        a = push_procs("--redis", redis.url, "--history", "1000")
        b = push_procs("--redis", redis.url, "--history", "1000")
        port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(published_config(port, [a.port, b.port]))
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        proxy = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: healthy(port), timeout=10)
        url = f"ws://127.0.0.1:{port}/ws?topics=news"
        clients = [stack.enter_context(ws_sync.connect(url, open_timeout=5 * UNIT)) for _ in range(4)]
        wait_until(lambda: all(c.protocol.state.name == "OPEN" for c in clients))
        last = [0] * len(clients)
        got = [[] for _ in clients]
        ids = []

        def publish(n):
            for i in range(n):
                deadline = time.monotonic() + 15 * UNIT
                while True:  # a POST that reached the killed node: try again
                    status, reply = post(port, "news", f"m{len(ids)}")
                    if status == 200:
                        ids.append(reply["id"])
                        break
                    assert time.monotonic() < deadline, (status, reply)
                    time.sleep(0.05)

        def drain(i, upto):
            """Read client i's messages up to id ``upto``; False if it was cut off."""
            while last[i] < upto:
                try:
                    msg = json.loads(clients[i].recv(timeout=10 * UNIT))
                except ConnectionClosed:
                    return False
                got[i].append(msg["id"])
                last[i] = msg["id"]
            return True

        publish(10)
        for i in range(len(clients)):
            assert drain(i, ids[-1])
        b.proc.kill()  # SIGKILL: no close frames, no goodbye
        b.proc.wait()
        publish(10)
        cut = []
        for i in range(len(clients)):
            while not drain(i, ids[-1]):
                cut.append(i)  # reconnect through HAProxy, resuming after the last id seen
                clients[i] = stack.enter_context(ws_sync.connect(f"{url}&since={last[i]}", open_timeout=10 * UNIT))
        assert cut, "leastconn put no client on the killed node"
        assert len(cut) < len(clients)
        publish(5)
        for i in range(len(clients)):
            assert drain(i, ids[-1])
            assert got[i] == list(range(ids[0], ids[-1] + 1)), got[i]  # no gap, no duplicate
    finally:
        stack.close()
        if proxy is not None:
            proxy.terminate()  # by PID
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        redis.stop()
