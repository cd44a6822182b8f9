"""The high-level API: ``async def handler(ws)``, like the websockets library.

Messages go through the connection's inbox (``fastws._py.aio``, C in the
extension build): a waiting handler runs as soon as its message is parsed,
inside the read callback, and no asyncio Future is made per message. After
``max_queue`` waiting messages reading pauses; ``send()`` waits only above
``write_limit``. Iteration ends quietly after a normal close (1000/1001) and
raises ``ConnectionClosedError`` otherwise; messages that arrived before the
close are always delivered first.
See docs/guide/handler-api.md.
"""
from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Union

from .codec import Inbox, ws_send
from .constants import CLOSED, OPEN
from .exceptions import CLOSE_NORMAL, ConnectionClosedOK
from .protocol import Connection

__all__ = ["WebSocketMixin", "WEBSOCKET_SLOTS"]


# The per-connection fields the mixin needs; concrete classes declare them
# (with __slots__, only one base class in a hierarchy may define fields).
WEBSOCKET_SLOTS = ("_loop", "_inbox", "_drain_waiter", "_closed_waiter", "_pings", "_task")


if TYPE_CHECKING:
    from .codec import MessageWaiter

    # What the mixin is mixed into: a Connection (the concrete classes put it first).
    _MixinBase = Connection
else:
    _MixinBase = object

# A received message: str for text, bytes for binary.
Data = Union[str, bytes]


class WebSocketMixin(_MixinBase):
    if not TYPE_CHECKING:  # (type checkers: the slots are the concrete classes')
        __slots__ = ()
    else:
        _loop: asyncio.AbstractEventLoop
        _inbox: Inbox
        _drain_waiter: asyncio.Future[None] | None
        _closed_waiter: asyncio.Future[None] | None
        _pings: dict[bytes, tuple[asyncio.Future[float], float]] | None
        _task: asyncio.Task[Any] | None
        _pong_hook: bool

    def _init_websocket(self) -> None:
        # Cached: asyncio.get_running_loop() costs a getpid() system call.
        self._loop = loop = asyncio.get_running_loop()
        self._inbox = Inbox(self, loop, self._opts.max_queue)
        self._drain_waiter = None
        self._closed_waiter = None
        self._pings = None
        self._task = None
        # Keepalive pongs need no Python call unless ping() waits for one.
        self._pong_hook = False

    # ------------------------------------------------------------ receiving
    def _message_callback(self) -> Any:
        # The parser hands each data message straight to the inbox (C code
        # in the extension build): it wakes the waiting recv() or queues.
        return self._inbox.deliver

    async def recv(self) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises ConnectionClosed when the connection is closed and every message
        that arrived before has been returned.
        """
        return await self._inbox.get()

    def __aiter__(self) -> Inbox:
        # The inbox is the iterator: its __anext__ is a C slot in the
        # extension build, so `async for` costs no Python frame per message.
        # The end of a normally closed stream arrives as StopAsyncIteration.
        return self._inbox

    def __anext__(self) -> MessageWaiter:
        return self._inbox.__anext__()

    @staticmethod
    def _closed_ok(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionClosedOK)

    # ------------------------------------------------------------ sending
    # send(data): write the frame now; ``await ws.send(data)`` waits only
    # while the write buffer is above write_limit (see ws_send in
    # fastws._py.core; C in the extension build).
    send = ws_send

    async def _drain(self) -> None:
        if self._state == CLOSED:
            raise self._closed_error()
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await asyncio.shield(waiter)
        if self._state == CLOSED:  # woken by the end, not by a drain
            raise self._closed_error()

    async def ping(self, data: bytes | str | None = None) -> float:
        """Send a ping and wait for its pong; returns the round-trip time in seconds."""
        if data is None:
            data = os.urandom(4)
        elif isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        if self._pings is None:
            self._pings = {}
        if data in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        loop = self._loop
        waiter: asyncio.Future[float] = loop.create_future()
        self._pings[data] = (waiter, loop.time())
        self._pong_hook = True
        try:
            self.send_ping(data)
        except BaseException:
            del self._pings[data]
            raise
        return await waiter

    async def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong."""
        self.send_pong(data)

    def _on_pong(self, payload: bytes) -> None:
        pings = self._pings
        if not pings:
            self._pong_hook = False
            return
        if payload not in pings:
            return
        # RFC 6455 5.5.3: a pong answers the most recent ping; earlier ones
        # with other payloads are answered implicitly.
        now = self._loop.time()
        for key in list(pings):
            waiter, sent = pings.pop(key)
            if not waiter.done():
                waiter.set_result(now - sent)
            if key == payload:
                break
        if not pings:
            self._pong_hook = False

    def _on_ping(self, payload: bytes) -> None:
        pass

    # ------------------------------------------------------------ closing
    def _fail(self, code: int, reason: str) -> None:
        # Messages that arrived before the error were handed to the handler
        # task (or queued), but that task only runs at the next loop step. Fail
        # one callback later, so the handler still sees them and what it sends
        # in reply goes out before our close frame, in stream order, as the
        # listener API does naturally. The parser has failed meanwhile: nothing
        # more is read.
        if self._state == OPEN:
            self._loop.call_soon(self._fail_now, code, reason)
        else:
            Connection._fail(self, code, reason)

    def _fail_now(self, code: int, reason: str) -> None:
        if self._state == OPEN:
            Connection._fail(self, code, reason)
            self._wake_closed()

    # (async here, sync on the low-level Connection: the two APIs differ on purpose)
    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:  # type: ignore[override]
        """Close the connection and wait until it is closed (at most close_timeout,
        then the TCP connection is aborted)."""
        Connection.close(self, code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        if self._state == CLOSED:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    def _on_close_frame(self, payload: bytes) -> None:
        Connection._on_close_frame(self, payload)
        self._wake_closed()

    def _on_closed(self) -> None:
        self._wake_closed()
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_closed(self) -> None:
        """No more messages will come: end the inbox (a waiting recv() fails
        once the queued messages are read) and fail the pings."""
        inbox = self._inbox
        if not inbox.ended:
            inbox.end(self._closed_error())
        if self._pings:
            exc = self._closed_error()
            for waiter, _ in self._pings.values():
                if not waiter.done():
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: no "never retrieved" warning if nobody awaits
            self._pings = None

    def _on_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def open(self) -> bool:
        return self._state == OPEN
