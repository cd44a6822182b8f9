"""Reconnecting clients (issue #17): ``async for ws in fastws.connect(url)`` and
``for ws in fastws.syncclient.connect_forever(url)``.

A real fastws server that the test stops and restarts on the same port,
websockets servers answering 503 then 101 and 403, a TLS server with an
untrusted certificate. The backoff delays go to a fake sleep injected into
the reconnect loop: nothing waits for them in wall time.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import threading

import pytest
import uvloop
from websockets.asyncio.server import serve as ws_serve

import fastws
from fastws.exceptions import ConfigError
from fastws.syncclient import TRANSIENT_CLOSE_CODES, Backoff, connect_forever, is_transient, retry_after
from fastws.syncclient import connect as sync_connect

from cliutil import Command
from util import arun

INITIAL, MAXIMUM, FACTOR, JITTER = 0.5, 30.0, 1.6, 0.25


async def closing_echo(ws):
    """Echo; "close N" closes with code N, "abort" drops TCP (1006)."""
    async for m in ws:
        if isinstance(m, str) and m.startswith("close "):
            await ws.close(int(m.split()[1]))
            return
        if m == "abort":
            ws._abort_transport()
            return
        await ws.send(m)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A fastws server in a thread that can be stopped and started again on
    the same port."""

    def __init__(self, port: int, **options):
        self.port, self.options = port, options
        self.loop = self.server = self.thread = None

    def serve_options(self) -> dict:
        return {"app": closing_echo, **self.options}

    def started(self, server) -> None:
        pass

    def start(self):
        ready = threading.Event()
        self.loop = uvloop.new_event_loop()
        errors = []

        def main():
            asyncio.set_event_loop(self.loop)

            async def start():
                options = self.serve_options()
                self.server = await fastws.serve(options.pop("app"), "127.0.0.1", self.port, **options)
                self.started(self.server)
            try:
                self.loop.run_until_complete(start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.close()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self):
        if self.thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(2), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.thread = None


@pytest.fixture
def server():
    s = Server(free_port()).start()
    yield s
    s.stop()


def check_delays(delays, start_attempt=0):
    """Each delay within (1 - jitter, 1] of its base; bases grow by FACTOR up to MAXIMUM."""
    for i, d in enumerate(delays):
        base = min(MAXIMUM, INITIAL * FACTOR ** (start_attempt + i))
        assert (1 - JITTER) * base - 1e-9 <= d <= base + 1e-9, (i, d, base)
        assert d <= MAXIMUM
    for a, b in zip(delays, delays[1:]):
        if b < (1 - JITTER) * MAXIMUM:  # below the cap: strictly growing
            assert b > a


# ------------------------------------------------------------------ the policy

