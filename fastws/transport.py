"""The thin adapter between a WebSocket ``Connection`` and an asyncio transport.

It moves bytes and calls back, nothing more: ``data_received`` (the
connection core's, fastws/_py/core.py) feeds the frame parser (or the HTTP
handshake before it), ``pause_writing``/``resume_writing``
track the transport's write-buffer high-water mark, and ``connection_lost``
settles the connection.  It works on uvloop's transports and on asyncio's.
For large frames it switches the transport to direct reads (``_DirectReads``).
See docs/design/protocol.md and docs/design/codec.md#direct-reads-of-large-frames.
"""
from __future__ import annotations

import asyncio
import logging

from .protocol import RARE_FIELDS, Connection
from .timers import get_driver

__all__ = ["StreamConnection"]

logger = logging.getLogger("fastws.transport")


class _DirectReads(asyncio.BufferedProtocol):
    """The transport's protocol while large data frames come in.

    ``StreamConnection`` takes bytes (``data_received``): cheapest for the
    small messages that are the common case, but each read is copied once by
    the event loop into a bytes object and once more by the parser into the
    message. When the parser is in the payload of a data frame with at least
    ``DIRECT_MIN`` (64 KiB) still to come, the connection hands the transport
    to this object instead (``transport.set_protocol``): its ``get_buffer``
    is the parser's, which lends the rest of the message's own buffer, so the
    kernel writes the payload where it belongs and the parser only unmasks it
    in place. Between large frames the parser lends its per-thread scratch
    buffer, so the next large frame's first read is not copied by the loop
    either. After ``STAY`` reads in a row that did not end inside a large
    frame (or at once if the parser goes away) the transport goes back to
    the connection. Every other protocol callback is the connection's.
    """

    __slots__ = ("_conn", "_parser", "_spill", "_quiet")
    STAY = 16

    def __init__(self, conn, parser):
        self._conn = conn
        self._parser = parser
        self._spill = None
        self._quiet = 0

    def get_buffer(self, sizehint):
        parser = self._parser
        if self._conn._parser is parser:
            return parser.get_buffer(sizehint)
        # The parser was dropped (idle) or replaced meanwhile: take these
        # bytes as plain data and hand the transport back.
        spill = self._spill = memoryview(bytearray(65536))
        return spill

    def buffer_updated(self, nbytes):
        conn = self._conn
        spill = self._spill
        if spill is not None:
            self._spill = None
            conn._direct_reads_end()
            conn.data_received(bytes(spill[:nbytes]))
            return
        parser = self._parser
        try:
            parser.buffer_updated(nbytes)
        except Exception as exc:
            conn._input_failed(exc)
        if conn._parser is not parser or parser.closed or parser.failed:
            conn._direct_reads_end()
        elif parser.wants_direct():
            self._quiet = 0
        else:
            self._quiet += 1
            if self._quiet >= self.STAY:
                conn._direct_reads_end()

    # A read registered before a switch may still arrive as bytes.
    def data_received(self, data):
        self._conn.data_received(data)

    def eof_received(self):
        return self._conn.eof_received()

    def connection_lost(self, exc):
        self._conn.connection_lost(exc)

    def pause_writing(self):
        self._conn.pause_writing()

    def resume_writing(self):
        self._conn.resume_writing()


