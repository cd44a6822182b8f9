"""Pub/sub: topics, publish, broadcast, and the slow-consumer policy (fastws/pubsub.py).

The fan-out loop runs in both implementations: on fake connections through
the ``impl`` fixture, and end to end (real server, real ``websockets``
clients) with ``fastws.pubsub.fanout`` set to each implementation's loop.
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time

import pytest
from websockets.sync.client import connect

import fastws
from fastws import pubsub
from fastws.exceptions import CLOSE_TRY_AGAIN_LATER, ConfigError
from fastws.options import Options
from fastws.constants import CLOSED, CLOSING, CONNECTING, OPEN
from fastws._py.frames import build_frame

from util import UNIT


# ---------------------------------------------------------------- fakes
class FakeConn:
    """What the fan-out touches on a connection, on a list instead of a transport."""

    __slots__ = ("_state", "_paused_writing", "_write", "buffered", "out", "fail", "aborted",
                 "sent_close_code", "name")

    def __init__(self, name="c", state=OPEN, buffered=0, limit=2**16, fail=False):
        self.name = name
        self._state = state
        self.buffered = buffered
        self._paused_writing = buffered > limit
        self.out = []
        self.fail = fail
        self.aborted = False
        self.sent_close_code = None
        self._write = self._do_write

    def _do_write(self, data):
        if self.fail:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        self.out.append(data)

    def _write_buffer_size(self):
        return self.buffered

    def _abort_transport(self):
        self.aborted = True
        self.buffered = 0

    remote_address = ("127.0.0.1", 1)

    def __repr__(self):
        return f"<FakeConn {self.name}>"


def test_fanout_writes_only_to_open_connections(impl):
    """The loop's OPEN is fastws.constants.OPEN in both builds."""
    conns = [FakeConn(str(state)) for state in (CONNECTING, OPEN, CLOSING, CLOSED)]
    for conn, state in zip(conns, (CONNECTING, OPEN, CLOSING, CLOSED)):
        conn._state = state
    assert impl.fanout(conns, b"f", 1 << 20, []) == 1
    assert [bool(c.out) for c in conns] == [False, True, False, False]


# ---------------------------------------------------------------- the loop, both implementations
@pytest.mark.parametrize("container", ["dict", "list", "set", "generator"])
def test_fanout_writes_the_same_object_to_every_open_connection(impl, container):
    conns = [FakeConn(str(i)) for i in range(10)]
    conns[3]._state = CONNECTING
    conns[4]._state = CLOSING
    conns[5]._state = CLOSED
    frame = build_frame(2, b"payload")
    arg = {"dict": lambda: dict.fromkeys(conns), "list": lambda: list(conns),
           "set": lambda: set(conns), "generator": lambda: (c for c in conns)}[container]()
    slow = []
    assert impl.fanout(arg, frame, 2**20, slow) == 7
    assert slow == []
    for i, c in enumerate(conns):
        if i in (3, 4, 5):
            assert c.out == []
        else:
            assert len(c.out) == 1 and c.out[0] is frame  # encode once: the very same bytes


def test_fanout_slow_consumer_check_only_when_paused(impl):
    limit = 1000
    healthy = FakeConn("healthy", buffered=10, limit=64)        # not paused: size never read
    healthy.buffered = 10**9                                     # (would be slow if it were read)
    paused_under = FakeConn("under", buffered=900, limit=64)     # paused, under the limit: written
    paused_at = FakeConn("at", buffered=1000, limit=64)          # exactly the limit: written
    paused_over = FakeConn("over", buffered=1001, limit=64)      # above: reported, not written
    conns = dict.fromkeys([healthy, paused_under, paused_at, paused_over])
    slow = []
    assert impl.fanout(conns, b"\x82\x01x", limit, slow) == 3
    assert slow == [paused_over]
    assert paused_over.out == [] and healthy.out == [b"\x82\x01x"]
    assert paused_under.out and paused_at.out


def test_fanout_never_raises_because_of_one_connection(impl):
    conns = [FakeConn("a"), FakeConn("broken", fail=True), FakeConn("b")]
    slow = []
    assert impl.fanout(conns, b"x", 2**20, slow) == 2
    assert conns[0].out == [b"x"] and conns[2].out == [b"x"]


class DictConn:
    """A connection-like object without __slots__: the loop's getattr path."""

    def __init__(self, state=OPEN):
        self._state = state
        self._paused_writing = False
        self.out = []
        self._write = self.out.append


class PropertyConn(FakeConn):
    """A subclass whose _state is a property: not a plain slot."""

    __slots__ = ()
    # reads say OPEN; writes go to the base class's slot (so the slot says otherwise)
    _state = property(lambda self: OPEN, lambda self, value: FakeConn._state.__set__(self, value))


