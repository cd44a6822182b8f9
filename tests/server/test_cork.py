"""Bursts: cork / publish_many coalesce the frames of many publishes into one
write per subscriber (fastws/pubsub.py, *Bursts*), on fake connections with
both fan-out loops and end to end with ``websockets`` clients; the
slow-consumer policy still holds with cork."""
from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from websockets.sync.client import connect

import fastws
from fastws import pubsub
from fastws._py.frames import build_frame
from fastws.options import Options

from test_pubsub import FakeConn, _raw_subscriber, _read_frames, _wait, handler
from util import UNIT


@pytest.fixture
def topics(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    return pubsub.Topics(Options(write_limit=2**16, slow_consumer_limit=2**17))


def f(data):
    return build_frame(1 if isinstance(data, str) else 2, data.encode() if isinstance(data, str) else data)


def test_cork_one_write_per_subscriber(topics):
    conns = [FakeConn(str(i)) for i in range(5)]
    for c in conns:
        topics.subscribe(c, "t")
    topics.cork()
    assert topics.publish("t", "a") == 5  # queued for 5
    assert topics.publish("t", b"bb") == 5
    assert topics.publish("t", "ccc") == 5
    assert all(c.out == [] for c in conns)  # nothing written yet
    topics.uncork()
    joined = f("a") + f(b"bb") + f("ccc")
    for c in conns:
        assert c.out == [joined]
    assert conns[0].out[0] is conns[1].out[0]  # encode once: the same bytes object for everyone
    assert topics.stats["deliveries"] == 15 and topics.stats["corked_writes"] == 5
    assert topics.stats["publishes"] == 3
    # uncorked again: a publish is written at once
    topics.publish("t", "now")
    assert conns[0].out[-1] == f("now")


def test_runs_keep_the_order_across_topics(topics):
    both, only_a = FakeConn("both"), FakeConn("a")
    topics.subscribe(both, "A")
    topics.subscribe(both, "B")
    topics.subscribe(only_a, "A")
    topics.cork()
    for topic, data in (("A", "a1"), ("A", "a2"), ("B", "b1"), ("A", "a3"), ("nobody", "x")):
        topics.publish(topic, data)
    topics.uncork()
    assert both.out == [f("a1") + f("a2"), f("b1"), f("a3")]
    assert only_a.out == [f("a1") + f("a2"), f("a3")]


def test_membership_changes_flush_first(topics):
    old, new = FakeConn("old"), FakeConn("new")
    topics.subscribe(old, "t")
    topics.cork()
    topics.publish("t", "before")
    topics.subscribe(new, "t")  # must not get "before"
    topics.publish("t", "after")
    topics.unsubscribe(old, "t")  # got "after" (published while subscribed)
    topics.publish("t", "later")
    topics.uncork()
    assert old.out == [f("before"), f("after")]
    assert new.out == [f("after"), f("later")]  # the unsubscribe flushed "after"


def test_broadcast_inside_cork_keeps_the_order(topics):
    a = FakeConn("a")
    topics.subscribe(a, "t")
    with contextlib.ExitStack():
        topics.cork()
        topics.publish("t", "1")
        topics.broadcast([a], "all")
        topics.publish("t", "2")
        topics.uncork()
    assert a.out == [f("1"), f("all"), f("2")]


def test_nested_cork_and_errors(topics):
    a = FakeConn("a")
    topics.subscribe(a, "t")
    topics.cork()
    topics.cork()
    topics.publish("t", "x")
    topics.uncork()
    assert a.out == []  # still corked once
    topics.flush()      # explicit flush while corked
    assert a.out == [f("x")]
    topics.uncork()
    with pytest.raises(RuntimeError):
        topics.uncork()


def test_cork_limit_bounds_each_write(topics):
    a = FakeConn("a")
    topics.subscribe(a, "t")
    payload = b"x" * 1000
    frame = f(payload)
    topics.cork()
    for _ in range(200):  # 200 KB in one cork, write_limit 64 KiB
        topics.publish("t", payload)
    topics.uncork()
    assert b"".join(a.out) == frame * 200
    assert len(a.out) > 1 and all(len(w) < 2**16 + len(frame) for w in a.out)


def test_cork_slow_consumer_drop_counts_every_message(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    t = pubsub.Topics(Options(slow_consumer="drop", slow_consumer_limit=2**17))
    ok, slow = FakeConn("ok"), FakeConn("slow", buffered=2**17 + 1)
    t.subscribe(ok, "t")
    t.subscribe(slow, "t")
    t.cork()
    for i in range(7):
        t.publish("t", str(i))
    t.uncork()
    assert slow.out == [] and len(ok.out) == 1
    assert t.stats["slow_consumer_drops"] == 7 and t.stats["deliveries"] == 7


def test_cork_slow_consumer_close(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    t = pubsub.Topics(Options())
    ok, slow = FakeConn("ok"), FakeConn("slow", buffered=2**20 + 1)
    t.subscribe(ok, "t")
    t.subscribe(slow, "t")
    t.cork()
    t.publish("t", "1")
    t.publish("t", "2")
    t.uncork()
    assert slow.aborted and slow.sent_close_code == 1013 and t.subscribers("t") == 1
    assert t.stats["slow_consumer_closes"] == 1


def test_cork_until_next_iteration(topics):
    a = FakeConn("a")
    topics.subscribe(a, "t")

    async def burst():
        loop = asyncio.get_running_loop()
        for i in range(3):
            topics.cork_until_next_iteration(loop)
            topics.publish("t", str(i))
        assert a.out == []
        await asyncio.sleep(0)
        return list(a.out)

    assert asyncio.run(burst()) == [f("0") + f("1") + f("2")]
    assert topics._corked == 0


# ---------------------------------------------------------------- end to end
def test_publish_many_end_to_end(serve_thread, impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)

    class Sub(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            ws.subscribe("burst")

    st = serve_thread(Sub)
    url = f"ws://127.0.0.1:{st.port}"
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(url)) for _ in range(5)]
        assert _wait(lambda: st.call(st.server.subscribers, "burst") == 5)
        messages = [f"m{i}" if i % 3 else f"m{i}".encode() for i in range(100)]
        assert st.call(st.server.publish_many, "burst", messages) == 500

        def cork_block():
            with st.server.cork():
                for i in range(10):
                    st.server.publish("burst", f"c{i}")
            return None

        st.call(cork_block)
        for ws in clients:
            assert [ws.recv(5 * UNIT) for _ in range(110)] == messages + [f"c{i}" for i in range(10)]
        stats = st.call(lambda: dict(st.server.stats))
        assert stats["deliveries"] == 550 and stats["corked_writes"] == 10  # one write per client per burst


@pytest.mark.parametrize("policy", ["close", "drop"])
def test_slow_consumer_flood_with_cork(serve_thread, impl, monkeypatch, policy):
    """As tests/test_pubsub.py::test_slow_consumer_flood, publishing in corked
    bursts of 10 (40 KB, under the limit): the slow subscriber's buffer stays under the limit plus one
    corked write (at most write_limit plus one frame); the others get all."""
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    write_limit, limit, size, count, fast_n, burst = 2**14, 2**16, 4096, 1500, 3, 10
    st = serve_thread(handler, write_limit=write_limit, slow_consumer=policy, slow_consumer_limit=limit)
    server = st.server
    url = f"ws://127.0.0.1:{st.port}"
    slow_sock, slow_buf = _raw_subscriber(st.port, "flood")
    stack = contextlib.ExitStack()
    fast = [stack.enter_context(connect(url, max_size=None)) for _ in range(fast_n)]
    for ws in fast:
        ws.send("sub:flood")
        assert ws.recv(5) == "ok flood"
    assert _wait(lambda: st.call(server.subscribers, "flood") == fast_n + 1)
    slow_conn = st.call(lambda: next(c for c in server.connections if c.path == "/slow"))
    got = [[] for _ in fast]

    def reader(i):
        for msg in fast[i]:
            if msg == "end":
                return
            got[i].append(int(msg[:8]))

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(fast_n)]
    for t in threads:
        t.start()

    async def flood():
        peak = 0
        fast_conns = [c for c in server.connections if c.path != "/slow"]
        pad = "x" * (size - 8)
        for start in range(0, count, burst):
            server.publish_many("flood", [f"{i:08d}" + pad for i in range(start, min(count, start + burst))])
            if slow_conn._transport is not None and not slow_conn._transport.is_closing():
                peak = max(peak, slow_conn._write_buffer_size())
            while any(c._paused_writing for c in fast_conns):
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
        server.publish("flood", "end")
        return peak

    peak = st.call(flood)
    for t in threads:
        t.join(30 * UNIT)
    frame_len = size + 4
    assert 0 < peak <= limit + write_limit + frame_len
    for i in range(fast_n):
        assert got[i] == list(range(count))
    stats = st.call(lambda: dict(server.stats))
    if policy == "close":
        assert stats["slow_consumer_closes"] == 1
        assert _wait(lambda: st.call(lambda: slow_conn not in server.connections))
        frames, closed = _read_frames(slow_sock, slow_buf)
        assert closed
        seqs = [int(p[:8]) for op, p in frames if op == 1 and p[:1].isdigit()]
        assert len(seqs) < count and seqs == list(range(len(seqs)))
    else:
        assert stats["slow_consumer_drops"] > 0
        frames, closed = _read_frames(slow_sock, slow_buf)
        assert not closed
        seqs = [int(p[:8]) for op, p in frames if op == 1 and p[:1].isdigit()]
        ends = sum(1 for op, p in frames if p == b"end")
        assert len(seqs) + ends == count + 1 - stats["slow_consumer_drops"]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    slow_sock.close()
    stack.close()