def test_backoff_grows_and_is_bounded():
    b = Backoff(INITIAL, MAXIMUM, FACTOR, JITTER)
    delays = [b.next() for _ in range(40)]
    check_delays(delays)
    assert max(delays) <= MAXIMUM and delays[-1] >= (1 - JITTER) * MAXIMUM
    b.reset()
    assert b.next() <= INITIAL
    fixed = Backoff(1.0, 4.0, 2.0, 0.0)
    assert [fixed.next() for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    for bad in (dict(initial=0), dict(initial=5, maximum=1), dict(factor=0.5), dict(jitter=1)):
        with pytest.raises(ConfigError):
            Backoff(**bad)


def test_is_transient():
    assert is_transient(ConnectionRefusedError())
    assert is_transient(ConnectionResetError())
    assert is_transient(asyncio.TimeoutError())
    assert is_transient(fastws.InvalidStatus(503)) and is_transient(fastws.InvalidStatus(429))
    assert not is_transient(fastws.InvalidStatus(403)) and not is_transient(fastws.InvalidStatus(404))
    assert is_transient(fastws.InvalidResponse("connection closed during the opening handshake: EOF"))
    assert is_transient(fastws.InvalidResponse("no complete handshake response within 10 s"))
    assert not is_transient(fastws.InvalidResponse("bad Sec-WebSocket-Accept"))
    assert not is_transient(ssl.SSLCertVerificationError())
    assert not is_transient(fastws.InvalidURI("x"))
    assert not is_transient(socket.gaierror(socket.EAI_NONAME, "unknown"))
    for code in (1001, 1006, 1011, 1012, 1013):
        assert is_transient(fastws.ConnectionClosed(code))
    for code in (1000, 1002, 1008, 4001):
        assert not is_transient(fastws.ConnectionClosed(code))
    assert TRANSIENT_CLOSE_CODES == {1001, 1006, 1011, 1012, 1013}


# ------------------------------------------------------------------ async client

def fake_sleep(delays, on_sleep=None):
    async def sleep(d):
        delays.append(d)
        if on_sleep is not None:
            await on_sleep(len(delays))
        await asyncio.sleep(0)
    return sleep


def test_async_reconnects_after_server_restart(server):
    """Connection 1: the server shuts down (1001); two attempts are refused;
    the server comes back on the same port; connection 2 gets every message;
    then transient closes (1012, 1006) reconnect and a client close ends the loop."""
    delays = []

    async def on_sleep(n):
        if n == 3:  # after the loss and two refused attempts
            await asyncio.to_thread(server.start)

    async def main():
        c = fastws.connect(f"ws://127.0.0.1:{server.port}", max_size=None)
        c._sleep = fake_sleep(delays, on_sleep)
        seen = []
        async for ws in c:
            seen.append(ws)
            n = len(seen)
            try:
                await ws.send(f"hello {n}")
                assert await ws.recv() == f"hello {n}"
                if n == 1:
                    await asyncio.to_thread(server.stop)
                    await ws.recv()
                elif n == 2:
                    await ws.send("close 1012")
                    await ws.recv()
                elif n == 3:
                    await ws.send("abort")
                    await ws.recv()
                else:
                    await ws.close()
            except fastws.ConnectionClosed:
                continue
        assert len(seen) == 4
        assert [ws.close_code for ws in seen[:2]] == [1001, 1012]
        assert seen[3].close_code == 1000
        return delays

    arun(main(), 30)
    # loss, refused, refused (server back) / after 1012 / after 1006: from INITIAL each time
    assert len(delays) == 5
    check_delays(delays[:3])
    check_delays(delays[3:4])
    check_delays(delays[4:5])


def test_async_non_transient_close_raises_and_1000_ends(server):
    async def main():
        c = fastws.connect(f"ws://127.0.0.1:{server.port}")
        delays = []
        c._sleep = fake_sleep(delays)
        with pytest.raises(fastws.ConnectionClosed) as info:
            async for ws in c:
                await ws.send("close 1008")
                with pytest.raises(fastws.ConnectionClosed):
                    await ws.recv()
        assert info.value.code == 1008 and delays == []
        count = 0
        async for ws in c:
            count += 1
            await ws.send("close 1000")
            async for _ in ws:
                pass
        assert count == 1 and delays == []
        # The body falling through with the connection open: closed, replaced at once.
        opened = []
        async for ws in c:
            opened.append(ws)
            if len(opened) == 3:
                await ws.close()
        assert [ws.close_code for ws in opened] == [1000, 1000, 1000] and delays == []
    arun(main())


def test_async_503_then_101():
    attempts = []

    def process_request(connection, request):
        attempts.append(1)
        if len(attempts) <= 4:
            return connection.respond(503, "busy\n")
        return None

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    async def main():
        async with ws_serve(echo, "127.0.0.1", 0, process_request=process_request) as s:
            port = s.sockets[0].getsockname()[1]
            delays = []
            c = fastws.connect(f"ws://127.0.0.1:{port}")
            c._sleep = fake_sleep(delays)
            async for ws in c:
                await ws.send("made it")
                assert await ws.recv() == "made it"
                await ws.close()
            return delays

    delays = arun(main())
    assert len(attempts) == 5 and len(delays) == 4
    check_delays(delays)


def test_async_403_raises_at_once():
    def process_request(connection, request):
        return connection.respond(403, "no\n")

    async def main():
        async with ws_serve(lambda ws: None, "127.0.0.1", 0, process_request=process_request) as s:
            port = s.sockets[0].getsockname()[1]
            delays = []
            c = fastws.connect(f"ws://127.0.0.1:{port}")
            c._sleep = fake_sleep(delays)
            with pytest.raises(fastws.InvalidStatus) as info:
                async for ws in c:
                    pytest.fail("no connection expected")
            assert info.value.status == 403 and delays == []
    arun(main())


def test_async_refused_forever_is_bounded():
    """No server at all: attempts go on, delays grow to backoff_max and stay there."""
    port = free_port()

    class Enough(Exception):
        pass

    async def main():
        delays = []

        async def stop_after(n):
            if n == 25:
                raise Enough

        c = fastws.connect(f"ws://127.0.0.1:{port}", backoff_max=MAXIMUM)
        c._sleep = fake_sleep(delays, stop_after)
        with pytest.raises(Enough):
            async for ws in c:
                pytest.fail("no server")
        return delays

    delays = arun(main())
    check_delays(delays)
    assert max(delays) <= MAXIMUM and min(delays[-5:]) >= (1 - JITTER) * MAXIMUM


def test_async_tls_verification_failure_raises_at_once(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)

    async def main():
        server = await fastws.serve(closing_echo, "127.0.0.1", 0, ssl=ctx)
        try:
            delays = []
            c = fastws.connect(f"wss://127.0.0.1:{server.port}")  # default context: CA unknown
            c._sleep = fake_sleep(delays)
            with pytest.raises(ssl.SSLCertVerificationError):
                async for ws in c:
                    pytest.fail("untrusted certificate accepted")
            assert delays == []
        finally:
            await server.shutdown(1)
    arun(main())


def test_async_await_and_async_with_unchanged(server):
    async def main():
        ws = await fastws.connect(f"ws://127.0.0.1:{server.port}")
        await ws.send("a")
        assert await ws.recv() == "a"
        await ws.close()
        async with fastws.connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send("b")
            assert await ws.recv() == "b"
        assert ws.close_code == 1000
    arun(main())


# ------------------------------------------------------------------ sync client

def test_sync_connect_forever_after_server_restart(server):
    delays = []

    def sleep(d):
        delays.append(d)
        if len(delays) == 3:
            server.start()

    seen = []
    for ws in connect_forever(f"ws://127.0.0.1:{server.port}", sleep=sleep, timeout=5):
        seen.append(ws)
        n = len(seen)
        try:
            ws.send(f"hello {n}")
            assert ws.recv(timeout=5) == f"hello {n}"
            if n == 1:
                server.stop()
                ws.recv(timeout=5)
            elif n == 2:
                ws.send("close 1013")
                ws.recv(timeout=5)
            elif n == 3:
                ws.send("abort")
                ws.recv(timeout=5)
            else:
                ws.close()
        except fastws.ConnectionClosed:
            continue
    assert len(seen) == 4
    assert [ws.close_code for ws in seen] == [1001, 1013, 1006, 1000]
    assert len(delays) == 5
    check_delays(delays[:3])
    check_delays(delays[3:4])
    check_delays(delays[4:5])


def test_sync_non_transient_and_http_statuses(server):
    delays = []
    url = f"ws://127.0.0.1:{server.port}"
    with pytest.raises(fastws.ConnectionClosed) as info:
        for ws in connect_forever(url, sleep=delays.append, timeout=5):
            ws.send("close 4001")
            with pytest.raises(fastws.ConnectionClosed):
                ws.recv(timeout=5)
    assert info.value.code == 4001 and delays == []
    # Leaving the loop with break closes the connection once the generator is closed.
    gen = connect_forever(url, sleep=delays.append, timeout=5)
    for ws in gen:
        break
    gen.close()
    assert ws.closed and ws.sent_code == 1000

    attempts = []

    def process_request(connection, request):
        attempts.append(1)
        if len(attempts) <= 3:
            return connection.respond(503 if len(attempts) < 3 else 429, "later\n")
        if len(attempts) == 5:
            return connection.respond(403, "no\n")
        return None

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    ready = threading.Event()
    state = {}

    async def serve():
        state["stop"] = asyncio.Event()
        async with ws_serve(echo, "127.0.0.1", 0, process_request=process_request) as s:
            state["port"] = s.sockets[0].getsockname()[1]
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()

    t = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        delays = []
        with pytest.raises(fastws.InvalidStatus) as info:
            for ws in connect_forever(f"ws://127.0.0.1:{state['port']}", sleep=delays.append, timeout=5):
                ws.send("once")
                assert ws.recv(timeout=5) == "once"
                ws.abort()  # 1006: reconnect, and the 5th attempt gets 403
        assert info.value.status == 403
        assert len(attempts) == 5 and len(delays) == 4
        check_delays(delays[:3])
        check_delays(delays[3:])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        t.join(10)


# ------------------------------------------------------------------ fastws push: resume

class PushServer(Server):
    """``fastws push --redis URL --history 100`` in a thread (restartable)."""

    def __init__(self, port, redis_url):
        super().__init__(port)
        self.redis_url = redis_url

    def serve_options(self):
        from fastws.apps.push import envelope, push_app
        from fastws.broker import RedisBroker

        self.service, options = push_app()
        self.broker = RedisBroker(self.redis_url, history=100, wrap=envelope, reconnect_min=0.05,
                                  reconnect_max=0.2)
        return {**options, "broker": self.broker, "ping_interval": None}

    def started(self, server):
        self.service.attach(server)

    def call(self, fn, *args):
        async def run():
            return await fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def subscribers(self, topic):
        async def count():
            return self.server.subscribers(topic)
        return self.call(count)


@pytest.fixture
def redis_server(tmp_path):
    from redis_util import RedisServer

    r = RedisServer(tmp_path).start()
    yield r
    r.stop()


def test_push_subscriber_resumes_without_gap_or_duplicate(redis_server):
    """Two push servers on one Redis: the client's server A is stopped, B
    publishes meanwhile, A comes back on the same port, the client resumes
    with since=<last id> per topic: every message once, in order."""
    from fastws.client import PushSubscriber

    a = PushServer(free_port(), redis_server.url).start()
    b = PushServer(free_port(), redis_server.url).start()
    published = {"t1": [], "t2": []}

    def publish(topic, n):
        for _ in range(n):
            i = len(published[topic]) + 1
            data = f"{topic}-{i}"
            result = b.call(b.server.publish, topic, data)
            assert result.id == i
            published[topic].append(data)

    try:
        async def wait_subscribed(topics):
            while not all(a.subscribers(t) for t in topics):
                await asyncio.sleep(0.01)

        async def on_sleep(n):
            if n == 1:  # disconnected: what is published now is missed, then resumed
                await asyncio.to_thread(publish, "t1", 3)
                await asyncio.to_thread(publish, "t2", 2)
                await asyncio.to_thread(a.start)

        async def main():
            delays = []
            sub = PushSubscriber(f"ws://127.0.0.1:{a.port}/ws", ["t1", "t2"])
            sub._connect._sleep = fake_sleep(delays, on_sleep)
            got = {"t1": [], "t2": []}
            ids = {"t1": [], "t2": []}
            stopped = False
            async for msg in sub:
                assert msg["type"] == "message", msg
                got[msg["topic"]].append(msg["data"])
                ids[msg["topic"]].append(msg["id"])
                total = len(got["t1"]) + len(got["t2"])
                if total == 3 and not stopped:
                    stopped = True
                    await asyncio.to_thread(a.stop)
                if total == 12:
                    break
                if total == 8:  # resumed: live ones again, while a resume of t2 may still run
                    await wait_subscribed(["t1", "t2"])
                    await asyncio.to_thread(publish, "t1", 2)
                    await asyncio.to_thread(publish, "t2", 2)
            return sub, got, ids, delays

        async def run():
            task = asyncio.ensure_future(main())
            # wait until A has both subscriptions of the first connection, then publish
            while not (a.subscribers("t1") and a.subscribers("t2")):
                await asyncio.sleep(0.01)
            await asyncio.to_thread(publish, "t1", 2)
            await asyncio.to_thread(publish, "t2", 1)
            return await task

        sub, got, ids, delays = arun(run(), 60)
        assert got == published
        assert ids == {t: list(range(1, len(published[t]) + 1)) for t in published}
        assert sub.connections == 2 and sub.last == {"t1": 7, "t2": 5}
        assert len(delays) == 1 and delays[0] <= INITIAL
    finally:
        a.stop()
        b.stop()


def test_push_subscriber_needs_history(serve_thread):
    """Without --history: a resume is refused (no_history), a live message has no id."""
    from fastws.apps.push import push_app
    from fastws.client import PushError, PushSubscriber

    service, options = push_app()
    st = serve_thread(**options)
    service.attach(st.server)

    async def main():
        with pytest.raises(PushError) as info:
            async for _ in PushSubscriber(f"ws://127.0.0.1:{st.port}/ws", ["n"], since=3):
                pass
        assert info.value.error["code"] == "no_history"

        sub = PushSubscriber(f"ws://127.0.0.1:{st.port}/ws", ["n"])
        messages = sub.__aiter__()
        task = asyncio.ensure_future(messages.__anext__())
        while not await asyncio.to_thread(st.call, st.server.subscribers, "n"):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(st.call, st.server.publish, "n", "raw body")
        with pytest.raises(PushError, match="history"):
            await task
        await messages.aclose()
        assert sub.ws.closed
    arun(main())


def test_push_subscriber_retries_while_redis_is_away(redis_server):
    """The resume finds Redis away ("unavailable"): the client closes with
    1013 and tries again after a backoff delay; once Redis is back it gets
    what was published meanwhile."""
    from fastws.client import PushSubscriber

    a = PushServer(free_port(), redis_server.url).start()

    async def until(cond):
        while not await asyncio.to_thread(cond):
            await asyncio.sleep(0.02)

    try:
        async def on_sleep(n):
            if n == 1:  # lost; Redis goes away before the resume
                await asyncio.to_thread(redis_server.stop)
                await until(lambda: not a.broker.connected)
            elif n == 2:  # the resume was refused: Redis back, a message meanwhile
                await asyncio.to_thread(redis_server.start)
                await until(lambda: a.broker.connected)
                await asyncio.to_thread(a.call, a.server.publish, "r", "after")

        async def main():
            delays = []
            sub = PushSubscriber(f"ws://127.0.0.1:{a.port}/ws", ["r"])
            sub._connect._sleep = fake_sleep(delays, on_sleep)
            messages = sub.__aiter__()
            task = asyncio.ensure_future(messages.__anext__())
            await until(lambda: a.subscribers("r"))
            sub.ws._abort_transport()  # the connection is lost (1006) before any message
            got = await task
            await messages.aclose()
            return sub, got, delays

        sub, got, delays = arun(main(), 60)
        # Nothing of "r" had arrived: resumed from 0 (Redis, restarted without
        # persistence, numbers from 1 again), it gets what was published while away.
        assert (got["id"], got["data"]) == (1, "after")
        assert sub.connections == 3 and len(delays) == 2
    finally:
        a.stop()


# ------------------------------------------------------------------ Retry-After

def test_retry_after_header():
    assert retry_after(fastws.InvalidStatus(503, [("Retry-After", "7")])) == 7.0
    assert retry_after(fastws.InvalidStatus(429, [("retry-after", " 0 ")])) == 0.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # RFC 9110's example: an HTTP-date
    assert retry_after(fastws.InvalidStatus(503, [("Retry-After", date)]), now=lambda: 1445412470.0) == 10.0
    assert retry_after(fastws.InvalidStatus(503, [("Retry-After", date)]), now=lambda: 1445412490.0) == 0.0
    for headers in ([], [("Retry-After", "soon")], [("Retry-After", "-3")], [("Retry-After", "1.5")],
                    [("Retry-After", "Wed, 21 Oct 2015 07:28:00")]):
        assert retry_after(fastws.InvalidStatus(503, headers)) is None, headers
    assert retry_after(fastws.InvalidStatus(403, [("Retry-After", "7")])) is None
    assert retry_after(fastws.InvalidStatus(500, [("Retry-After", "7")])) is None
    assert retry_after(ConnectionRefusedError()) is None
    b = Backoff(INITIAL, MAXIMUM, FACTOR, JITTER)
    for _ in range(5):  # backoff delays up to 3.3 s: the Retry-After decides
        assert 5.0 <= b.next(5.0) <= 5.0 * (1 + JITTER)  # never earlier than asked, spread above it
    for _ in range(20):  # backoff delays past 5 s: they decide
        assert b.next(5.0) >= 5.0
    assert b.next(100.0) == MAXIMUM  # bounded by backoff_max
    b.reset()
    assert b.next(0.0) <= INITIAL  # below the backoff delay: the backoff delay


def _refusing_servers():
    """(name, url, stop): a fastws server refusing a second connection with
    429 + Retry-After: 5 (limit_connections_per_ip=1), and `fastws echo
    --limit-connections 1` refusing it with 503 + Retry-After: 5."""
    s = Server(free_port(), limit_connections_per_ip=1).start()
    yield "429", f"ws://127.0.0.1:{s.port}", s.stop
    cmd = Command("echo", "--port", "0", "--limit-connections", "1", "--log-level", "warning")
    yield "503", f"ws://127.0.0.1:{cmd.port}", cmd.stop


def test_reconnect_loops_honour_retry_after():
    """The second connection is refused (429 or 503, Retry-After: 5) while a
    first one holds the server's only slot; both reconnect loops wait at
    least 5 s (at most backoff_max) before trying again, then get in once
    the slot is free."""
    for status, url, stop in _refusing_servers():
        try:
            for backoff_max, low, high in ((MAXIMUM, 5.0, 5.0 * (1 + JITTER)), (2.0, 2.0, 2.0)):
                holder = sync_connect(url, timeout=5)
                delays = []

                async def on_sleep(n):
                    if n == 1:
                        await asyncio.to_thread(holder.close)

                async def main():
                    c = fastws.connect(url, backoff_max=backoff_max)
                    c._sleep = fake_sleep(delays, on_sleep)
                    async for ws in c:
                        await ws.send("in")
                        assert await ws.recv() == "in"
                        await ws.close()
                arun(main())
                assert delays and all(low <= d <= high for d in delays), (status, backoff_max, delays)

                holder = sync_connect(url, timeout=5)
                delays = []

                def sleep(d):
                    delays.append(d)
                    holder.close()
                for ws in connect_forever(url, sleep=sleep, timeout=5, backoff_max=backoff_max):
                    ws.send("in")
                    assert ws.recv(timeout=5) == "in"
                    ws.close()
                assert delays and all(low <= d <= high for d in delays), (status, backoff_max, delays)
        finally:
            stop()
