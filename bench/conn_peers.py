"""Peer servers for bench/connections.py, with keepalive pings ON.

    python bench/conn_peers.py picows|websockets|handshake-floor --port P [--host H] [--ping-interval S|none]
                               [--ping-timeout S]

bench/servers.py is for the echo bench, where pings are off on purpose (no
ping in the middle of a timed window). The connections bench holds idle
connections with heartbeats on, as a real deployment would, so its peers are
set up the same way as fastws: a ping after ``--ping-interval`` seconds without
traffic and a close if the pong is not back within ``--ping-timeout``.

- picows: ``WSListener`` echo, ``enable_auto_ping=True``,
  ``auto_ping_idle_timeout=interval``, ``auto_ping_reply_timeout=timeout``,
  plain uvloop transports (``use_aiofastnet=False``), defaults otherwise
  (its read buffer starts at 16 KiB per connection).
- websockets: ``websockets.asyncio.server.serve`` echo handler,
  ``ping_interval=interval``, ``ping_timeout=timeout``, ``compression=None``.
- handshake-floor: the FLOOR of the handshake cost, not a WebSocket server: a plain
  uvloop ``asyncio.Protocol`` that reads the request until CRLF CRLF, finds
  the Sec-WebSocket-Key line (no HTTP parsing, no checks), writes a canned
  101 with the real Sec-WebSocket-Accept (hashlib.sha1 + base64) and then
  holds the connection: no pings (the interval is ignored), frames after the
  head are dropped, a close frame is answered and the connection closed.
  What accepting a connection costs kernel + uvloop + a minimal Python
  callback, for the connections bench's ratio.

Prints ``READY host:port`` when listening. Exit status 3: the library is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

SKIP = 3
BACKLOG = 2048


def _ready(host, port):
    print(f"READY {host}:{port}", flush=True)


async def run_picows(host, port, interval, timeout):
    try:
        from picows import WSListener, WSMsgType, ws_create_server
    except ImportError as exc:
        print(f"SKIP picows: {exc}", file=sys.stderr)
        sys.exit(SKIP)
    CLOSE, PING, PONG = WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG

    class Echo(WSListener):
        def on_ws_frame(self, transport, frame):
            t = frame.msg_type
            if t is CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif t is PING or t is PONG:
                pass  # auto pong / auto ping bookkeeping
            else:
                transport.send(t, frame.get_payload_as_memoryview(), frame.fin)

    kw = dict(enable_auto_pong=True, use_aiofastnet=False, backlog=BACKLOG)
    if interval is not None:
        kw.update(enable_auto_ping=True, auto_ping_idle_timeout=interval, auto_ping_reply_timeout=timeout)
    server = await ws_create_server(lambda request: Echo(), host, port, **kw)
    _ready(host, port)
    async with server:
        await server.serve_forever()


async def run_websockets(host, port, interval, timeout):
    try:
        from websockets.asyncio.server import serve
    except ImportError as exc:
        print(f"SKIP websockets: {exc}", file=sys.stderr)
        sys.exit(SKIP)

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, host, port, compression=None, ping_interval=interval,
                     ping_timeout=timeout, backlog=BACKLOG) as server:
        _ready(host, port)
        await server.serve_forever()


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: ")


async def run_handshake_floor(host, port, interval, timeout):
    import base64
    import hashlib

    class HandshakeFloor(asyncio.Protocol):
        __slots__ = ("transport", "head")

        def connection_made(self, transport):
            self.transport = transport
            self.head = b""

        def data_received(self, data):
            head = self.head
            if head is None:  # upgraded: a close frame (opcode 8) is answered, the rest dropped
                if data[:1] == b"\x88":
                    self.transport.write(b"\x88\x02\x03\xe8")
                    self.transport.close()
                return
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > 8192:
                    self.transport.abort()
                self.head = head
                return
            self.head = None
            i = head.lower().find(b"\r\nsec-websocket-key:")
            if i < 0:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            key = head[i + 20:head.find(b"\r\n", i + 20)].strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.transport.write(_101 + accept + b"\r\n\r\n")

    server = await asyncio.get_running_loop().create_server(HandshakeFloor, host, port, backlog=BACKLOG)
    _ready(host, port)
    async with server:
        await server.serve_forever()


PEERS = {"picows": run_picows, "websockets": run_websockets, "handshake-floor": run_handshake_floor}


def _interval(text):
    return None if text.lower() in ("none", "off", "0") else float(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(PEERS))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ping-interval", type=_interval, default=20.0)
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    a = ap.parse_args()
    try:
        uvloop.run(PEERS[a.name](a.host, a.port, a.ping_interval, a.ping_timeout))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
