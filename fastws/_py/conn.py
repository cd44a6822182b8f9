"""The per-message methods of a connection: the pure-Python twin of
fastws_ext.conn (see conn.pyi).

``fastws.protocol`` installs these functions as methods: ``conn_send`` as
``Connection.send`` (the listener API), ``ws_send`` as ``WebSocketMixin.send``
(the handler API) and ``conn_data_received`` as
``StreamConnection.data_received``. In the extension build they cost no
Python frame per message; here they are the readable reference.

``conn_bind(Connection, LARGE_PAYLOAD, DONE)`` tells them the class whose
fields they read (the extension learns the slot offsets from it), the size
from which a payload is written next to its header rather than copied into
one frame, and the already-done awaitable ``ws_send`` returns.
"""
from __future__ import annotations

from .frames import OP_BINARY, OP_TEXT, build_frame

__all__ = ["conn_bind", "conn_data_received", "conn_send", "ws_send"]

_cls = None
_large = 16384
_done = None


def conn_bind(cls, large_payload: int, done) -> None:
    """Learn the connection class, LARGE_PAYLOAD and DONE (see the module docstring)."""
    global _cls, _large, _done
    _cls, _large, _done = cls, large_payload, done


def _check(self) -> None:
    if _cls is None or not isinstance(self, _cls):
        raise TypeError(f"expected a bound fastws connection, got {type(self).__name__}")


def conn_data_received(self, data) -> None:
    """Bytes from the peer: one call into the frame parser.

    Without a parser (the handshake, or an idle connection whose parser was
    released) the connection's ``_data_without_parser`` decides. A parser
    error, or an application callback's, goes to ``_input_failed`` (a close
    code, never an exception into the event loop)."""
    _check(self)
    parser = self._parser
    if parser is None:
        self._data_without_parser(data)
        return
    try:
        parser.feed(data)
    except Exception as exc:
        self._input_failed(exc)


def _frame_out(self, data) -> bool:
    """True if sent here (one unmasked frame through ``_write``); False if
    the caller must take the general path (client side, or a payload of at
    least LARGE_PAYLOAD, written next to its header)."""
    if self._is_client:
        return False
    if len(data) >= _large:
        return False
    self._write(build_frame(OP_TEXT if isinstance(data, str) else OP_BINARY, data))
    return True


def conn_send(self, data) -> bool:
    """Send one message: ``str`` as text, bytes-like as binary.

    Never blocks and never drops: the frame is queued on the transport.
    Returns False when the write buffer is above ``write_limit`` (wait for
    ``on_drain`` before sending more); raises ConnectionClosed once the
    connection is closing or closed.
    """
    _check(self)
    if self._state != 1:  # fastws.protocol.OPEN
        raise self._closed_error()
    if not _frame_out(self, data):
        self._send_general(data)
    if self._paused_writing:
        return self._check_write_buffer()
    return True


def ws_send(self, data):
    """Send a message (``str``: text, bytes-like: binary). Use it as
    ``await ws.send(data)``: it waits only while the write buffer is above
    ``write_limit``.

    The frame is written at once; when no waiting is needed, the awaitable
    returned is an already-done one (no coroutine per message).
    """
    _check(self)
    if self._state != 1:
        raise self._closed_error()
    if not _frame_out(self, data):
        self._send_general(data)
    if self._paused_writing:
        self._check_write_buffer()  # cuts off a peer over max_write_buffer
        return self._drain()
    return _done
