"""The high-level handler API under asyncio's own tools: replies in stream
order for a burst of messages in one TCP segment, and ``wait_for`` /
``asyncio.timeout`` / cancellation around ``recv()`` leaving the connection
usable."""
from __future__ import annotations

import asyncio
import os
import time

from util import RawClient, build_frame


def test_replies_in_stream_order_within_one_segment(serve_thread):
    """Ten messages in one TCP segment: ten replies, in order, each numbered
    by how many messages the handler had seen when it sent it."""
    order = []

    async def handler(ws):
        async for msg in ws:
            order.append(msg)
            await ws.send(f"{len(order)}:{msg}")

    server = serve_thread(handler)
    client = RawClient(server.port)
    assert client.status == 101
    client.send_raw(b"".join(build_frame(0x1, f"m{i}".encode(), mask_key=os.urandom(4)) for i in range(10)))
    replies = [client.recv_frame()[2].decode() for _ in range(10)]
    assert replies == [f"{i + 1}:m{i}" for i in range(10)]
    client.sock.close()


def test_handler_timeouts_and_cancellation_still_work(serve_thread):
    """asyncio.timeout / wait_for around recv() (another task awaits the
    future, or the handler's own task is cancelled), then messages again."""
    results = []

    async def handler(ws):
        try:
            await asyncio.wait_for(ws.recv(), 0.05)
        except asyncio.TimeoutError:
            results.append("timeout")
        results.append(await asyncio.wait_for(ws.recv(), 5))
        async with asyncio.timeout(5):
            results.append(await ws.recv())
        await ws.send("done")

    server = serve_thread(handler)
    client = RawClient(server.port)
    assert client.status == 101
    time.sleep(0.3)
    client.send(0x1, b"a")
    time.sleep(0.05)
    client.send(0x1, b"b")
    assert client.recv_frame()[2] == b"done"
    assert results == ["timeout", "a", "b"]
    client.sock.close()