def test_fanout_mixed_layouts(impl):
    a, b, c, d = FakeConn("a"), DictConn(), DictConn(state=CLOSED), FakeConn("d", state=CLOSING)
    e = FakeConn("e")
    del e._write  # unset slot: skipped, not a crash
    f = PropertyConn("f")
    f._state = CLOSED  # the slot says CLOSED, the property says OPEN: the property wins
    slow_paused = DictConn()
    slow_paused._paused_writing = True
    slow_paused._write_buffer_size = lambda: 10
    conns = [a, b, c, d, e, f, slow_paused, a, b, f]
    slow = []
    assert impl.fanout(conns, b"m", 1, slow) == 6
    assert slow == [slow_paused]
    assert a.out == [b"m", b"m"] and b.out == [b"m", b"m"] and f.out == [b"m", b"m"]
    assert c.out == [] and d.out == []


def test_fanout_empty(impl):
    assert impl.fanout({}, b"x", 1, []) == 0
    assert impl.fanout([], b"x", 1, []) == 0


def test_cython_fanout_is_compiled():
    try:
        from fastws_ext import fanout
    except ImportError:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise
        pytest.skip("extension not built")
    assert fanout.__file__.endswith((".so", ".pyd"))
    assert type(fanout.fanout).__name__ == "cython_function_or_method"


