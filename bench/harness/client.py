"""The one echo client bench/echo.py drives every server with.

A plain asyncio.Protocol on uvloop. Per payload size it builds the masked
client frame once; per echo it only reads the server frame's header (server
frames are unmasked, RFC 6455 5.1) to know when the whole echo has arrived.
Payload bytes are counted, not compared. "raw" mode skips the handshake and
the framing: the same payload goes out as bare bytes and the echo is complete
when as many bytes came back (for the bare-uvloop TCP echo server).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _length_field(n: int, mask_bit: int) -> bytes:
    # RFC 6455 5.2: 7-bit length, or 126 + 16-bit, or 127 + 64-bit, minimal form.
    if n < 126:
        return bytes([mask_bit | n])
    if n < 1 << 16:
        return bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    return bytes([mask_bit | 127]) + n.to_bytes(8, "big")


def _xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One FIN frame, masked with a random key (RFC 6455 5.3: clients MUST mask)."""
    key = os.urandom(4)
    return bytes([0x80 | opcode]) + _length_field(len(payload), 0x80) + key + _xor(payload, key)


def server_header(n: int, opcode: int = OP_BINARY) -> bytes:
    """The header a server sends for an unfragmented n-byte message."""
    return bytes([0x80 | opcode]) + _length_field(n, 0)


class BenchError(Exception):
    pass


class EchoClient(asyncio.Protocol):
    """Request/response: send one message, wait for its echo, send again."""

    def __init__(self, host: str, port: int, frame: bytes, size: int, raw: bool):
        loop = asyncio.get_running_loop()
        self.frame = frame          # what is sent, prebuilt
        self.size = size            # payload size the echo must have
        self.raw = raw
        hdr = b"" if raw else server_header(size)
        self.fast_hdr = hdr         # the echo's expected header ...
        self.hlen = len(hdr)
        self.fast_len = len(hdr) + size  # ... and its length when it comes in one piece
        self.count = 0              # echoes completed
        self.running = False        # send the next request when an echo completes
        self.remaining = 0          # bytes (header included) left of the current frame
        self.fin = True
        self.msg_bytes = 0          # payload bytes of the current message so far
        self.hbuf = b""             # a server frame header cut by the read
        self.error: BaseException | None = None
        self.transport = None
        self.write = None
        self.idle = loop.create_future()      # set when stopped and nothing in flight
        self.closed = loop.create_future()    # set on connection_lost
        self.got_close = loop.create_future()  # set on the server's close frame
        self.handshake_done = raw
        self.opened = loop.create_future()
        self._hs_buf = b""
        self._host, self._port = host, port
        self._key = base64.b64encode(os.urandom(16)).decode()

    # -- asyncio callbacks --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.write = transport.write
        if self.raw:
            self.opened.set_result(None)
        else:
            transport.write(
                (
                    f"GET / HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )

    def data_received(self, data):
        # Fast path: the whole echo in one read, header as expected.
        if (not self.remaining and not self.hbuf and len(data) == self.fast_len
                and data[:self.hlen] == self.fast_hdr):
            self.count += 1
            if self.running:
                self.write(self.frame)
            else:
                self._set_idle()
            return
        self._slow(data)

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)
        if self.running or not self.idle.done():
            self._fail(BenchError(f"server closed the connection mid-bench ({exc!r})"))
        for fut in (self.opened, self.got_close):
            if not fut.done():
                fut.set_exception(self.error or BenchError("connection lost"))
                fut.exception()  # mark retrieved

    # -- control ------------------------------------------------------------
    def start(self):
        self.running = True
        self.write(self.frame)

    def _set_idle(self):
        if not self.idle.done():
            self.idle.set_result(None)

    def _fail(self, exc):
        if self.error is None:
            self.error = exc
        self.running = False
        if not self.idle.done():
            self.idle.set_exception(exc)
            self.idle.exception()
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout: float = 2.0):
        if self.transport is None or self.closed.done():
            return
        if not self.raw:
            # RFC 6455 5.5.1: close frame with status 1000, wait for the server's.
            self.write(client_frame((1000).to_bytes(2, "big"), OP_CLOSE))
            try:
                await asyncio.wait_for(asyncio.shield(self.got_close), timeout)
            except (asyncio.TimeoutError, BenchError):
                pass
        self.transport.close()

    # -- slow path ----------------------------------------------------------
    def _message_done(self):
        if self.msg_bytes != self.size and not self.raw:
            self._fail(BenchError(f"echo of {self.msg_bytes} bytes, sent {self.size}"))
            return
        self.msg_bytes = 0
        self.count += 1
        if self.running:
            self.write(self.frame)
        else:
            self._set_idle()

    def _slow(self, data):
        if not self.handshake_done:
            self._handshake(data)
            return
        if self.hbuf:
            data = self.hbuf + data
            self.hbuf = b""
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                pos += take
                self.remaining -= take
                if not self.remaining and self.fin:
                    self._message_done()
                continue
            if self.raw:
                self.remaining = self.size
                continue
            # RFC 6455 5.2 base framing: 2-byte header, then extended length.
            if n - pos < 2:
                self.hbuf = data[pos:]
                return
            b0, b1 = data[pos], data[pos + 1]
            if b1 & 0x80:
                self._fail(BenchError("server frame is masked (RFC 6455 5.1: MUST NOT)"))
                return
            ln = b1 & 0x7F
            hl = 2 if ln < 126 else 4 if ln == 126 else 10
            if n - pos < hl:
                self.hbuf = data[pos:]
                return
            if hl > 2:
                ln = int.from_bytes(data[pos + 2:pos + hl], "big")
            opcode = b0 & 0x0F
            if opcode >= 8:  # control frame: handled whole
                if n - pos < hl + ln:
                    self.hbuf = data[pos:]
                    return
                payload = data[pos + hl:pos + hl + ln]
                pos += hl + ln
                if opcode == OP_PING:
                    self.write(client_frame(payload, OP_PONG))
                elif opcode == OP_CLOSE:
                    if not self.got_close.done():
                        self.got_close.set_result(payload)
                    if self.running or not self.idle.done():
                        self._fail(BenchError(f"server sent close {payload[:2].hex()} mid-bench"))
                        return
                continue
            if opcode > OP_BINARY:
                self._fail(BenchError(f"unknown opcode {opcode}"))
                return
            self.fin = bool(b0 & 0x80)
            self.msg_bytes += ln
            self.remaining = hl + ln  # header counted in, so empty frames work too

    def _handshake(self, data):
        self._hs_buf += data
        end = self._hs_buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._hs_buf) > 65536:
                self._fail(BenchError("handshake response too long"))
            return
        head, rest = self._hs_buf[:end], self._hs_buf[end + 4:]
        self._hs_buf = b""
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        expect = base64.b64encode(hashlib.sha1(self._key.encode() + _GUID).digest()).decode()
        if len(status) < 2 or status[1] != "101":
            err = BenchError(f"handshake refused: {lines[0]!r}")
        elif headers.get("sec-websocket-accept") != expect:
            err = BenchError("bad Sec-WebSocket-Accept")
        else:
            err = None
        if err is not None:
            self.opened.set_exception(err)
            self._fail(err)
            return
        self.handshake_done = True
        self.opened.set_result(None)
        if rest:
            self._slow(rest)


async def connect(host: str, port: int, frame: bytes, size: int, raw: bool,
                  timeout: float = 10.0) -> EchoClient:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: EchoClient(host, port, frame, size, raw), host, port),
        timeout,
    )
    await asyncio.wait_for(proto.opened, timeout)
    return proto
