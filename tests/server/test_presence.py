"""Presence (fastws/presence.py): ``server.presence(topic)``, join/leave
events, and the push app's ``GET /presence/<topic>``.

Without Redis: one in-process server. With Redis: ``fastws push --redis URL
--presence`` subprocesses against a real redis-server and against the real
six-node Redis Cluster (tests/redis_util.py), clients from the third-party
``websockets`` library with and without JWTs (PyJWT), one process killed
with SIGKILL (its members vanish within the TTL) and one stopped cleanly
(its members go at once). Redis's own INFO commandstats checks that a flood
of subscribers costs one script per topic, not one per connection.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse

import pytest
import websockets.sync.client as ws_sync

import fastws
from fastws.apps.push import push_app
from fastws.broker import RedisBroker
from fastws.exceptions import BrokerError, ConfigError
from fastws.presence import BATCH, MAX_IDENTITY, TOPICS, identity_of
from redis_util import RedisCluster, RedisServer
from test_broker import push_procs, recv, request  # noqa: F401 (push_procs: a fixture)
from util import UNIT, wait_until

jwt = pytest.importorskip("jwt")
SECRET = "presence-test-secret-0123456789abcdef"
TOKEN = "publish-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def token_for(sub, subs=("*",)):
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 300, "subs": list(subs), "pubs": ["*"]},
                      SECRET, algorithm="HS256")


def get(port, path, headers=None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * UNIT)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (json.loads(body) if body.startswith(b"{") else body)
    finally:
        conn.close()


def members(port, topic):
    status, body = get(port, f"/presence/{topic}", AUTH)
    assert status == 200, body
    assert body["total"] == len(body["members"])
    return sorted((m["user"] or "-") for m in body["members"]), body


def subscribe(ws, topic, presence=False):
    msg = {"type": "subscribe", "topic": topic}
    if presence:
        msg["presence"] = True
    ws.send(json.dumps(msg))
    while True:  # events may come first
        reply = json.loads(recv(ws))
        if reply.get("type") == "subscribed":
            return reply
        assert reply.get("type") == "presence", reply


def events(ws, until, timeout=10.0):
    """Presence events received on ``ws`` until ``until(joins, leaves)``."""
    joins, leaves = [], []
    deadline = time.monotonic() + timeout * UNIT
    while not until(joins, leaves):
        left = deadline - time.monotonic()
        assert left > 0, (joins, leaves)
        msg = json.loads(ws.recv(timeout=left))
        if msg.get("type") == "presence":
            joins += msg["join"]
            leaves += msg["leave"]
    return joins, leaves


# ---------------------------------------------------------------- no Redis
def test_identity_is_bounded():
    assert identity_of({"sub": "ann", "exp": 1}) == "ann"
    assert identity_of("bob") == "bob" and identity_of(7) == "7"
    assert identity_of(None) is None and identity_of(True) is None and identity_of({"x": 1}) is None
    assert identity_of("é" * (MAX_IDENTITY // 2)) is not None
    assert identity_of("é" * (MAX_IDENTITY // 2 + 1)) is None  # bytes of UTF-8, not characters
    assert identity_of(object()) is None


def test_broker_presence_options():
    for bad in (dict(presence=1), dict(presence_ttl=0.1), dict(presence_ttl=True), dict(presence_ttl=1e9)):
        with pytest.raises(ConfigError):
            RedisBroker("redis://127.0.0.1:1/0", **bad)
    broker = RedisBroker("redis+cluster://127.0.0.1:1", presence=True)
    assert broker.presence_keys("a.b") == [b"fastws:{a.b}:p", b"fastws:{a.b}:pn", b"fastws:{a.b}:c"]
    assert RedisBroker("redis://h/0").presence_keys("a") == [b"fastws:p:a", b"fastws:pn:a", b"fastws:c:a"]


def test_local_presence_and_events(serve_thread):
    """No broker: this process's subscribers, the identity from the
    authenticate hook, join/leave events batched per loop iteration."""
    def authenticate(request):
        query = urllib.parse.parse_qs(request.path.partition("?")[2])
        return query.get("user", [None])[0]

    service, options = push_app(presence=True, token=TOKEN)
    st = serve_thread(**options, authenticate=authenticate, ping_interval=None)
    service.attach(st.server)
    url = f"ws://127.0.0.1:{st.server.port}/ws"
    with ws_sync.connect(url + "?user=ann") as ann, ws_sync.connect(url) as anon:
        subscribe(ann, "room", presence=True)
        subscribe(anon, "room")
        joins, _ = events(ann, lambda j, l: any(x["user"] is None for x in j))
        result = st.call(st.server.presence, "room")
        assert result.total == 2 and sorted(m.user or "-" for m in result.members) == ["-", "ann"]
        assert {m.id for m in result.members} >= {j["id"] for j in joins}
        assert members(st.server.port, "room")[0] == ["-", "ann"]
        assert st.call(st.server.presence, "room", 1).total == 2
        assert len(st.call(st.server.presence, "room", 1).members) == 1
        anon_id = next(m.id for m in result.members if m.user is None)
        anon.send(json.dumps({"type": "unsubscribe", "topic": "room"}))
        _, leaves = events(ann, lambda j, l: anon_id in l)
        assert st.call(st.server.presence, "room").total == 1
        with ws_sync.connect(url + "?user=cat") as cat:
            subscribe(cat, "room")
            joins, _ = events(ann, lambda j, l: any(x["user"] == "cat" for x in j))
        events(ann, lambda j, l: len(l) == 1)  # cat closed
        # opting in needs presence on and goes with subscribe only
        ann.send(json.dumps({"type": "subscribe", "topic": "x", "presence": "yes"}))
        assert json.loads(recv(ann))["code"] == "bad_request"
        ann.send(json.dumps({"type": "subscribe", "topic": "x", "presence": True, "since": 0}))
        assert json.loads(recv(ann))["code"] == "bad_request"
        ann.send(json.dumps({"type": "unsubscribe", "topic": "x", "presence": True}))
        assert json.loads(recv(ann))["code"] == "bad_request"
    with pytest.raises(BrokerError):  # not subscribed: no events
        st.call(st.server.watch_presence, object(), "room")


def test_get_presence_refusals(serve_thread):
    """GET /presence/<topic>: behind the publish token; bad topics, a huge
    topic and a bad limit refused with a status, never a traceback."""
    service, options = push_app(presence=True, token=TOKEN)
    st = serve_thread(**options, ping_interval=None)
    service.attach(st.server)
    port = st.server.port
    assert get(port, "/presence/news")[0] == 401
    assert get(port, "/presence/news", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(port, "/presence/news", AUTH) == (200, {"topic": "news", "total": 0, "members": []})
    for bad in ("", "a%20b", "%FF", "a/b", "x" * 129, "{x}"):
        assert get(port, f"/presence/{bad}", AUTH)[0] == 400, bad
    status, _ = get(port, "/presence/" + "x" * 20000, AUTH)  # longer than the request line may be
    assert status in (400, 414, 431)
    for bad in ("-1", "x", "10001", "1&limit=2", "99999999999"):
        assert get(port, f"/presence/news?limit={bad}", AUTH)[0] == 400, bad
    assert request(port, "POST", "/presence/news")[0] == 405
    # without --presence there is no such resource
    service2, options2 = push_app(token=TOKEN)
    st2 = serve_thread(**options2, ping_interval=None)
    service2.attach(st2.server)
    assert get(st2.server.port, "/presence/news", AUTH)[0] == 404
    with ws_sync.connect(f"ws://127.0.0.1:{st2.server.port}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "topic": "news", "presence": True}))
        assert json.loads(recv(ws))["code"] == "no_presence"


# ---------------------------------------------------------------- a flood costs one script per topic
def evalsha_calls(redis, command="evalsha") -> int:
    for line in redis.cli("INFO", "commandstats").split():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


class _Fake:
    """A subscriber as the presence hooks see it (an id and ws.user)."""

    __slots__ = ("user",)

    def __init__(self, user):
        self.user = user


def test_flood_is_batched_and_refreshed_on_the_wheel(tmp_path):
    """5,000 subscriptions over 10 topics in one loop iteration: 5 script
    calls (BATCH fields each); each refresh: one call for the 10 topics
    (TOPICS per call), whatever the number of connections; a clean close
    removes every member."""
    redis = RedisServer(tmp_path).start()

    async def main():
        broker = RedisBroker(redis.url, presence=True, presence_ttl=1.5)
        server = await fastws.serve(fastws.Listener, "127.0.0.1", 0, broker=broker, timer_tick=0.05)
        presence = server._presence
        fakes = [_Fake(f"user{i}") for i in range(5000)]

        async def flushed():
            for _ in range(500):
                await asyncio.sleep(0.01)
                if not presence.pending and not presence._flushing:
                    return
            raise AssertionError("never flushed")

        presence.joined(fakes[0], "t0")  # the first call loads the scripts (NOSCRIPT, then again)
        await flushed()
        before = evalsha_calls(redis)
        for i, fake in enumerate(fakes):
            presence.joined(fake, f"t{i % 10}")
        await flushed()
        assert evalsha_calls(redis) - before == math.ceil(5000 / BATCH) == 5
        assert evalsha_calls(redis, "publish") == 0  # nobody watches: no event published
        result = await server.presence("t3", limit=10)
        assert result.total == 500 and len(result.members) == 10
        assert all(m.user.startswith("user") for m in result.members)
        # identities of any characters (the batch is one length-prefixed string)
        odd = ["zoë:12:x", 'a"b\nc', "1:", "\u2028 ", "x" * MAX_IDENTITY]
        odd_fakes = [_Fake(name) for name in odd]  # (alive: a member's id is its object's)
        for fake in odd_fakes:
            presence.joined(fake, "odd")
        await flushed()
        assert sorted(m.user for m in (await server.presence("odd")).members) == sorted(odd)
        # refreshes on the timer wheel: one script call each
        start = presence.counters["refreshes"]
        before = evalsha_calls(redis)
        deadline = time.monotonic() + 10 * UNIT
        while presence.counters["refreshes"] < start + 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        while presence._refreshing:
            await asyncio.sleep(0.01)
        # (no await from here: no refresh can start between the two readings)
        grown = evalsha_calls(redis) - before
        assert grown == math.ceil(10 / TOPICS) * (presence.counters["refreshes"] - start) >= 2, grown
        await server.shutdown()
        assert redis.cli("KEYS", "*").split() == []  # removed at once

    try:
        asyncio.run(main())
    finally:
        redis.stop()


# ---------------------------------------------------------------- several processes
def _fleet(push_procs, url, ttl="30"):
    """Three push processes: two with JWTs (identities), one without."""
    common = ("--redis", url, "--presence", "--presence-ttl", ttl, "--token", TOKEN, "--history", "100")
    a = push_procs(*common, "--jwt-secret", SECRET)
    b = push_procs(*common, "--jwt-secret", SECRET)
    c = push_procs(*common)
    return a, b, c


def _across_nodes(push_procs, url, topic="room"):
    a, b, c = _fleet(push_procs, url, ttl="3")
    with a.connect(f"?token={token_for('ann')}") as ann, \
            c.connect("") as watcher, \
            b.connect(f"?token={token_for('bob')}") as bob:
        subscribe(watcher, topic, presence=True)
        # events are published while some node has watchers: the opt-in reaches Redis in
        # the same script as the watcher's own entry
        assert wait_until(lambda: members(c.port, topic)[1]["total"] == 1)
        subscribe(ann, topic)
        subscribe(bob, topic)
        events(watcher, lambda j, l: {"ann", "bob"} <= {x["user"] for x in j})
        for proc in (a, b, c):  # every node sees every member, with identities
            assert wait_until(lambda: members(proc.port, topic)[0] == ["-", "ann", "bob"])
        # presence events take no message id: ids stay gap-free
        ids = []
        for body in ("one", "two"):
            status, reply, _ = post_json(c.port, topic, body)
            assert status == 200, reply
            ids.append(reply["id"])
            msg = json.loads(recv(ann))
            assert msg["type"] == "message" and msg["id"] == reply["id"]
        assert ids == [ids[0], ids[0] + 1]
        with b.connect(f"?token={token_for('cat')}") as cat:
            subscribe(cat, topic)
            joins, _ = events(watcher, lambda j, l: any(x["user"] == "cat" for x in j))
            cat_id = next(x["id"] for x in joins if x["user"] == "cat")
        events(watcher, lambda j, l: cat_id in l)  # it left
        ids.append(post_json(c.port, topic, "three")[1]["id"])
        assert ids[2] == ids[1] + 1
        assert json.loads(recv(ann))["id"] == ids[2]
        # a process killed with SIGKILL: its members vanish within the TTL (3 s);
        # a live node's refresh removes them and tells the watchers they left
        _, body = members(a.port, topic)
        bob_id = next(m["id"] for m in body["members"] if m["user"] == "bob")
        b.proc.kill()
        b.proc.wait()
        killed = time.monotonic()
        _, leaves = events(watcher, lambda j, l: bob_id in l, timeout=15)
        assert wait_until(lambda: members(a.port, topic)[0] == ["-", "ann"], timeout=10)
        assert time.monotonic() - killed < 3 + 2 + 2 * UNIT  # TTL + one refresh (a wheel tick late), slack
        # since= still gap-free across the presence events
        with a.connect(f"?topics={topic}&since={ids[0]}&token={token_for('ann')}") as late:
            got = [json.loads(recv(late))["id"] for _ in range(2)]
            assert got == ids[1:]
    return a, c


def post_json(port, topic, body):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * UNIT)
    try:
        conn.request("POST", f"/publish/{topic}", body=body, headers=AUTH)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), dict(resp.getheaders())
    finally:
        conn.close()


def test_presence_across_processes_single_redis(tmp_path, push_procs):
    redis = RedisServer(tmp_path).start()
    try:
        a, c = _across_nodes(push_procs, redis.url)
        # a clean stop removes its members at once (long before the TTL)
        with a.connect(f"?token={token_for('dan')}") as dan:
            subscribe(dan, "solo")
            assert wait_until(lambda: members(c.port, "solo")[0] == ["dan"])  # written soon after
            a.stop()
            assert wait_until(lambda: members(c.port, "solo")[0] == [], timeout=1.5)
        assert redis.cli("EXISTS", "fastws:p:solo").strip() == "0"
    finally:
        redis.stop()


def test_presence_survives_a_redis_restart(tmp_path, push_procs):
    """Redis restarted empty: the next refresh finds its node field missing
    and writes the members again; meanwhile GET /presence answers 503."""
    redis = RedisServer(tmp_path).start()
    try:
        p = push_procs("--redis", redis.url, "--presence", "--presence-ttl", "3", "--token", TOKEN)
        with p.connect("?topics=news") as ws:
            assert wait_until(lambda: members(p.port, "news")[1]["total"] == 1)
            redis.stop()
            assert wait_until(lambda: get(p.port, "/presence/news", AUTH)[0] == 503)
            redis.start()
            assert wait_until(lambda: get(p.port, "/presence/news", AUTH)[0] == 200
                              and members(p.port, "news")[1]["total"] == 1, timeout=15)
            ws.send(json.dumps({"type": "unsubscribe", "topic": "news"}))
            assert wait_until(lambda: members(p.port, "news")[1]["total"] == 0)
    finally:
        redis.stop()


def test_presence_across_processes_cluster(tmp_path, push_procs):
    cluster = RedisCluster(tmp_path).start()
    try:
        a, c = _across_nodes(push_procs, cluster.url, topic="lobby")
        owner = cluster.owner("fastws:{lobby}:p")
        assert owner.cli("HLEN", "fastws:{lobby}:p").strip() == "0"  # the clients closed: gone
        # topics of every master in one subscribe: written by one script per master (keys of
        # several slots of that master: allow-cross-slot-keys)
        topics = [f"room{i}" for i in range(12)]
        masters = {cluster.owner(f"fastws:{{{t}}}:p").port for t in topics}
        assert len(masters) == 3
        with a.connect(f"?token={token_for('dan')}") as dan:
            subscribe(dan, "lobby")
            dan.send(json.dumps({"type": "subscribe", "topics": topics}))
            assert sorted(json.loads(recv(dan))["topic"] for _ in topics) == sorted(topics)
            for topic in ["lobby", *topics]:
                assert wait_until(lambda: members(c.port, topic)[0] == ["dan"])  # written soon after
            assert owner.cli("HLEN", "fastws:{lobby}:p").strip() == "1"  # in the topic's slot
            a.stop()  # a clean stop: removed at once
            assert wait_until(lambda: owner.cli("EXISTS", "fastws:{lobby}:p").strip() == "0", timeout=1.5)
            for topic in topics:
                assert members(c.port, topic)[0] == []
    finally:
        cluster.stop()


def test_push_presence_needs_a_broker_with_presence(tmp_path, serve_thread):
    """push_app(presence=True) over a RedisBroker without presence=True:
    the opt-in is an error message and GET /presence a 502, never a
    traceback or a silently local answer."""
    redis = RedisServer(tmp_path).start()
    try:
        service, options = push_app(presence=True, token=TOKEN)
        st = serve_thread(**options, broker=RedisBroker(redis.url), ping_interval=None)
        service.attach(st.server)
        with ws_sync.connect(f"ws://127.0.0.1:{st.server.port}/ws") as ws:
            ws.send(json.dumps({"type": "subscribe", "topic": "news", "presence": True}))
            reply = json.loads(recv(ws))
            assert reply["code"] == "no_presence" and "presence=True" in reply["error"]
            assert st.call(st.server.subscribers, "news") == 0
        assert get(st.server.port, "/presence/news", AUTH)[0] == 502
    finally:
        redis.stop()


def test_cli_refuses_bad_presence_ttls():
    """--presence-ttl out of range, or under 3 wheel ticks: a one-line error, a non-zero exit."""
    import subprocess
    import sys

    for ttl, words in (("0.1", "0.5..3600"), ("1", "3 x timer_tick")):
        done = subprocess.run([sys.executable, "-m", "fastws", "push", "--port", "0", "--redis",
                               "redis://127.0.0.1:1/0", "--presence", "--presence-ttl", ttl],
                              capture_output=True, text=True, timeout=30 * UNIT)
        assert done.returncode != 0 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
