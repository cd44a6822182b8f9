"""Baseline for ``bench/load/connections.py --heartbeat-cost``: keepalive with one timer per connection.

    python bench/load/conn_timer_baseline.py --port P [--host H] [--ping-interval 2] [--ping-timeout 10]

The simplest way to do WebSocket keepalive on asyncio, and the one fastws's
timer wheel is meant to beat: every connection owns a ``loop.call_later``
handle. After ``ping-interval`` seconds without a frame from the client it
sends a ping and arms a ``ping-timeout`` handle; the pong (or any frame)
cancels that and re-arms the interval. Any frame re-arms the interval
(cancel + ``call_later``), so the loop's timer heap holds one entry per
connection, plus one per outstanding ping.

It is a tiny server on uvloop and only does what the heartbeat needs: the
HTTP upgrade (RFC 6455 4.2.2), reading masked client frames (5.2, 5.3),
pings out, pongs in, text/binary echoed, a close answered. No limits, no
fragmentation handling beyond echoing frames as they come: a bench tool,
not a server.

Prints ``READY host:port`` when listening.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib

import uvloop

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
PING = bytes((0x80 | OP_PING, 0))          # empty ping, unmasked (server frame)
CLOSE_1011 = bytes((0x80 | OP_CLOSE, 2)) + (1011).to_bytes(2, "big")


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def _header(opcode: int, n: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


class TimerConn(asyncio.Protocol):
    __slots__ = ("loop", "transport", "buf", "open", "idle_handle", "pong_handle")
    interval = 2.0
    timeout = 10.0

    def connection_made(self, transport):
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.buf = b""
        self.open = False
        self.idle_handle = None
        self.pong_handle = None

    # -- the keepalive: one call_later per connection ----------------------
    def _arm(self):
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        self.idle_handle = self.loop.call_later(self.interval, self._on_idle)

    def _on_idle(self):
        self.idle_handle = None
        self.transport.write(PING)
        if self.pong_handle is None:
            self.pong_handle = self.loop.call_later(self.timeout, self._on_pong_timeout)

    def _on_pong_timeout(self):
        self.pong_handle = None
        self.transport.write(CLOSE_1011)
        self.transport.close()

    def _activity(self):
        if self.pong_handle is not None:
            self.pong_handle.cancel()
            self.pong_handle = None
        self._arm()

    # -- bytes in ----------------------------------------------------------
    def data_received(self, data):
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            key = b""
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            if not key:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
            self.open = True
            self._arm()
            data = data[end + 4:]
            if not data:
                return
        pos, n = 0, len(data)
        got_frame = False
        while n - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            ln = b1 & 0x7F
            hl = 2 if ln < 126 else 4 if ln == 126 else 10
            if n - pos < hl + 4:
                break
            if hl > 2:
                ln = int.from_bytes(data[pos + 2:pos + hl], "big")
            if n - pos < hl + 4 + ln:
                break
            key = data[pos + hl:pos + hl + 4]
            payload = _unmask(data[pos + hl + 4:pos + hl + 4 + ln], key)
            pos += hl + 4 + ln
            got_frame = True
            opcode = b0 & 0x0F
            if opcode == OP_PONG:
                pass
            elif opcode == OP_PING:
                self.transport.write(_header(OP_PONG, len(payload)) + payload)
            elif opcode == OP_CLOSE:
                self.transport.write(_header(OP_CLOSE, min(2, len(payload))) + payload[:2])
                self.transport.close()
                return
            else:
                self.transport.write(bytes((b0,)) + _header(0, len(payload))[1:] + payload)
        if pos < n:
            self.buf = data[pos:]
        if got_frame:
            self._activity()

    def connection_lost(self, exc):
        for h in (self.idle_handle, self.pong_handle):
            if h is not None:
                h.cancel()
        self.idle_handle = self.pong_handle = None


async def serve(host, port, interval, timeout):
    TimerConn.interval = interval
    TimerConn.timeout = timeout
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TimerConn, host, port, backlog=2048)
    print(f"READY {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ping-interval", type=float, default=2.0)
    ap.add_argument("--ping-timeout", type=float, default=10.0)
    a = ap.parse_args()
    try:
        uvloop.run(serve(a.host, a.port, a.ping_interval, a.ping_timeout))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
