"""The handler wake-up (fastws._py.aio / fastws_ext.aio ``wake``).

A message for a handler that waits in ``recv()`` / ``async for`` runs the
waiting task at once (inside data_received) instead of one loop step later.
These tests pin down that it is still asyncio: the task's context, the C
Task's cancellation, ``wait_for``/``timeout``, several callbacks, a wake from
inside a running task; and, end to end, that a handler's replies go out in
stream order, each before the next message of the same TCP segment is read.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import time

import pytest

import fastws
from util import RawClient, build_frame

VAR = contextvars.ContextVar("VAR", default="outside")


async def _waiting_task(loop, log):
    fut = loop.create_future()

    async def waiter():
        VAR.set("task")
        value = await fut
        log.append(("woke", value, VAR.get(), asyncio.current_task() is task))
        return value

    task = loop.create_task(waiter())
    await asyncio.sleep(0)  # the task now awaits fut
    return fut, task


def test_wake_runs_the_task_now_in_its_context(impl):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        fut, task = await _waiting_task(loop, log)
        # A plain callback (no task running), like data_received:
        done = loop.create_future()

        def from_protocol():
            impl.wake(fut, "m1", loop)
            log.append(("after wake", VAR.get()))
            done.set_result(None)

        loop.call_soon(from_protocol)
        await done
        assert log == [("woke", "m1", "task", True), ("after wake", "outside")]
        assert await task == "m1"

    asyncio.run(main())


def test_wake_inside_a_running_task_defers_like_set_result(impl):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        fut, task = await _waiting_task(loop, log)
        impl.wake(fut, "m2", loop)  # we are a running task: cannot nest
        assert log == [] and fut.done()
        assert await task == "m2"
        assert log == [("woke", "m2", "task", True)]

    asyncio.run(main())


def test_wake_with_several_callbacks_or_none(impl):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        fut = loop.create_future()
        fut.add_done_callback(lambda f: seen.append(("a", f.result())))
        fut.add_done_callback(lambda f: seen.append(("b", f.result())))
        loop.call_soon(impl.wake, fut, 7, loop)
        await asyncio.sleep(0.01)
        assert seen == [("a", 7), ("b", 7)]
        bare = loop.create_future()
        loop.call_soon(impl.wake, bare, 8, loop)
        assert await bare == 8

    asyncio.run(main())


def test_cancelled_waiter_and_wait_for_timeout(impl):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fut, 0.01)
        assert fut.cancelled()
        with pytest.raises(asyncio.InvalidStateError):
            impl.wake(fut, "late", loop)

    asyncio.run(main())


# ------------------------------------------------------------- end to end
def test_replies_in_stream_order_within_one_segment(serve_thread):
    """Ten messages in one TCP segment: the handler's reply to each is
    written before the next is parsed, so the replies arrive in order and
    interleave correctly with what the handler does between them."""
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