class StreamConnection(Connection, asyncio.Protocol):
    __slots__ = ("_transport",)
    # (see Connection's) Large frames may switch to direct reads: _DirectReads.
    _slot_defaults = {"_transport": None, "_direct_ok": True}
    _reading_paused = RARE_FIELDS["_reading_paused"]  # pause_reading(): kept in the _rare side object

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport) -> None:
        self._transport = transport
        opts = self._opts
        transport.set_write_buffer_limits(opts.write_limit)  # (high); positional: no keyword parsing
        driver = self._driver  # a server sets its own before (ServerConnection)
        if driver is None:
            self._driver = driver = get_driver(asyncio.get_running_loop(), opts.timer_tick)
        driver.arm(self, driver.now() + opts.handshake_timeout)

    # Reads arrive as bytes (asyncio.Protocol) in data_received, which is
    # codec.ConnectionCore's (C in the extension): with a parser, one call into
    # it; idle, a lone pong taken without one; before the handshake,
    # _handshake_bytes. The parser also offers a BufferedProtocol path
    # (get_buffer/buffer_updated: a per-thread scratch, or the final message
    # object for a large payload). Measured under callgrind through uvloop
    # (bench/e2e/instructions.py; figures in docs/performance.md): the
    # buffered path cost more instructions per small echo (a memoryview and a
    # buffer export per read) and far fewer per large one (two copies of the
    # payload fewer). So the adapter takes bytes, and switches the transport
    # to _DirectReads when 64 KiB or more of a data frame are still to come
    # (_direct_reads_begin, called by data_received), back after 16 reads
    # without one; idle connections hold no read buffer either way (the
    # parser is dropped when idle).
    def _direct_reads_begin(self, parser) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        if transport.get_extra_info("sslcontext") is not None:
            # TLS decrypts into its own buffers first: nothing to save.
            self._direct_ok = False
            return
        # set_protocol takes effect at the next read, also from inside a read
        # callback: uvloop restarts reading with the new protocol's kind
        # (libuv looks the callbacks up again before each read), asyncio's
        # selector transport switches its read method. If the application
        # paused reading, resume_reading() starts it with the new kind.
        transport.set_protocol(_DirectReads(self, parser))

    def _direct_reads_end(self) -> None:
        transport = self._transport
        if transport.get_protocol() is not self:
            transport.set_protocol(self)

    def _handshake_bytes(self, data) -> None:
        try:
            self._handshake_data(data)
        except Exception:
            self._handshake_crashed()

    def _handshake_crashed(self) -> None:
        """A bug met a request (an exception out of the opening handshake's
        code): logged with its traceback, the connection aborted."""
        logger.exception("error during the opening handshake with %s", self.remote_address)
        self._abort_transport()

    def eof_received(self):
        # The peer half-closed. Without a close frame first this is an abnormal
        # closure (1006); either way there is nothing more to read: close.
        return False

    def connection_lost(self, exc) -> None:
        try:
            self._connection_lost()
        except Exception:
            logger.exception("error while closing connection with %s", self.remote_address)

    def pause_writing(self) -> None:
        self._writing_paused()

    def resume_writing(self) -> None:
        try:
            self._writing_resumed()
        except Exception as exc:
            self._app_error(exc)

    # ------------------------------------------------------------ reading flow control
    def pause_reading(self) -> None:
        """Stop reading from the peer (TCP then pushes back on it)."""
        if not self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._held_pong is None and self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    # Reading is also held while a ping waits for the write buffer to drain
    # (Connection._on_control): the transport reads when neither holds it.
    def _hold_reading(self) -> None:
        transport = self._transport
        if not self._reading_paused and transport is not None and not transport.is_closing():
            transport.pause_reading()

    def _release_reading(self) -> None:
        transport = self._transport
        if not self._reading_paused and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _peername(self):
        transport = self._transport
        return transport.get_extra_info("peername") if transport is not None else None

    # ------------------------------------------------------------ hooks
    def _handshake_data(self, data) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ Connection I/O
    def _write(self, data) -> None:
        # What Python code calls; the codec's send and keepalive paths and the
        # fan-out call transport.write directly (ConnectionCore: a stream
        # connection keeps no bound method, docs/design/memory.md).
        self._transport.write(data)

    def _writelines(self, parts) -> None:
        self._transport.writelines(parts)

    def _write_eof(self) -> None:
        transport = self._transport
        if transport.is_closing():  # aborted meanwhile (max_write_buffer)
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # stock asyncio shuts the socket down at once: the peer reset it already
                transport.abort()  # nothing more can be written; connection_lost follows
        else:  # TLS: no half-close; flush and close
            transport.close()

    def _close_transport(self) -> None:
        self._transport.close()

    def _abort_transport(self) -> None:
        self._transport.abort()

    def _write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    @property
    def transport(self):
        return self._transport
