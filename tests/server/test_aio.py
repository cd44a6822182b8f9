"""The handler API's inbox (fastws_ext.aio and its twin fastws._py.aio), on a
real event loop (uvloop and asyncio's own), without sockets.

What matters: a message reaches the awaiting task at once when it arrives
from a loop callback (not one loop pass later), never while another task
runs, and never gets lost when the waiting task was cancelled; the Waiter
works with asyncio's own tools (wait_for, gather, shield, cancellation,
contextvars); the end of the stream and flow control behave as documented.
"""
from __future__ import annotations

import asyncio
import contextvars

import pytest
import uvloop

from fastws.exceptions import ConnectionClosedError, ConnectionClosedOK


class FakeConn:
    def __init__(self):
        self.paused = 0
        self.resumed = 0
        self.error = ConnectionClosedOK(1000, "", 1000)

    def pause_reading(self):
        self.paused += 1

    def resume_reading(self):
        self.resumed += 1

    def _closed_error(self):
        return self.error

    @staticmethod
    def _closed_ok(exc):
        return isinstance(exc, ConnectionClosedOK)


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    def run(coro_fn):
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(coro_fn())
        finally:
            loop.close()

    return run


def test_waiter_works_with_asyncio_tools(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        w = impl.Waiter(loop)
        assert asyncio.isfuture(w) and not w.done()
        loop.call_soon(w.set_result, "x")
        assert await w == "x" and w.done() and w.result() == "x"

        w = impl.Waiter(loop)
        loop.call_soon(w.set_exception, ValueError("bad"))
        with pytest.raises(ValueError, match="bad"):
            await w

        w = impl.Waiter(loop)  # wait_for cancels it on timeout
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(w, 0.01)
        assert w.cancelled()
        with pytest.raises(asyncio.CancelledError):
            w.result()

        w = impl.Waiter(loop)
        loop.call_later(0.01, w.set_result, 7)
        assert await asyncio.gather(w, asyncio.sleep(0, "s")) == [7, "s"]

        w = impl.Waiter(loop)
        loop.call_later(0.01, w.set_result, 8)
        assert await asyncio.shield(w) == 8

        w = impl.Waiter(loop)
        w.set_result((1, 2))  # a tuple result is returned whole
        assert await w == (1, 2)
        with pytest.raises(asyncio.InvalidStateError):
            w.set_result(3)

        assert await impl.DONE is None
        return True

    assert run(main)


def test_message_reaches_waiting_task_inside_the_callback(impl, run):
    """deliver() from a loop callback runs the awaiting task at once, in its
    own context: the handler has the message (and has sent its reply) before
    deliver returns."""
    var = contextvars.ContextVar("var", default="loop")

    async def main():
        loop = asyncio.get_running_loop()
        inbox = impl.Inbox(FakeConn(), loop, 16)
        got = []

        async def handler():
            var.set("handler")
            async for msg in inbox:
                got.append((msg, var.get(), asyncio.current_task() is task))

        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0)  # the handler waits in async for
        seen = []
        done = loop.create_future()

        def on_read():  # as a transport's data_received: no task is running
            inbox.deliver(b"a")
            seen.append(list(got))
            inbox.deliver(b"b")
            seen.append(list(got))
            done.set_result(None)

        loop.call_soon(on_read)
        await done
        assert seen == [[(b"a", "handler", True)], [(b"a", "handler", True), (b"b", "handler", True)]]
        assert var.get() == "loop"
        task.cancel()
        return True

    assert run(main)


def test_deliver_from_another_task_is_scheduled(impl, run):
    """A task cannot run inside another task's step: from a task, deliver()
    wakes the handler through the loop, as a Future would."""

    async def main():
        loop = asyncio.get_running_loop()
        inbox = impl.Inbox(FakeConn(), loop, 16)
        got = []

        async def handler():
            got.append(await inbox.get())

        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0)
        inbox.deliver("m")
        assert got == []
        await task
        assert got == ["m"]
        return True

    assert run(main)


def test_cancelled_wait_loses_no_message(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        inbox = impl.Inbox(FakeConn(), loop, 16)

        async def recv():
            return await inbox.get()

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(recv(), 0.01)
        inbox.deliver("after")  # the cancelled waiter is skipped: queued
        assert await recv() == "after"

        task = asyncio.ensure_future(recv())
        await asyncio.sleep(0)
        task.cancel()
        inbox.deliver("raced")  # before the cancelled task has even run
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(recv(), 1) == "raced"

        # anext() under wait_for: the Waiter itself is the future there
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(inbox), 0.01)
        loop.call_later(0.01, inbox.deliver, "late")
        assert await asyncio.wait_for(anext(inbox), 1) == "late"
        return True

    assert run(main)


def test_one_waiter_at_a_time(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        inbox = impl.Inbox(FakeConn(), loop, 16)
        first = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already being awaited"):
            inbox.get()
        inbox.deliver("x")
        assert await first == "x"
        return True

    assert run(main)


def test_end_of_stream(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        conn = FakeConn()
        inbox = impl.Inbox(conn, loop, 16)
        inbox.deliver("queued")
        inbox.end(conn.error)
        assert inbox.ended
        assert [m async for m in inbox] == ["queued"]  # queued first, then a quiet end
        with pytest.raises(ConnectionClosedOK):
            await inbox.get()

        # a waiting async for ends quietly on a normal close...
        inbox = impl.Inbox(conn, loop, 16)

        async def collect():
            return [m async for m in inbox]

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0)
        loop.call_soon(inbox.deliver, "m")
        loop.call_soon(inbox.end, conn.error)
        assert await task == ["m"]

        # ...and raises on an abnormal one, as does recv()
        conn2 = FakeConn()
        conn2.error = ConnectionClosedError(1006, "", None)
        inbox = impl.Inbox(conn2, loop, 16)
        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0)
        loop.call_soon(inbox.end, conn2.error)
        with pytest.raises(ConnectionClosedError):
            await task
        with pytest.raises(ConnectionClosedError):
            await inbox.get()
        return True

    assert run(main)


def test_flow_control_pauses_and_resumes_reading(impl, run):
    async def main():
        loop = asyncio.get_running_loop()
        conn = FakeConn()
        inbox = impl.Inbox(conn, loop, 8)
        for i in range(8):
            inbox.deliver(i)
        assert conn.paused == 1 and len(inbox) == 8
        inbox.deliver(8)  # still paused: not paused twice, nothing dropped
        assert conn.paused == 1 and len(inbox) == 9
        got = [await inbox.get() for _ in range(6)]
        assert conn.resumed == 0  # 3 left > 8 // 4
        got.append(await inbox.get())
        assert conn.resumed == 1  # 2 left: resumed once
        got += [await inbox.get() for _ in range(2)]
        assert got == list(range(9)) and conn.resumed == 1
        return True

    assert run(main)
