"""The low-level API: a listener with synchronous callbacks, one per connection.

::

    class Echo(fastws.Listener):
        def on_message(self, data):      # str (text) or bytes (binary)
            self.ws.send(data)           # non-blocking; False: wait for on_drain

The server calls the class (or any factory) once per connection. Callbacks
run inside the event loop's read callback: no Future or Task per message, and
a callback must not block. An exception raised by a callback is logged and
closes the connection with 1011; it never reaches the event loop.
See docs/guide/listener-api.md.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Union

__all__ = ["Listener", "Handler", "App"]

# The two kinds of application fastws serves (``fastws.run``, ``fastws.serve``):
# ``async def handler(ws)`` (ws: a fastws.ServerWebSocket), or a Listener class
# (or any factory returning a Listener), one instance per connection.
Handler = Callable[[Any], Awaitable[Any]]
App = Union[Handler, Callable[[], "Listener"]]


class Listener:
    """Base class for low-level listeners; override what you need."""

    __slots__ = ("ws",)

    def on_connect(self, ws: Any) -> None:
        """The handshake is done and the connection is open."""
        self.ws = ws

    def on_message(self, data: str | bytes) -> None:
        """A complete message: ``str`` for text, ``bytes`` for binary."""

    def on_ping(self, payload: bytes) -> None:
        """A ping arrived (fastws has already answered it with a pong)."""

    def on_pong(self, payload: bytes) -> None:
        """A pong arrived."""

    def on_drain(self) -> None:
        """The write buffer went back below ``write_limit``."""

    def on_close(self, code: int, reason: str) -> None:
        """The connection is closed. ``code`` is the peer's close code, else the
        code fastws sent (for example 1002 after a protocol error), else 1006."""
