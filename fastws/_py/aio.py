"""The handler API's inbox: the pure-Python twin of fastws_ext.aio (see aio.pyi).

Each connection of the ``async def handler(ws)`` API has one ``Inbox``: the
parser hands it every data message (``deliver``), and it either wakes the one
``recv()`` that waits or queues the message. ``Waiter`` is a small future of
our own rather than an asyncio Future: when the only callback is a Task's
wake-up and no task is running (we are in the read callback), ``_resolve``
runs that wake-up at once, so the handler sees the message before the parser
reads on; otherwise the callbacks go through ``call_soon`` as a Future's do.
``end(exc)`` ends the stream after the queued messages; ``max_queue`` waiting
messages pause reading until the queue is down to a quarter.
See docs/design/protocol.md#the-handler-inbox-no-future-per-message.
"""
from __future__ import annotations

import asyncio
import contextvars
from collections import deque

__all__ = ["Waiter", "Inbox", "DONE"]

_current_task = asyncio.current_task
_PENDING, _DONE, _CANCELLED = 0, 1, 2


class _Done(tuple):
    """An awaitable that is already done: ``await DONE`` is None, at once
    (what ``ws.send()`` returns when it need not wait)."""

    __slots__ = ()
    __await__ = tuple.__iter__


DONE = _Done()


class Waiter:
    """A one-shot, asyncio-compatible future for one message (see the module
    docstring)."""

    __slots__ = ("_asyncio_future_blocking", "_loop", "_callback", "_context", "_inline", "_more",
                 "_result", "_exception", "_cancel_message", "_state")

    def __init__(self, loop):
        self._asyncio_future_blocking = False
        self._loop = loop
        self._callback = None
        self._context = None
        self._inline = False
        self._more = None
        self._result = None
        self._exception = None
        self._cancel_message = None
        self._state = _PENDING

    def get_loop(self):
        return self._loop

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self):
        if self._state == _DONE:
            if self._exception is not None:
                raise self._exception
            return self._result
        if self._state == _CANCELLED:
            raise self._cancelled_error()
        raise asyncio.InvalidStateError("Result is not ready.")

    def exception(self):
        if self._state == _DONE:
            return self._exception
        if self._state == _CANCELLED:
            raise self._cancelled_error()
        raise asyncio.InvalidStateError("Exception is not set.")

    def _cancelled_error(self):
        if self._cancel_message is None:
            return asyncio.CancelledError()
        return asyncio.CancelledError(self._cancel_message)

    def add_done_callback(self, fn, *, context=None) -> None:
        inline = context is not None
        if context is None:
            context = contextvars.copy_context()
        if self._state != _PENDING:
            self._loop.call_soon(fn, self, context=context)
        elif self._callback is None and self._more is None:
            self._callback = fn
            self._context = context
            self._inline = inline
        else:
            if self._more is None:
                self._more = []
            self._more.append((fn, context))

    def remove_done_callback(self, fn) -> int:
        removed = 0
        if self._callback is not None and self._callback == fn:
            self._callback = None
            self._context = None
            removed += 1
        if self._more:
            kept = [pair for pair in self._more if pair[0] != fn]
            removed += len(self._more) - len(kept)
            self._more = kept or None
        return removed

    def cancel(self, msg=None) -> bool:
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._cancel_message = msg
        self._schedule()
        return True

    def set_result(self, result) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError("invalid state")
        self._resolve(result, None)

    def set_exception(self, exception) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError("invalid state")
        if isinstance(exception, type):
            exception = exception()
        self._resolve(None, exception)

    def _resolve(self, result, exc) -> None:
        self._state = _DONE
        self._result = result
        self._exception = exc
        cb = self._callback
        if cb is None:
            if self._more is not None:
                self._schedule()
            return
        if self._inline and self._more is None and _current_task(self._loop) is None:
            ctx = self._context
            self._callback = None
            self._context = None
            ctx.run(cb, self)
            return
        self._schedule()

    def _schedule(self) -> None:
        loop = self._loop
        cb = self._callback
        if cb is not None:
            ctx = self._context
            self._callback = None
            self._context = None
            loop.call_soon(cb, self, context=ctx)
        if self._more is not None:
            more = self._more
            self._more = None
            for cb, ctx in more:
                loop.call_soon(cb, self, context=ctx)

    def __await__(self):
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        return self.result()

    __iter__ = __await__

    def __repr__(self):
        state = ("pending", "done", "cancelled")[self._state]
        return f"<fastws Waiter {state}>"


class Inbox:
    """The messages of one connection for its handler (see the module docstring)."""

    __slots__ = ("loop", "_conn", "_queue", "_waiter", "_iter_waiter", "_paused", "ended", "_max_queue")

    def __init__(self, conn, loop, max_queue: int):
        self.loop = loop
        self._conn = conn
        self._queue = None
        self._waiter = None
        self._iter_waiter = False
        self._paused = False
        self.ended = False
        self._max_queue = max_queue

    def deliver(self, data) -> None:
        """The parser's on_message: wake the waiting recv() or queue the message."""
        w = self._waiter
        if w is not None:
            self._waiter = None
            if w._state == _PENDING:
                w._resolve(data, None)
                return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(data)
        if len(queue) >= self._max_queue and not self._paused:
            self._paused = True
            self._conn.pause_reading()

    def _next(self, iterating: bool):
        queue = self._queue
        if queue:
            w = Waiter(self.loop)
            w._state = _DONE
            w._result = queue.popleft()
            if self._paused and len(queue) <= self._max_queue // 4:
                self._paused = False
                self._conn.resume_reading()
            return w
        if self.ended:
            return None
        w = self._waiter
        if w is not None and w._state == _PENDING:
            raise RuntimeError("recv() is already being awaited by another task")
        w = self._waiter = Waiter(self.loop)
        self._iter_waiter = iterating
        return w

    def get(self):
        """An awaitable for the next message (ConnectionClosed at the end)."""
        w = self._next(False)
        if w is None:
            raise self._conn._closed_error()
        return w

    def __aiter__(self):
        return self

    def __anext__(self):
        w = self._next(True)
        if w is None:
            exc = self._conn._closed_error()
            if self._conn._closed_ok(exc):
                raise StopAsyncIteration
            raise exc
        return w

    def end(self, exc) -> None:
        """No message can come any more: fail the pending waiter with ``exc``
        (StopAsyncIteration instead when ``async for`` waits and the close
        was normal). Queued messages are still returned first."""
        self.ended = True
        w = self._waiter
        if w is not None:
            self._waiter = None
            if w._state == _PENDING:
                if self._iter_waiter and self._conn._closed_ok(exc):
                    exc = StopAsyncIteration()
                w._resolve(None, exc)

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0
