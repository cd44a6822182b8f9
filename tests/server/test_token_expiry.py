"""Token expiry (issue #15): when ``ws.user["exp"]`` passes, the server calls
``on_token_expired(ws)`` (default: close 4001 "token expired"); if the
connection is still open with the same user, it waits ``token_refresh_grace``
seconds for ``ws.user`` to be replaced, then closes with 4001. All of it on
one timer-wheel entry per server (no timer or task per connection). Real
websockets clients, tokens made by PyJWT, a fine timer_tick so the waits are
short; every wait is for a condition."""
from __future__ import annotations

import asyncio
import time

import pytest
import websockets

import fastws
from fastws.codec import TimerEntry
from fastws.exceptions import CLOSE_TOKEN_EXPIRED
from util import UNIT, arun

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")

from fastws.auth import JWTAuth  # noqa: E402

SECRET = "expiry-secret-expiry-secret-expiry-secret"
TICK = 0.05


def token(ttl: int, **claims) -> str:
    """A token that expires in ttl - 1 to ttl seconds (PyJWT reads exp as a
    whole number of seconds)."""
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + ttl, **claims}, SECRET, algorithm="HS256")


def exp_of(tok: str) -> int:
    return jwt.decode(tok, SECRET, algorithms=["HS256"], options={"verify_exp": False})["exp"]


def headers(tok):
    return {"Authorization": f"Bearer {tok}"}


async def closed_code(c, timeout=5.0):
    """Read until the connection closes; the code the server sent."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout * UNIT):
            while True:
                await c.recv()
    return c.close_code


async def wait_for(predicate, timeout=5.0):
    async with asyncio.timeout(timeout * UNIT):
        while not predicate():
            await asyncio.sleep(TICK / 5)


async def echo(ws):
    async for message in ws:
        await ws.send(message)


class Echo(fastws.Listener):
    def on_message(self, data):
        self.ws.send(data)


@pytest.mark.parametrize("app", [echo, Echo], ids=["handler", "listener"])
def test_default_closes_4001_when_the_token_expires(app):
    async def main():
        async with fastws.serve(app, "127.0.0.1", 0, authenticate=JWTAuth(secret=SECRET),
                                timer_tick=TICK) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            tok = token(2)
            async with websockets.connect(url, additional_headers=headers(tok)) as short, \
                    websockets.connect(url, additional_headers=headers(token(300))) as long:
                await short.send("hi")
                assert await short.recv() == "hi"
                assert await closed_code(short) == CLOSE_TOKEN_EXPIRED
                assert short.close_reason == "token expired"
                assert time.time() >= exp_of(tok) - 0.02  # not before its exp
                await long.send("still here")
                assert await long.recv() == "still here"
                clock = server._token_clock
                assert isinstance(clock, TimerEntry) and clock.armed  # armed at the long token's exp

    arun(main())


def test_hook_then_grace_then_4001():
    expired = []

    def on_token_expired(ws):
        expired.append(ws.user["sub"])
        ws.send("please refresh")

    async def main():
        async with fastws.serve(Echo, "127.0.0.1", 0, authenticate=JWTAuth(secret=SECRET), timer_tick=TICK,
                                on_token_expired=on_token_expired, token_refresh_grace=0.5) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers=headers(token(2))) as c:
                assert await c.recv() == "please refresh"
                t0 = time.monotonic()
                await c.send("echo")
                assert await c.recv() == "echo"  # open during the grace period
                assert await closed_code(c) == CLOSE_TOKEN_EXPIRED
                assert time.monotonic() - t0 >= 0.3
        return expired

    assert arun(main()) == ["alice"]  # called once


def test_replacing_the_user_within_the_grace_keeps_the_connection():
    auth = JWTAuth(secret=SECRET)

    class Refreshing(fastws.Listener):
        def on_message(self, data):
            # The client's new token (the push app does this in its protocol).
            claims = jwt.decode(data, SECRET, algorithms=["HS256"])
            self.ws.server.set_user(self.ws, claims)
            self.ws.send("refreshed")

    def on_token_expired(ws):
        ws.send("refresh")

    async def main():
        async with fastws.serve(Refreshing, "127.0.0.1", 0, authenticate=auth, timer_tick=TICK,
                                on_token_expired=on_token_expired, token_refresh_grace=1.0) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers=headers(token(2))) as c:
                assert await c.recv() == "refresh"
                new = token(2)
                await c.send(new)
                assert await c.recv() == "refreshed"
                # The new token expires in turn: asked again, then closed without an answer.
                assert await c.recv() == "refresh"
                assert time.time() >= exp_of(new) - 0.02
                assert await closed_code(c) == CLOSE_TOKEN_EXPIRED

    arun(main())


def test_refreshing_before_expiry_moves_the_deadline():
    async def main():
        tok = token(2)
        async with fastws.serve(echo, "127.0.0.1", 0, authenticate=JWTAuth(secret=SECRET),
                                timer_tick=TICK) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers=headers(tok)) as c:
                (conn,) = server.connections
                conn.user = {"sub": "alice", "exp": time.time() + 300}  # a plain assignment too
                await wait_for(lambda: time.time() > exp_of(tok) + 0.3)
                await c.send("alive")
                assert await c.recv() == "alive"
                # set_user: the new exp counts at once, even when it is earlier.
                server.set_user(conn, {"sub": "alice", "exp": time.time() + 0.2})
                assert await closed_code(c) == CLOSE_TOKEN_EXPIRED

    arun(main())


def test_one_wheel_entry_for_all_connections_and_closed_ones_are_pruned():
    async def main():
        async with fastws.serve(echo, "127.0.0.1", 0, authenticate=JWTAuth(secret=SECRET),
                                timer_tick=TICK) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            clients = [await websockets.connect(url, additional_headers=headers(token(300 + i)))
                       for i in range(100)]
            clock = server._token_clock
            assert len(clock.heap) == len(clock.live) == 100
            assert clock.armed and server._driver.wheel is not None
            for c in clients:
                await c.close()
            await wait_for(lambda: not server.connections)
            assert not clock.live and len(clock.heap) <= 64  # rebuilt as they closed
            more = [await websockets.connect(url, additional_headers=headers(token(300)))
                    for _ in range(3)]
            assert len(clock.live) == 3
            for c in more:
                await c.close()

    arun(main())


def test_no_exp_no_tracking():
    async def main():
        auth = JWTAuth(secret=SECRET, require=())
        async with fastws.serve(echo, "127.0.0.1", 0, authenticate=auth, timer_tick=TICK) as server:
            tok = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers=headers(tok)) as c:
                await c.send("x")
                assert await c.recv() == "x"
                assert server._token_clock is None

    arun(main())


def test_a_failing_hook_closes_4001(caplog):
    def on_token_expired(ws):
        raise RuntimeError("boom")

    async def main():
        async with fastws.serve(echo, "127.0.0.1", 0, authenticate=JWTAuth(secret=SECRET), timer_tick=TICK,
                                on_token_expired=on_token_expired) as server:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/",
                                          additional_headers=headers(token(2))) as c:
                assert await closed_code(c) == CLOSE_TOKEN_EXPIRED

    arun(main())
    assert any("on_token_expired failed" in r.getMessage() for r in caplog.records)


def test_options_are_checked():
    with pytest.raises(fastws.ConfigError):
        fastws.Server(echo, token_refresh_grace=-1)
    with pytest.raises(fastws.ConfigError):
        fastws.Server(echo, on_token_expired="close")
    assert fastws.Server(echo, token_refresh_grace=None).token_refresh_grace is None