# ---------------------------------------------------------------- registry (Topics), both loops
@pytest.fixture
def topics(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    return pubsub.Topics(Options(slow_consumer_limit=2**16))


def test_subscribe_unsubscribe_forget(topics):
    a, b = FakeConn("a"), FakeConn("b")
    topics.subscribe(a, "x")
    topics.subscribe(a, "x")  # idempotent
    assert topics._of[a] == "x"  # one topic: the str itself, no set
    topics.subscribe(a, "y")
    assert topics._of[a] == {"x", "y"}
    topics.subscribe(b, "x")
    assert topics.subscribers("x") == 2 and topics.subscribers("y") == 1
    assert topics.topics() == {"x", "y"}
    assert topics.topics_of(a) == {"x", "y"} and topics.topics_of(b) == {"x"}
    assert topics.unsubscribe(a, "y") is True
    assert topics._of[a] == "x"  # back to a bare str
    assert topics.unsubscribe(a, "y") is False and topics.unsubscribe(a, "nope") is False
    assert topics.topics() == {"x"}  # an empty topic is deleted
    topics.forget(a)
    topics.forget(a)
    assert topics.subscribers("x") == 1 and a not in topics._of
    topics.forget(b)
    assert topics.topics() == frozenset() and topics._of == {} and topics._subs == {}
    assert not topics.any


def test_topic_must_be_str(topics):
    with pytest.raises(TypeError):
        topics.subscribe(FakeConn(), b"bytes")


def test_publish_counts(topics):
    a, b, c = FakeConn("a"), FakeConn("b"), FakeConn("c", state=CLOSING)
    for conn in (a, b, c):
        topics.subscribe(conn, "t")
    assert topics.publish("nobody", "x") == 0
    assert topics.publish("t", "héllo") == 2
    assert a.out == [build_frame(1, "héllo".encode())]  # text frame, unmasked
    assert topics.publish("t", b"\x00\x01") == 2
    assert b.out[-1] == build_frame(2, b"\x00\x01")      # binary frame
    assert topics.broadcast([a, c], b"all") == 1
    assert topics.stats == {"publishes": 4, "deliveries": 5, "slow_consumer_drops": 0, "slow_consumer_closes": 0,
                            "corked_writes": 0}


def test_slow_consumer_drop(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    t = pubsub.Topics(Options(slow_consumer="drop", slow_consumer_limit=2**17))
    ok, slow = FakeConn("ok"), FakeConn("slow", buffered=2**17 + 1)
    t.subscribe(ok, "t")
    t.subscribe(slow, "t")
    assert t.publish("t", b"m1") == 1
    assert slow.out == [] and not slow.aborted and t.subscribers("t") == 2
    slow.buffered = 0
    slow._paused_writing = False  # it read: back under the limit
    assert t.publish("t", b"m2") == 2
    assert slow.out == [build_frame(2, b"m2")]  # a gap, not a reordering
    assert t.stats["slow_consumer_drops"] == 1 and t.stats["slow_consumer_closes"] == 0


def test_slow_consumer_close(impl, monkeypatch):
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    t = pubsub.Topics(Options())  # default policy: close, 1 MiB
    ok, slow = FakeConn("ok"), FakeConn("slow", buffered=2**20 + 1)
    for topic in ("t", "u"):
        t.subscribe(ok, topic)
        t.subscribe(slow, topic)
    assert t.publish("t", b"m1") == 1
    assert slow.aborted and slow.sent_close_code == CLOSE_TRY_AGAIN_LATER == 1013
    assert slow._state == CLOSING and slow.buffered == 0  # memory released
    assert t.subscribers("t") == 1 and t.subscribers("u") == 1 and slow not in t._of
    assert t.publish("u", b"m2") == 1 and slow.out == []
    assert t.stats["slow_consumer_closes"] == 1


# ---------------------------------------------------------------- options
def test_options_defaults_and_validation():
    o = Options()
    assert o.slow_consumer == "close" and o.slow_consumer_limit == 2**20
    assert Options(slow_consumer="drop").slow_consumer == "drop"
    with pytest.raises(ConfigError):
        Options(slow_consumer="block")
    with pytest.raises(ConfigError):
        Options(slow_consumer_limit=0)
    with pytest.raises(ConfigError):
        Options(slow_consumer_limit=1.5)
    with pytest.raises(ConfigError):  # below write_limit: the check could not see it
        Options(write_limit=2**16, slow_consumer_limit=2**15)
    with pytest.raises(ConfigError):  # above the hard limit
        Options(max_write_buffer=2**20, slow_consumer_limit=2**21)
    with pytest.raises(ConfigError):  # validated when the server is made, before binding
        fastws.Server(fastws.Listener, slow_consumer="nope")


# ---------------------------------------------------------------- end to end
async def handler(ws):
    """sub:T / unsub:T / pub:T DATA / bpub:T DATA (binary) / bcast:DATA; replies ok / n=N."""
    async for msg in ws:
        await ws.send(_command(ws, msg))


class PubListener(fastws.Listener):
    """The same commands on the low-level API (publish inside on_message)."""

    def on_message(self, data):
        self.ws.send(_command(self.ws, data))


def _command(ws, msg):
    verb, _, rest = msg.partition(":")
    if verb == "sub":
        ws.subscribe(rest)
        return "ok " + ",".join(sorted(ws.topics))
    if verb == "unsub":
        ws.unsubscribe(rest)
        return "ok " + ",".join(sorted(ws.topics))
    if verb in ("pub", "bpub"):
        topic, _, data = rest.partition(" ")
        return f"n={ws.server.publish(topic, data if verb == 'pub' else data.encode())}"
    if verb == "bcast":
        return f"n={ws.server.broadcast(rest)}"
    return "?"


@pytest.fixture(params=["handler", "listener"])
def app(request):
    return handler if request.param == "handler" else PubListener


@pytest.fixture
def both_loops(impl, monkeypatch):
    """Run the server's fan-out on this implementation's loop."""
    impl.fanout  # skip if not built
    monkeypatch.setattr(pubsub, "fanout", impl.fanout)
    return impl


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout * UNIT
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_subscribe_publish_unsubscribe_close(serve_thread, app, both_loops):
    st = serve_thread(app)
    server = st.server
    url = f"ws://127.0.0.1:{st.port}"
    with connect(url) as a, connect(url) as b, connect(url) as c:
        assert st.call(server.publish, "news", "nobody yet") == 0
        a.send("sub:news"); assert a.recv(5) == "ok news"
        b.send("sub:news"); assert b.recv(5) == "ok news"
        b.send("sub:sport"); assert b.recv(5) == "ok news,sport"
        assert st.call(server.subscribers, "news") == 2
        assert st.call(server.topics) == {"news", "sport"}

        # text and binary, published from outside and from inside a handler
        assert st.call(server.publish, "news", "héllo") == 2
        assert a.recv(5) == "héllo" and b.recv(5) == "héllo"
        c.send("bpub:news raw"); assert c.recv(5) == "n=2"
        assert a.recv(5) == b"raw" and b.recv(5) == b"raw"
        a.send("pub:news from-a"); assert a.recv(5) == "from-a" and a.recv(5) == "n=2"
        assert b.recv(5) == "from-a"

        # unsubscribe
        a.send("unsub:news"); assert a.recv(5) == "ok "
        assert st.call(server.publish, "news", "only b") == 1
        assert b.recv(5) == "only b"

        # broadcast to every open connection
        assert st.call(server.broadcast, b"all") == 3
        assert a.recv(5) == b"all" and b.recv(5) == b"all" and c.recv(5) == b"all"
        c.send("bcast:again"); assert c.recv(5) == "again" and c.recv(5) == "n=3"
        assert a.recv(5) == "again" and b.recv(5) == "again"

        # a closed connection leaves every topic
        b.close()
        assert _wait(lambda: st.call(server.subscribers, "news") == 0)
        assert st.call(server.topics) == frozenset()
        assert st.call(lambda: dict(server._topics._of)) == {}
        assert st.call(server.publish, "news", "x") == 0
        stats = st.call(lambda: dict(server.stats))
        assert stats["publishes"] == 8 and stats["deliveries"] == 13
        assert stats["slow_consumer_drops"] == stats["slow_consumer_closes"] == 0


def test_subscribe_after_close_raises(serve_thread, both_loops):
    seen = {}

    class L(fastws.Listener):
        def on_close(self, code, reason):
            try:
                self.ws.subscribe("late")
            except fastws.ConnectionClosed as exc:
                seen["exc"] = exc

    st = serve_thread(L)
    with connect(f"ws://127.0.0.1:{st.port}"):
        pass
    assert _wait(lambda: "exc" in seen)
    assert st.call(st.server.topics) == frozenset()


# ---------------------------------------------------------------- the slow consumer from the issue
def _raw_subscriber(port, topic, rcvbuf=4096):
    """A subscriber that will stop reading: a tiny receive buffer, set before connect."""
    import base64

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10 * UNIT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    buf = buf.partition(b"\r\n\r\n")[2]
    sock.sendall(build_frame(1, f"sub:{topic}".encode(), mask_key=os.urandom(4)))
    return sock, buf


def _read_frames(sock, buf):
    """Every complete frame until EOF or timeout: [(opcode, payload)], closed_by_server."""
    frames = []
    closed = False
    sock.settimeout(2 * UNIT)
    while True:
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            frames.append((b0 & 0x0F, buf[off:off + n]))
            buf = buf[off + n:]
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, socket.timeout) as exc:
            closed = isinstance(exc, ConnectionResetError)
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    return frames, closed


@pytest.mark.parametrize("policy", ["close", "drop"])
def test_slow_consumer_flood(serve_thread, both_loops, policy):
    write_limit, limit, size, count, fast_n = 2**14, 2**16, 4096, 1500, 3
    st = serve_thread(handler, write_limit=write_limit, slow_consumer=policy, slow_consumer_limit=limit)
    server = st.server
    url = f"ws://127.0.0.1:{st.port}"

    slow_sock, slow_buf = _raw_subscriber(st.port, "flood")
    stack = contextlib.ExitStack()
    fast = [stack.enter_context(connect(url, max_size=None)) for _ in range(fast_n)]
    for ws in fast:
        ws.send("sub:flood"); assert ws.recv(5) == "ok flood"
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
        # A well-behaved publisher: it never blocks on anyone, but lets the
        # healthy subscribers' buffers drain, so only the one that stopped
        # reading can fall behind.
        import asyncio

        peak = 0
        fast_conns = [c for c in server.connections if c.path != "/slow"]
        pad = "x" * (size - 8)
        for i in range(count):
            server.publish("flood", f"{i:08d}" + pad)
            if slow_conn._transport is not None and not slow_conn._transport.is_closing():
                peak = max(peak, slow_conn._write_buffer_size())
            while any(c._paused_writing for c in fast_conns):
                await asyncio.sleep(0.001)
            if i % 50 == 0:
                await asyncio.sleep(0)
        server.publish("flood", "end")
        return peak

    peak = st.call(flood)
    for t in threads:
        t.join(30 * UNIT)
    frame_len = size + 4  # 16-bit length header
    # Server memory stays bounded: never more than the limit plus one frame queued.
    assert 0 < peak <= limit + frame_len
    for i in range(fast_n):  # everyone else got everything, in order
        assert got[i] == list(range(count))
    stats = st.call(lambda: dict(server.stats))
    assert stats["publishes"] == count + 1

    if policy == "close":
        assert stats["slow_consumer_closes"] == 1 and stats["slow_consumer_drops"] == 0
        assert _wait(lambda: st.call(lambda: slow_conn not in server.connections))
        assert slow_conn.sent_close_code == 1013 and slow_conn._transport.get_write_buffer_size() == 0
        assert st.call(server.subscribers, "flood") == fast_n
        frames, closed = _read_frames(slow_sock, slow_buf)
        assert closed  # cut off (TCP reset or EOF), it does not hang
        seqs = [int(p[:8]) for op, p in frames if op == 1 and p[:1].isdigit()]
        assert len(seqs) < count and seqs == list(range(len(seqs)))  # a prefix, then nothing
    else:
        assert stats["slow_consumer_closes"] == 0 and stats["slow_consumer_drops"] > 0
        assert st.call(server.subscribers, "flood") == fast_n + 1
        assert slow_conn in st.call(lambda: set(server.connections))
        frames, closed = _read_frames(slow_sock, slow_buf)  # it reads again: what it was given
        assert not closed
        seqs = [int(p[:8]) for op, p in frames if op == 1 and p[:1].isdigit()]
        ends = sum(1 for op, p in frames if p == b"end")
        assert len(seqs) + ends == count + 1 - stats["slow_consumer_drops"]  # misses exactly the drops
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # gaps, no reordering
        assert all(len(p) == size for op, p in frames if op == 1 and p[:1].isdigit())
        assert stats["deliveries"] == fast_n * (count + 1) + len(seqs) + ends
    slow_sock.close()
    stack.close()
