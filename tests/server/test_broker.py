"""The Redis broker (fastws/broker.py) against a real redis-server.

Two kinds of servers: ``fastws push --redis URL`` subprocesses (two of them,
and one with --workers 2) driven over HTTP, and in-process servers
(conftest's ServerThread) where the broker's counters and exceptions can be
read. Clients are the third-party ``websockets`` library. Redis is stopped by
PID and started again on the same port in the middle of tests.

redis-server missing: skipped with the reason, failed when CI=true (or
FASTWS_REQUIRE_REDIS is set); see tests/redis_util.py.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed

import fastws
from fastws.broker import Published, RedisBroker
from fastws.exceptions import BrokerError, BrokerUnavailable, ConfigError
from fastws.apps.push import envelope, push_app
from redis_util import RedisServer, redis_or_skip
from util import UNIT


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# ---------------------------------------------------------------- helpers
def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * UNIT)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post(port, topic, body):
    status, headers, data = request(port, "POST", f"/publish/{topic}", body)
    return status, (json.loads(data) if data.startswith(b"{") else data), headers


def recv(ws, timeout=5.0):
    return ws.recv(timeout=timeout * UNIT)


def nothing(ws, wait=0.3):
    with pytest.raises(TimeoutError):
        ws.recv(timeout=wait * UNIT)


def wait_for(cond, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout * UNIT
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(step)


class PushProcess:
    """``python -m fastws push --port 0 --redis URL ...`` in a subprocess."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastws", "push", "--port", "0", "--log-level",
                                      "warning", "--ping-interval", "none", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "push listening on http://127.0.0.1:" not in line:
            self.stop()
            raise AssertionError((line, self.stderr))
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
        self.stderr = ""
        # with --workers the address is printed before the workers listen
        assert wait_for(lambda: self._healthy(), timeout=20), "the push server never answered /healthz"

    def _healthy(self):
        try:
            return request(self.port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def connect(self, query):
        return ws_sync.connect(f"ws://127.0.0.1:{self.port}/ws{query}", open_timeout=5 * UNIT)

    def stop(self):
        self.proc.terminate()  # by PID (Popen handle)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = self.proc.stderr.read()
        return self.stderr


@pytest.fixture
def push_procs():
    procs = []

    def start(*args):
        p = PushProcess(*args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        err = p.stop()
        assert "Traceback" not in err, err


def numsub(redis_server, topic) -> int:
    reply = redis_server.command("PUBSUB", "NUMSUB", f"fastws:c:{topic}")
    # *2\r\n$N\r\nchannel\r\n:K\r\n
    return int(reply.rsplit(b":", 1)[1].strip())


# ---------------------------------------------------------------- two processes, one Redis
def test_two_processes_share_topics(redis_server, push_procs):
    a = push_procs("--redis", redis_server.url)
    b = push_procs("--redis", redis_server.url)
    with a.connect("?topics=news") as a1, a.connect("?topics=news,other") as a2, \
            b.connect("?topics=news") as b1, b.connect("?topics=other") as b2:
        assert wait_for(lambda: numsub(redis_server, "news") == 2)  # one link per process
        assert wait_for(lambda: numsub(redis_server, "other") == 2)
        status, body, _ = post(a.port, "news", b"from a")
        assert status == 200 and body["processes"] == 2 and body["id"] == 1
        assert recv(a1) == "from a" and recv(a2) == "from a" and recv(b1) == "from a"
        status, body, _ = post(b.port, "news", "\u00e9t\u00e9".encode())
        assert (status, body) == (200, {"id": 2, "processes": 2})
        for ws in (a1, a2, b1):
            assert recv(ws) == "\u00e9t\u00e9"
        nothing(b2)
        post(b.port, "other", b"\xff\x00")  # binary stays binary
        assert recv(a2) == b"\xff\x00" and recv(b2) == b"\xff\x00"
        nothing(a1)
        # In order, from both sides, under a burst.
        for i in range(50):
            post(a.port if i % 2 else b.port, "news", str(i).encode())
        for ws in (a1, a2, b1):
            assert [recv(ws) for _ in range(50)] == [str(i) for i in range(50)]
        # Only topics with local subscribers are subscribed in Redis.
        assert post(a.port, "nobody", b"x")[1] == {"id": 1, "processes": 0}
    # the last local subscriber left: the processes unsubscribe
    assert wait_for(lambda: numsub(redis_server, "news") == 0 and numsub(redis_server, "other") == 0)


def test_workers_share_topics(redis_server, push_procs):
    import contextlib

    p = push_procs("--redis", redis_server.url, "--workers", "2")
    with contextlib.ExitStack() as stack:
        # SO_REUSEPORT spreads connections over the workers that listen; the
        # second may start listening a little later: connect until both have
        # subscribers (each worker subscribes once).
        clients = []
        deadline = time.monotonic() + 30 * UNIT
        while len(clients) < 12 or numsub(redis_server, "t") < 2:
            assert time.monotonic() < deadline and len(clients) < 200, numsub(redis_server, "t")
            clients.append(stack.enter_context(p.connect("?topics=t")))
            if len(clients) >= 12:
                time.sleep(0.05)
        assert wait_for(lambda: numsub(redis_server, "t") == 2), numsub(redis_server, "t")
        status, body, _ = post(p.port, "t", b"to all")
        assert status == 200 and body["processes"] == 2
        for ws in clients:
            assert recv(ws) == "to all"


def test_push_refuses_workers_without_redis():
    out = subprocess.run([sys.executable, "-m", "fastws", "push", "--workers", "2"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "--redis" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fastws", "push", "--history", "5"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "--history needs --redis" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fastws", "push", "--redis", "http://x"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "redis://" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "fastws", "push", "--wait-replicas", "1"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "--wait-replicas needs --redis" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fastws", "push", "--redis", "redis+cluster://h"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "host:port" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- Redis goes away and comes back
def test_redis_restart_fails_publishes_loudly_then_resumes(redis_server, push_procs):
    a = push_procs("--redis", redis_server.url)
    b = push_procs("--redis", redis_server.url)
    with a.connect("?topics=t") as a1, b.connect("?topics=t") as b1:
        assert wait_for(lambda: numsub(redis_server, "t") == 2)
        assert post(a.port, "t", b"before")[0] == 200
        assert recv(a1) == "before" and recv(b1) == "before"

        redis_server.stop()
        for port in (a.port, b.port):
            status, body, headers = post(port, "t", b"during")
            assert status == 503, (status, body)
            assert headers.get("Retry-After") == "1" and "not published" in body["error"]
        nothing(a1)
        nothing(b1)

        redis_server.start()  # same port, empty
        # Each process reconnects (backoff), re-subscribes, then accepts publishes again.
        assert wait_for(lambda: numsub(redis_server, "t") == 2, timeout=20)
        assert wait_for(lambda: post(a.port, "t", b"after")[0] == 200, timeout=20)
        assert recv(a1) == "after" and recv(b1) == "after"
        assert wait_for(lambda: post(b.port, "t", b"after b")[0] == 200, timeout=20)
        assert recv(a1) == "after b" and recv(b1) == "after b"
    # one WARNING per outage and process, not one per retry
    for p in (a, b):
        err = p.stop()
        assert err.count("WARNING fastws.broker") == 1, err
        assert "lost the connection to" in err


def _push_thread(serve_thread, broker, **kwargs):
    service, options = push_app(**kwargs)
    st = serve_thread(**options, broker=broker, ping_interval=None)
    service.attach(st.server)
    return st


def test_publish_raises_broker_unavailable_and_counts(redis_server, serve_thread, caplog):
    caplog.set_level(logging.INFO, logger="fastws.broker")
    broker = RedisBroker(redis_server.url, reconnect_min=0.05, reconnect_max=0.2)
    st = _push_thread(serve_thread, broker)
    server = st.server
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=x", open_timeout=5 * UNIT) as ws:
        assert wait_for(lambda: numsub(redis_server, "x") == 1)
        result = st.call(server.publish, "x", "one")
        assert isinstance(result, Published) and result == (1, 1)
        assert recv(ws) == "one"
        assert st.call(server.publish_local, "x", "local only") == 1  # no Redis round trip
        assert recv(ws) == "local only"

        redis_server.stop()
        assert wait_for(lambda: not broker.connected)
        for _ in range(3):
            with pytest.raises(BrokerUnavailable, match="not published"):
                st.call(server.publish, "x", "lost?")
        time.sleep(1.0 * UNIT)  # several reconnect attempts at 0.05-0.2 s
        redis_server.start()
        assert wait_for(lambda: broker.connected, timeout=20)
        assert st.call(server.publish, "x", "two").processes == 1
        assert recv(ws) == "two"
    stats = broker.stats()
    assert stats["outages"] == 1 and stats["reconnects"] == 1
    assert stats["publish_failures"] == 3 and stats["published"] == 2 and stats["connected"]
    # the new Redis started empty: the topic's ids went back (1 again), seen as a reset, not as duplicates
    assert stats["resets"] == 1 and stats["duplicates"] == 0
    assert st.call(lambda: server.stats["broker"]["publish_failures"]) == 3
    warnings = [r for r in caplog.records if r.name == "fastws.broker" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("connected to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)


def test_broker_unreachable_at_start(serve_thread):
    from redis_util import free_port

    port = free_port()  # nothing listens there
    broker = RedisBroker(f"redis://127.0.0.1:{port}/0", timeout=0.5, reconnect_max=0.5)
    st = serve_thread(fastws.Listener, broker=broker)  # the server starts and serves anyway
    with pytest.raises(BrokerUnavailable):
        st.call(st.server.publish, "t", "x")
    assert broker.stats()["outages"] == 1 and broker.stats()["publish_failures"] == 1
    assert st.call(st.server.publish_local, "t", "x") == 0


def test_options_validated():
    with pytest.raises(ConfigError):
        RedisBroker("localhost:6379")
    with pytest.raises(ConfigError):
        RedisBroker("redis://x", history=-1)
    with pytest.raises(ConfigError):
        RedisBroker("redis://x", reconnect_min=2, reconnect_max=1)
    with pytest.raises(ConfigError):
        fastws.Server(fastws.Listener, broker="redis://x")
    assert "***" in repr(RedisBroker("redis://user:secret@h:1/0")) and "secret" not in repr(
        RedisBroker("redis://user:secret@h:1/0"))


# ---------------------------------------------------------------- recovery after one process lost its link
def _kill_link(redis_server, broker) -> None:
    """Cut one process's subscription link (like a network blip for it alone)."""
    reply = redis_server.command("CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "yes")
    assert reply.startswith(b":"), reply


@pytest.mark.parametrize("history", [0, 100])
def test_link_loss_recovery_counts_or_redelivers(redis_server, serve_thread, history):
    # A: slow to reconnect (3 s), so what B publishes in between is missed by A's link.
    wrap = envelope if history else None
    a_broker = RedisBroker(redis_server.url, history=history, wrap=wrap,
                           reconnect_min=3.0 * UNIT, reconnect_max=3.0 * UNIT)
    b_broker = RedisBroker(redis_server.url, history=history, wrap=wrap, reconnect_min=0.05)
    a = _push_thread(serve_thread, a_broker)
    b = _push_thread(serve_thread, b_broker)
    with ws_sync.connect(f"ws://127.0.0.1:{a.port}/ws?topics=r", open_timeout=5 * UNIT) as wa:
        assert wait_for(lambda: numsub(redis_server, "r") == 1)
        assert st_publish(b, "r", "m1")
        first = recv(wa)
        # kill A's link only: B has no subscriber, so only A is a pubsub client
        _kill_link(redis_server, a_broker)
        assert wait_for(lambda: not a_broker.connected, timeout=5)
        for i in (2, 3, 4):
            assert st_publish(b, "r", f"m{i}")
        assert wait_for(lambda: a_broker.connected, timeout=10)
        assert st_publish(b, "r", "m5")
        got = [first] + [recv(wa) for _ in range(4 if history else 1)]
        nothing(wa)
    stats = a_broker.stats()
    assert stats["outages"] == 1 and stats["reconnects"] == 1
    if history:
        assert [json.loads(m)["data"] for m in got] == ["m1", "m2", "m3", "m4", "m5"]
        assert [json.loads(m)["id"] for m in got] == [1, 2, 3, 4, 5]
        assert stats["recovered"] == 3 and stats["missed"] == 0
    else:
        assert got == ["m1", "m5"]
        assert stats["missed"] == 3 and stats["recovered"] == 0


def st_publish(st, topic, data) -> bool:
    return st.call(st.server.publish, topic, data).id > 0


# ---------------------------------------------------------------- history
def test_history_api_and_resume(redis_server, serve_thread):
    broker = RedisBroker(redis_server.url, history=100, wrap=envelope)
    st = _push_thread(serve_thread, broker)
    for i in range(1, 6):
        assert st.call(st.server.publish, "h", f"m{i}").id == i
    st.call(st.server.publish, "h", b"\x00bin")
    hist = st.call(broker.history, "h", 2)
    assert hist == [(3, "m3"), (4, "m4"), (5, "m5"), (6, b"\x00bin")]
    assert st.call(broker.history, "h", 6) == [] and st.call(broker.history, "nothing", 0) == []
    with pytest.raises(BrokerError):
        st.call(broker.history, "h", -1)

    # resume from the query string: what it missed, then live
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=h&since=4", open_timeout=5 * UNIT) as ws:
        m5, m6 = json.loads(recv(ws)), json.loads(recv(ws))
        assert m5 == {"type": "message", "topic": "h", "id": 5, "data": "m5"}
        assert m6["id"] == 6 and m6["base64"] == "AGJpbg=="
        assert wait_for(lambda: st.call(st.server.subscribers, "h") == 1)
        st.call(st.server.publish, "h", "live")
        assert json.loads(recv(ws)) == {"type": "message", "topic": "h", "id": 7, "data": "live"}
        nothing(ws)
        # resume another topic with a subscribe message
        st.call(st.server.publish, "k", "k1")
        st.call(st.server.publish, "k", "k2")
        ws.send(json.dumps({"type": "subscribe", "topic": "k", "since": 0}))
        assert [json.loads(recv(ws))["data"] for _ in range(2)] == ["k1", "k2"]
        assert json.loads(recv(ws)) == {"type": "subscribed", "topic": "k", "replayed": 2, "last": 2}
        ws.send(json.dumps({"type": "subscribe", "topic": "k", "since": "x"}))
        assert json.loads(recv(ws))["code"] == "bad_request"


def test_since_refused_without_history(redis_server, serve_thread):
    from websockets.exceptions import InvalidStatus

    st = _push_thread(serve_thread, RedisBroker(redis_server.url))  # history off
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=a&since=3", open_timeout=5 * UNIT).__enter__()
    assert info.value.response.status_code == 400
    st2 = _push_thread(serve_thread, RedisBroker(redis_server.url, history=10))
    for bad in ("-1", "x", "1&since=2", "99999999999999999999"):
        with pytest.raises(InvalidStatus) as info:
            ws_sync.connect(f"ws://127.0.0.1:{st2.port}/ws?topics=a&since={bad}",
                            open_timeout=5 * UNIT).__enter__()
        assert info.value.response.status_code == 400, bad
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws", open_timeout=5 * UNIT) as ws:
        ws.send(json.dumps({"type": "subscribe", "topic": "a", "since": 1}))
        assert json.loads(recv(ws))["code"] == "no_history"


def test_history_window_reports_the_gap(redis_server, serve_thread):
    # MAXLEN ~ 1 trims whole stream nodes (100 entries): after 350 messages
    # the oldest are gone; a client resuming from 0 is told how many it lost.
    broker = RedisBroker(redis_server.url, history=1, wrap=envelope)
    st = _push_thread(serve_thread, broker)

    async def many():
        for i in range(350):
            await st.server.publish("w", f"m{i + 1}")

    st.call(many)
    kept = st.call(broker.history, "w", 0)
    assert 1 <= len(kept) < 350 and kept[-1] == (350, "m350")
    first = kept[0][0]
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=w&since=0", open_timeout=5 * UNIT) as ws:
        assert json.loads(recv(ws)) == {"type": "gap", "topic": "w", "lost": first - 1}
        ids = [json.loads(recv(ws))["id"] for _ in range(len(kept))]
        assert ids == list(range(first, 351))


class SlowLinkBroker(RedisBroker):
    """A broker whose subscribe connection is read late (a busy process):
    live messages wait in the socket while history reads return at once."""

    async def _reader(self, node, link):
        read = link.read_response

        async def late(*args, **kwargs):
            await asyncio.sleep(0.003)
            return await read(*args, **kwargs)

        link.read_response = late
        await super()._reader(node, link)


@pytest.mark.parametrize("link", ["normal", "slow"])
def test_resume_switch_over_has_no_gap_and_no_duplicate(redis_server, serve_thread, push_procs, link):
    """Publishes keep coming from another process while clients resume:
    every resuming client sees exactly the ids after its ``since``, in order
    (with a slow link, live copies of messages already sent from the history
    are still in flight when the history has been read)."""
    cls = SlowLinkBroker if link == "slow" else RedisBroker
    broker = cls(redis_server.url, history=10_000, wrap=envelope)
    st = _push_thread(serve_thread, broker)
    publisher = push_procs("--redis", redis_server.url, "--history", "10000")
    total = 400
    done = threading.Event()

    def publish_all():
        conn = http.client.HTTPConnection("127.0.0.1", publisher.port, timeout=10 * UNIT)
        for i in range(1, total + 1):
            conn.request("POST", "/publish/s", body=f"m{i}".encode())
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
        conn.close()
        done.set()

    thread = threading.Thread(target=publish_all, daemon=True)
    thread.start()
    results = []
    try:
        for since in (0, 5, 50, 120):
            while broker_counter(redis_server, "s") < since + 10 and not done.is_set():
                time.sleep(0.01)
            ws = ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=s&since={since}",
                                 open_timeout=5 * UNIT).__enter__()
            results.append((since, ws))
        thread.join(60 * UNIT)
        assert done.is_set()
        for since, ws in results:
            ids = [json.loads(recv(ws))["id"] for _ in range(total - since)]
            assert ids == list(range(since + 1, total + 1)), since
            nothing(ws, 0.2)
    finally:
        for _, ws in results:
            ws.close()


def broker_counter(redis_server, topic) -> int:
    reply = redis_server.command("GET", f"fastws:seq:{topic}")
    if reply.startswith(b"$-1"):
        return 0
    return int(reply.split(b"\r\n")[1])


def test_resume_while_redis_is_down_closes_1013(redis_server, serve_thread):
    broker = RedisBroker(redis_server.url, history=10, wrap=envelope, reconnect_min=5.0, reconnect_max=5.0)
    st = _push_thread(serve_thread, broker)
    redis_server.stop()
    assert wait_for(lambda: not broker.connected)
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=a&since=1", open_timeout=5 * UNIT) as ws:
        with pytest.raises(ConnectionClosed) as info:
            recv(ws)
        assert info.value.rcvd.code == 1013
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws", open_timeout=5 * UNIT) as ws:
        ws.send(json.dumps({"type": "subscribe", "topic": "a", "since": 1}))
        assert json.loads(recv(ws))["code"] == "unavailable"


def test_skip_reason_names_redis_server(monkeypatch):
    import redis_util

    monkeypatch.setattr(redis_util, "REDIS_SERVER", "no-such-redis-server")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("FASTWS_REQUIRE_REDIS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-redis-server"):
        redis_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_or_skip()


def test_resume_with_the_handler_api(redis_server, serve_thread):
    """broker.resume on an ``async def handler(ws)`` connection (the default
    send is the synchronous send of both API levels)."""
    broker = RedisBroker(redis_server.url, history=50)

    async def handler(ws):
        since = int(ws.path.rpartition("=")[2])
        result = await ws.server.broker.resume(ws, "hx", since)
        await ws.send(f"resumed {result.replayed} {result.lost} {result.last}")
        async for _ in ws:
            pass

    st = serve_thread(handler, broker=broker)
    for i in range(1, 4):
        st.call(st.server.publish, "hx", f"h{i}")
    with ws_sync.connect(f"ws://127.0.0.1:{st.port}/?since=1", open_timeout=5 * UNIT) as ws:
        assert [recv(ws) for _ in range(3)] == ["h2", "h3", "resumed 2 0 3"]
        assert wait_for(lambda: st.call(st.server.subscribers, "hx") == 1)
        st.call(st.server.publish, "hx", b"live")
        assert recv(ws) == b"live"
    assert broker.stats()["replayed"] == 2
