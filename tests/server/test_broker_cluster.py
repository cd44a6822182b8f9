"""The Redis broker on a real Redis Cluster (fastws/broker.py, fastws/redis_cluster.py).

Each test that needs a cluster starts six Debian redis-servers (three
masters, three replicas) on free loopback ports in a temp dir, joined with
``redis-cli --cluster create``, and stops them by PID (tests/redis_util.py).
Servers are ``fastws push --redis redis+cluster://...`` subprocesses and an
in-process server whose broker counters can be read; clients are the
third-party ``websockets`` library. The failover test kills a master with
SIGKILL while publishes keep coming; it takes about 10 s (the cluster's
failure detection and election, with cluster-node-timeout 1000 ms).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import time

import pytest
import websockets.sync.client as ws_sync

from fastws.apps.push import envelope, push_app
from fastws.broker import RedisBroker
from fastws.exceptions import BrokerError, BrokerUnavailable, ConfigError, NotReplicated
from fastws.redis_cluster import parse_cluster_url, read_shards, tag_ok, topic_slot
from redis_util import RedisCluster, RedisServer
from test_broker import post, push_procs, recv  # noqa: F401 (push_procs: a fixture)
from util import UNIT, wait_until


@pytest.fixture
def cluster(tmp_path):
    c = RedisCluster(tmp_path).start()
    yield c
    c.stop()


def shard_topics(cluster, n_per=1):
    """{master port: [topics whose slot it serves]}: one topic per shard."""
    out = {}
    i = 0
    while len(out) < 3 or any(len(v) < n_per for v in out.values()):
        topic = f"t{i}"
        i += 1
        owner = cluster.owner(f"fastws:{{{topic}}}:seq")
        if len(out.get(owner.port, ())) < n_per:
            out.setdefault(owner.port, []).append(topic)
    return out


def spublish_calls(node) -> int:
    for line in node.cli("INFO", "commandstats").split():
        if line.startswith("cmdstat_spublish:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def shardnumsub(node, topic) -> int:
    reply = node.cli("PUBSUB", "SHARDNUMSUB", f"fastws:{{{topic}}}:c").split()
    return int(reply[1])


class LateBroker(RedisBroker):
    """A process slow to notice a failover: it reads the cluster's topology
    only while ``go`` is set."""

    go = None

    async def _refresh(self):
        if not self.go.is_set():
            raise BrokerUnavailable("held back by the test")
        await super()._refresh()


def _push_thread(serve_thread, broker):
    service, options = push_app()
    st = serve_thread(**options, broker=broker, ping_interval=None)
    service.attach(st.server)
    return st


# ---------------------------------------------------------------- no Redis needed
def test_cluster_url_and_keys():
    url = parse_cluster_url("redis+cluster://u:secret@10.0.0.1:7000,10.0.0.2:7001")
    assert url.seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert url.node_url("10.0.0.3", 7002) == "redis://u:secret@10.0.0.3:7002/0"
    assert parse_cluster_url("rediss+cluster://h:1/").node_url("h", 2) == "rediss://h:2/0"
    for bad in ("redis+cluster://h", "redis+cluster://h:1/3", "redis+cluster://h:x", "redis+cluster://",
                "redis+cluster://h:1,", "redis+cluster://h:1?db=2"):
        with pytest.raises(ConfigError):
            RedisBroker(bad)
    with pytest.raises(ConfigError, match="prefix"):
        RedisBroker("redis+cluster://h:1", prefix="app{1}:")
    with pytest.raises(ConfigError, match="wait_replicas"):
        RedisBroker("redis://h", wait_replicas=-1)
    broker = RedisBroker("redis+cluster://u:secret@h:1")
    assert "secret" not in repr(broker) and "secret" not in broker.safe_url
    # a topic's keys and channel share its hash tag
    assert broker._keys("news") == [b"fastws:{news}:seq", b"fastws:{news}:h", b"fastws:{news}:c"]
    assert broker._topic_of(b"fastws:{a}b}:c") == "a}b" and topic_slot("a}b") == topic_slot("a")
    assert not tag_ok("") and not tag_ok("}x") and tag_ok("x}") and tag_ok("{")
    # CLUSTER SHARDS as RESP2 flat lists (redis-py gives dicts): a failed master is no master
    node = [b"id", b"x", b"port", 7000, b"ip", b"10.0.0.1", b"endpoint", b"10.0.0.1", b"role", b"master",
            b"replication-offset", 5, b"health", b"online"]
    failed = [b"port", 7001, b"ip", b"10.0.0.2", b"endpoint", b"?", b"role", b"master", b"health", b"fail"]
    replica = [b"port", 7002, b"ip", b"10.0.0.3", b"endpoint", b"10.0.0.3", b"role", b"replica", b"health", b"loading"]
    shards = [[b"slots", [0, 5, 9, 9], b"nodes", [node]], [b"slots", [6, 8], b"nodes", [failed, replica]]]
    assert read_shards(shards) == [
        ([(0, 5), (9, 9)], ("10.0.0.1", 7000), [("10.0.0.1", 7000)]),
        ([(6, 8)], None, [("10.0.0.2", 7001), ("10.0.0.3", 7002)])]


def test_wait_replicas_without_a_replica_raises_not_replicated(tmp_path, serve_thread):
    """WAIT on a Redis with no replica: the message is published (delivered,
    in the history) but NotReplicated says no replica has it; the push app
    answers 504 with the id."""
    redis = RedisServer(tmp_path).start()
    try:
        broker = RedisBroker(redis.url, history=10, wait_replicas=1, wait_timeout=0.05)
        st = _push_thread(serve_thread, broker)
        with ws_sync.connect(f"ws://127.0.0.1:{st.port}/ws?topics=w", open_timeout=5 * UNIT) as ws:
            wait_until(lambda: broker.stats()["topics"] == 1 and broker.connected)
            with pytest.raises(NotReplicated) as info:
                st.call(st.server.publish, "w", "one")
            assert info.value.published.id == 1 and info.value.acked == 0 and isinstance(info.value, BrokerError)
            assert recv(ws) == "one"
            status, body, _ = post(st.port, "w", b"two")
            assert status == 504 and body["id"] == 2, (status, body)
            assert recv(ws) == "two"
        assert st.call(broker.history, "w", 0) == [(1, "one"), (2, "two")]
        assert broker.stats()["not_replicated"] == 2 and broker.stats()["publish_failures"] == 0
    finally:
        redis.stop()


def test_cluster_url_to_a_plain_redis_or_nothing(tmp_path, serve_thread, caplog):
    """A cluster URL that reaches no node, or a Redis without cluster
    support: the server serves, publishes raise BrokerUnavailable, one
    WARNING says why."""
    from redis_util import free_port

    caplog.set_level(logging.INFO, logger="fastws.broker")
    nobody = RedisBroker(f"redis+cluster://127.0.0.1:{free_port()}", timeout=0.5)
    st = _push_thread(serve_thread, nobody)
    with pytest.raises(BrokerUnavailable, match="not connected"):
        st.call(st.server.publish, "t", "x")
    assert post(st.port, "t", b"x")[0] == 503
    redis = RedisServer(tmp_path).start()
    try:
        plain = RedisBroker(f"redis+cluster://127.0.0.1:{redis.port}", timeout=1)
        st = _push_thread(serve_thread, plain)
        with pytest.raises(BrokerUnavailable):
            st.call(st.server.publish, "t", "x")
        assert not plain.connected
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("cluster support disabled" in w for w in warnings), warnings
        assert sum(f":{redis.port}" in w for w in warnings) == 1, warnings
    finally:
        redis.stop()


# ---------------------------------------------------------------- a live cluster
def test_publish_goes_to_the_owning_shard_only(cluster, push_procs, serve_thread):
    by_master = shard_topics(cluster)
    topics = [t for ts in by_master.values() for t in ts]
    a = push_procs("--redis", cluster.url, "--history", "100")
    b = push_procs("--redis", cluster.url)
    masters = {n.port: n for n in cluster.masters()}
    # Redis's own KEYSLOT agrees with ours, for the counter, the stream and the channel
    for topic in topics + ["a}b", "x{y"]:
        for key in (f"fastws:{{{topic}}}:seq", f"fastws:{{{topic}}}:h", f"fastws:{{{topic}}}:c"):
            assert int(cluster.nodes[0].cli("CLUSTER", "KEYSLOT", key)) == topic_slot(topic), key
    with contextlib.ExitStack() as stack:
        wa = stack.enter_context(a.connect(f"?topics={','.join(topics)}"))
        wb = stack.enter_context(b.connect(f"?topics={','.join(topics)}"))
        # each process subscribed once, on the master that owns the topic, nowhere else
        for port, ts in by_master.items():
            for topic in ts:
                wait_until(lambda: shardnumsub(masters[port], topic) == 2)
                assert all(shardnumsub(m, topic) == 0 for p, m in masters.items() if p != port)
        before = {p: spublish_calls(m) for p, m in masters.items()}
        for port, ts in by_master.items():
            for k in range(3):
                status, body, _ = post(a.port if k % 2 else b.port, ts[0], f"{ts[0]}-{k}".encode())
                assert status == 200 and body["processes"] == 2, (status, body)
            after = {p: spublish_calls(m) for p, m in masters.items()}
            assert after[port] - before[port] == 3, (port, before, after)      # routed to one shard
            assert all(after[p] == before[p] for p in masters if p != port)  # not broadcast
            before = after
        got_a = [json.loads(recv(wa)) for _ in range(9)]
        got_b = [recv(wb) for _ in range(9)]
        assert [m["data"] for m in got_a] == got_b == [f"{t}-{k}" for t in topics for k in range(3)]
        assert [m["id"] for m in got_a] == [1, 2, 3] * 3
    for port, ts in by_master.items():  # the last subscribers left: unsubscribed on each shard
        wait_until(lambda: shardnumsub(masters[port], ts[0]) == 0)
    # a topic that has no hash tag is refused clearly, not a traceback
    broker = RedisBroker(cluster.url)
    st = _push_thread(serve_thread, broker)
    wait_until(lambda: broker.connected)
    with pytest.raises(BrokerError, match="hash tag"):
        st.call(st.server.publish, "}x", "nope")
    # a cluster node given as a single Redis: told to use a cluster URL
    port, ts = next(iter(by_master.items()))
    other = next(p for p in by_master if p != port)
    single = RedisBroker(f"redis://127.0.0.1:{other}/0")
    st = _push_thread(serve_thread, single)
    wait_until(lambda: single.connected)
    with pytest.raises(BrokerError, match="redis\\+cluster://") as info:
        st.call(st.server.publish, ts[0], "moved")
    assert not isinstance(info.value, BrokerUnavailable)


def test_failover_loses_no_acknowledged_publish(cluster, push_procs, serve_thread):
    """Kill one master while three fastws processes publish to a topic on
    each shard: that shard's publishes fail at once (503 / BrokerUnavailable)
    until its replica is promoted, the other shards keep going, then
    everything resumes; every acknowledged message reaches every client
    exactly once, in order, with no gap."""
    by_master = shard_topics(cluster)
    topics = [ts[0] for ts in by_master.values()]
    victim_port = next(iter(by_master))
    victim = next(n for n in cluster.nodes if n.port == victim_port)
    hit = by_master[victim_port][0]
    procs = [push_procs("--redis", cluster.url, "--history", "100000", "--wait-replicas", "1") for _ in range(2)]
    broker = LateBroker(cluster.url, history=100_000, wrap=envelope, wait_replicas=1)
    broker.go = threading.Event()
    broker.go.set()
    st = _push_thread(serve_thread, broker)
    ports = [p.port for p in procs] + [st.port]
    wait_until(lambda: broker.connected)

    clients = []
    with contextlib.ExitStack() as stack:
        for port in ports:
            for _ in range(2):
                clients.append(stack.enter_context(ws_sync.connect(  # read at the end: queue everything
                    f"ws://127.0.0.1:{port}/ws?topics={','.join(topics)}&since=0", open_timeout=5 * UNIT,
                    max_queue=None, ping_interval=None)))
        for topic in topics:
            wait_until(lambda: shardnumsub(cluster.owner(f"fastws:{{{topic}}}:seq"), topic) == 3)

        acked = {t: {} for t in topics}    # topic -> {id: data} answered 200
        refused = {t: [] for t in topics}  # topic -> [(time, status)] 503: not published
        unconfirmed = {t: {} for t in topics}  # topic -> {id: data} 504: published, no replica confirmed
        phase = {"killed": None, "stop": threading.Event()}

        def publisher(topic):
            conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10 * UNIT) for port in ports]
            k = 0
            while not phase["stop"].is_set():
                k += 1
                data = f"{topic}-{k}"
                conn = conns[k % len(conns)]
                try:
                    conn.request("POST", f"/publish/{topic}", body=data.encode())
                    resp = conn.getresponse()
                    body = resp.read()
                except OSError as exc:  # never expected: fastws answers even when Redis is away
                    refused[topic].append((time.monotonic(), repr(exc)))
                    continue
                if resp.status == 200:
                    acked[topic][json.loads(body)["id"]] = data
                elif resp.status == 504:
                    unconfirmed[topic][json.loads(body)["id"]] = data
                else:
                    assert resp.status == 503, (resp.status, body)
                    refused[topic].append((time.monotonic(), resp.status))
                time.sleep(0.002)  # pacing (a few hundred publishes per second per topic)
            for conn in conns:
                conn.close()

        threads = [threading.Thread(target=publisher, args=(t,), daemon=True) for t in topics]
        for th in threads:
            th.start()
        try:
            wait_until(lambda: all(len(acked[t]) >= 20 for t in topics))
            phase["killed"] = time.monotonic()
            broker.go.clear()  # the in-process server will notice the promotion late
            cluster.kill(victim)  # SIGKILL by PID, mid-stream
            # publishes to the dead shard's topic fail fast, the others go on
            wait_until(lambda: any(s == 503 for _, s in refused[hit]))
            with pytest.raises(BrokerUnavailable):  # the API's side of the 503 (promotion takes seconds)
                st.call(st.server.publish, hit, "direct")
            n_other = {t: len(acked[t]) for t in topics if t != hit}
            n_hit = len(acked[hit])
            wait_until(lambda: all(len(acked[t]) >= n + 20 for t, n in n_other.items()))
            # a replica is promoted, and the topic's publishes go through again
            wait_until(lambda: len(cluster.masters()) == 3, timeout=20)
            # The new master has no replica: WAIT 1 cannot be met (504, the
            # message is published but unconfirmed) until the old master is
            # back, as its replica. (Restarting it before the promotion would
            # bring it back as an empty master: no persistence here.)
            victim.start()
            wait_until(lambda: len(acked[hit]) >= n_hit + 30, timeout=20)
            # published meanwhile through the other processes: the late one
            # must fetch those from the history for its clients
            n_hit = len(acked[hit])
            broker.go.set()
            wait_until(lambda: broker.connected, timeout=10)
            wait_until(lambda: len(acked[hit]) >= n_hit + 30, timeout=20)
        finally:
            phase["stop"].set()
            for th in threads:
                th.join(30 * UNIT)
        assert victim.port not in {n.port for n in cluster.masters()}
        for t in topics:
            assert not [r for r in refused[t] if not isinstance(r[1], int)], refused[t]
            if t != hit:  # the other shards never refused a publish, and their replicas confirmed each
                assert refused[t] == [] and unconfirmed[t] == {}, (t, refused[t], unconfirmed[t])
        outage = [when for when, _ in refused[hit]]
        assert outage and phase["killed"] <= min(outage)
        assert max(acked[hit]) > max(unconfirmed[hit], default=0)  # confirmed again at the end

        # every client: every acknowledged message exactly once, ids in order and gap-free
        last = {t: max(acked[t]) for t in topics}
        for ws in clients:
            seen = {t: [] for t in topics}
            while any(not seen[t] or seen[t][-1][0] < last[t] for t in topics):
                msg = json.loads(recv(ws, 20))
                seen[msg["topic"]].append((msg["id"], msg["data"]))
            for t in topics:
                ids = [i for i, _ in seen[t]]
                assert ids == list(range(1, last[t] + 1)), (t, ids[:5], len(ids), last[t])
                got = dict(seen[t])
                for i, data in list(acked[t].items()) + list(unconfirmed[t].items()):
                    assert got[i] == data, (t, i, got[i], data)
    stats = broker.stats()
    assert stats["moved"] >= 1 and stats["connected"] and stats["recovered"] >= 30, stats
    assert stats["publish_failures"] >= 1 and stats["duplicates"] >= 0
    for p in procs:
        err = p.stop()
        assert "Traceback" not in err, err


def test_slot_migration_moves_the_subscription_without_a_gap(cluster, push_procs):
    """The slot of a topic moves to another master while a client listens
    through one process and another publishes: Redis unsubscribes the old
    link (sunsubscribe), the publisher's next publish gets MOVED and is
    retried on the new master, the listener re-subscribes there and fetches
    what it missed from the history."""
    topic = shard_topics(cluster)[cluster.masters()[0].port][0]
    key = f"fastws:{{{topic}}}:seq"
    a = push_procs("--redis", cluster.url, "--history", "100")
    b = push_procs("--redis", cluster.url, "--history", "100")
    src = cluster.owner(key)
    dst = next(m for m in cluster.masters() if m.port != src.port)
    with a.connect(f"?topics={topic}&since=0") as ws:
        wait_until(lambda: shardnumsub(src, topic) == 1)
        for k in range(1, 6):
            assert post(b.port, topic, f"m{k}".encode())[:2] == (200, {"id": k, "processes": 1})
        cluster.migrate_slot(key, dst)
        for k in range(6, 11):  # the first one meets MOVED, refreshes the slot map and is retried
            status, body, _ = post(b.port, topic, f"m{k}".encode())
            assert status == 200 and body["id"] == k, (status, body)
        got = [json.loads(recv(ws)) for _ in range(10)]
        assert [(m["id"], m["data"]) for m in got] == [(k, f"m{k}") for k in range(1, 11)]
        wait_until(lambda: shardnumsub(dst, topic) == 1)
        assert shardnumsub(src, topic) == 0
        assert post(b.port, topic, b"m11")[:2] == (200, {"id": 11, "processes": 1})
        assert json.loads(recv(ws))["id"] == 11
