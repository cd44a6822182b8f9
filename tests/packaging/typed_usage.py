"""What a user's program sees through fastws's types: type-checked by the mypy
step of tests/run.sh (``mypy --strict``), never run. Each ``assert_type`` pins
a public signature; see docs/development.md#packaging."""
from __future__ import annotations

from typing_extensions import assert_type

import fastws
import fastws.syncclient
from fastws.locust import PoolConnection, PoolUser, WebSocketUser


async def handler(ws: fastws.ServerWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


class Echo(fastws.Listener):
    def on_message(self, data: str | bytes) -> None:
        self.ws.send(data)


async def asyncio_api() -> None:
    server = await fastws.serve(handler, "127.0.0.1", 0, max_size=2**20)
    assert_type(server, fastws.Server)
    async with fastws.serve(Echo, "127.0.0.1", 0) as low_level:
        assert_type(low_level, fastws.Server)
    async with fastws.connect(f"ws://127.0.0.1:{server.port}", subprotocols=["chat"]) as ws:
        assert_type(ws, fastws.ClientWebSocket)
        assert_type(await ws.recv(), "str | bytes")
        assert_type(await ws.ping(), float)
        assert_type(ws.headers, fastws.Headers)
        await ws.close(1000, "bye")
    server.close()
    await server.wait_closed()


def blocking_api() -> None:
    ws = fastws.syncclient.connect("ws://127.0.0.1:8765", headers={"X-Test": "1"}, timeout=5.0)
    assert_type(ws, fastws.syncclient.SyncWebSocket)
    assert_type(ws.send("hi"), int)
    assert_type(ws.recv(1.0), "str | bytes")
    assert_type(ws.ping(), float)
    ws.close()


def values() -> None:
    assert_type(fastws.__version__, str)
    assert_type(fastws.IMPLEMENTATION, str)
    assert_type(fastws.FALLBACK_REASON, "str | None")
    assert_type(fastws.Options(max_size=None).max_size, "int | None")
    assert_type(fastws.Headers({"a": "b"}).get("a"), "str | None")
    assert_type(fastws.Headers([("a", "b")]).get("a", ""), str)
    assert_type(fastws.Response(200, body=b"ok").to_bytes(), bytes)
    assert_type(fastws.run(handler, "127.0.0.1", 8765, workers=2), int)
    try:
        pass
    except fastws.ConnectionClosed as exc:
        assert_type(exc.code, int)


class User(WebSocketUser):
    def task(self) -> None:
        assert_type(self.request("ping", match="pong"), "str | bytes | None")


class Pool(PoolUser):
    connections = 500

    def on_message(self, conn: PoolConnection, message: str | bytes) -> None:
        assert_type(self.send(conn, message), bool)
        assert_type(self.message_latency(message), "float | None")
        assert_type(conn.is_open, bool)


async def messages(ws: fastws.ServerWebSocket) -> None:
    async for message in ws:
        assert_type(message, "str | bytes")
    assert_type(await ws.recv(), "str | bytes")
    assert_type(ws.open, bool)
