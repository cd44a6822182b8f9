"""The ``authorize(ws, topic, action)`` hook (issue #15): ``ws.subscribe``
raises ``Forbidden`` (a PermissionError) when it says no, ``publish_as``
checks "publish", ``server.publish`` is not checked; the hook runs on
subscribe only, never per delivered message; with a ``JWTAuth`` and no
hook, the token's ``subs``/``pubs`` claims decide. Both API levels, real
websockets clients, tokens made by PyJWT; and the access log's redaction
of ``?token=``."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import websockets

import fastws
from fastws.exceptions import ConfigError, Forbidden
from util import arun

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")

from fastws.auth import JWTAuth  # noqa: E402

SECRET = "authz-secret-authz-secret-authz-secret"


def token(**claims) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")


def url(server, path="/ws"):
    return f"ws://127.0.0.1:{server.port}{path}"


class Calls:
    """An authorize hook that allows topics starting with "ok" and counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, ws, topic, action):
        self.calls.append((topic, action))
        return topic.startswith("ok")


async def subscribing_handler(ws):
    """Subscribes to each topic it is sent; answers "subscribed" or the error."""
    async for message in ws:
        cmd, _, topic = message.partition(" ")
        try:
            if cmd == "sub":
                ws.subscribe(topic)
            elif cmd == "pub":
                ws.server.publish_as(ws, topic, f"from client: {topic}")
            await ws.send(f"ok {cmd} {topic}")
        except PermissionError as exc:
            assert isinstance(exc, Forbidden)
            await ws.send(f"forbidden {exc.action} {exc.topic}")


class SubscribingListener(fastws.Listener):
    def on_message(self, data):
        cmd, _, topic = data.partition(" ")
        try:
            if cmd == "sub":
                self.ws.subscribe(topic)
            elif cmd == "pub":
                self.ws.server.publish_as(self.ws, topic, f"from client: {topic}")
            self.ws.send(f"ok {cmd} {topic}")
        except Forbidden as exc:
            self.ws.send(f"forbidden {exc.action} {exc.topic}")


@pytest.mark.parametrize("app", [subscribing_handler, SubscribingListener], ids=["handler", "listener"])
def test_authorize_refuses_subscribe_and_publish_as(app):
    hook = Calls()

    async def main():
        async with fastws.serve(app, "127.0.0.1", 0, authorize=hook) as server:
            async with websockets.connect(url(server)) as c:
                await c.send("sub ok.a")
                assert await c.recv() == "ok sub ok.a"
                await c.send("sub secret")
                assert await c.recv() == "forbidden subscribe secret"
                assert server.subscribers("secret") == 0 and server.subscribers("ok.a") == 1
                await c.send("pub secret")
                assert await c.recv() == "forbidden publish secret"
                await c.send("pub ok.a")  # it is subscribed to ok.a: gets its own publish
                assert await c.recv() == "from client: ok.a"
                assert await c.recv() == "ok pub ok.a"
                # Server-side code is trusted: publish is not checked.
                assert server.publish("secret", "x") == 0
                n = len(hook.calls)
                for i in range(200):
                    server.publish("ok.a", f"m{i}")
                for i in range(200):
                    assert await c.recv() == f"m{i}"
                assert len(hook.calls) == n, "the hook ran per delivered message"
        return hook.calls

    calls = arun(main())
    assert calls == [("ok.a", "subscribe"), ("secret", "subscribe"), ("secret", "publish"),
                     ("ok.a", "publish")]


def test_no_hook_no_check():
    async def main():
        async with fastws.serve(subscribing_handler, "127.0.0.1", 0) as server:
            assert server.authorize is None
            async with websockets.connect(url(server)) as c:
                await c.send("sub anything")
                assert await c.recv() == "ok sub anything"
                await c.send("pub anything")
                assert await c.recv() == "from client: anything"

    arun(main())


def test_authorize_must_be_callable():
    with pytest.raises(ConfigError):
        fastws.Server(subscribing_handler, authorize="yes")


def test_may():
    async def handler(ws):
        await ws.send(json.dumps([ws.may("ok.1", "subscribe"), ws.may("no", "publish")]))

    async def main():
        async with fastws.serve(handler, "127.0.0.1", 0, authorize=Calls()) as server:
            async with websockets.connect(url(server)) as c:
                return json.loads(await c.recv())

    assert arun(main()) == [True, False]


@pytest.mark.parametrize("app", [subscribing_handler, SubscribingListener], ids=["handler", "listener"])
def test_jwt_claims_are_the_default_authorize(app):
    auth = JWTAuth(secret=SECRET)

    async def main():
        async with fastws.serve(app, "127.0.0.1", 0, authenticate=auth) as server:
            assert server.authorize == auth.authorize_topic
            tok = token(subs=["news.*", "user.alice"], pubs="user.alice")
            async with websockets.connect(url(server), additional_headers={"Authorization": f"Bearer {tok}"}) as c:
                for msg, answer in [("sub news.eu", "ok sub news.eu"), ("sub user.alice", "ok sub user.alice"),
                                    ("sub news", "forbidden subscribe news"),
                                    ("sub user.bob", "forbidden subscribe user.bob"),
                                    ("pub news.eu", "forbidden publish news.eu")]:
                    await c.send(msg)
                    assert await c.recv() == answer
                await c.send("pub user.alice")
                assert await c.recv() == "from client: user.alice"
                assert await c.recv() == "ok pub user.alice"
            # A token without the claims may do nothing with topics.
            async with websockets.connect(url(server), additional_headers={
                    "Authorization": f"Bearer {token()}"}) as c:
                await c.send("sub news.eu")
                assert await c.recv() == "forbidden subscribe news.eu"

    arun(main())


def test_an_explicit_authorize_wins_over_the_jwt_default():
    auth = JWTAuth(secret=SECRET)

    async def main():
        async with fastws.serve(subscribing_handler, "127.0.0.1", 0, authenticate=auth,
                                authorize=lambda ws, topic, action: ws.user["sub"] == "alice") as server:
            async with websockets.connect(url(server), additional_headers={
                    "Authorization": f"Bearer {token()}"}) as c:
                await c.send("sub anything")
                assert await c.recv() == "ok sub anything"

    arun(main())


def test_run_accepts_the_options():
    from fastws.runner import _SERVER_KEYS

    assert {"authorize", "on_token_expired", "token_refresh_grace"} <= _SERVER_KEYS


# ---------------------------------------------------------------- access log

def test_access_log_redacts_the_query_token(caplog):
    auth = JWTAuth(secret=SECRET)
    tok = token()

    async def handler(ws):
        await ws.send("hi")

    async def main():
        async with fastws.serve(handler, "127.0.0.1", 0, authenticate=auth) as server:
            async with websockets.connect(url(server, f"/ws?a=1&token={tok}&b=2")) as c:
                assert await c.recv() == "hi"
            # A refused one is logged too.
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(url(server, "/ws?token=not.a.jwt")):
                    pass
            # The access line is written before the 101 or the refusal: wait for both.
            for _ in range(200):
                if len([r for r in caplog.records if r.name == "fastws.access"]) >= 2:
                    break
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, logger="fastws.access"):
        arun(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "fastws.access"]
    assert len(lines) == 2, lines
    assert "/ws?a=1&token=REDACTED&b=2" in lines[0] and " 101 " in lines[0]
    assert "/ws?token=REDACTED" in lines[1] and " 401 " in lines[1]
    assert all(tok not in line and "not.a.jwt" not in line for line in lines)
