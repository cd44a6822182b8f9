"""The low-level API: a listener with synchronous callbacks, one per connection.

::

    class Echo(fastws.Listener):
        def on_message(self, data):      # str (text) or bytes (binary)
            self.ws.send(data)           # non-blocking

    await fastws.serve(Echo, "127.0.0.1", 8765)

The server creates one listener per connection by calling the class (or any
factory) with no arguments.  Callbacks run inside the event loop's read
callback: no Future or Task is created per message, and a callback must not
block.  ``self.ws`` is the connection (``fastws.server.ServerConnection``):
``send(data) -> bool`` (False: above the write-buffer high-water mark, wait
for ``on_drain``), ``send_frame``, ``send_ping``, ``close(code, reason)``,
``pause_reading()``/``resume_reading()``, ``path``, ``headers``,
``subprotocol``, ``remote_address``.

An exception raised by a callback is logged and closes the connection with
1011; it never reaches the event loop.
"""
from __future__ import annotations

__all__ = ["Listener"]


class Listener:
    """Base class for low-level listeners; override what you need."""

    __slots__ = ("ws",)

    def on_connect(self, ws) -> None:
        """The handshake is done and the connection is open."""
        self.ws = ws

    def on_message(self, data) -> None:
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
