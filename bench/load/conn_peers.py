"""Peer servers for bench/load/connections.py, with keepalive pings ON.

    python bench/load/conn_peers.py picows|websockets|bare|handshake-floor[-parser] --port P [--host H]
                                    [--ping-interval S|none] [--ping-timeout S] [--workers W (bare)]

bench/harness/servers.py is for the echo bench, where pings are off on purpose (no
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
- bare: not a WebSocket server but the FLOOR of idle keepalive: what any
  server on uvloop must spend per ping-pong. A plain ``asyncio.Protocol``
  that answers the upgrade with a canned 101 (a real Sec-WebSocket-Accept),
  then pings every connection once per interval from ONE loop timer (a tick
  every second walks one of ``interval`` buckets and writes the 2-byte ping
  ``b"\x89\x00"`` with ``transport.write``), and whose ``data_received``
  only counts (a close frame is answered, so the bench's teardown is quick).
  No parser, no ping timeout, no per-connection timer: the kernel's work
  (the ping's send() on loopback, epoll, the pong's recv()) plus one Python
  call per pong and one loop iteration per ping.
- handshake-floor: the FLOOR of the handshake cost, not a WebSocket server: a plain
  uvloop ``asyncio.Protocol`` that reads the request until CRLF CRLF, finds
  the Sec-WebSocket-Key line (no HTTP parsing, no checks), writes a canned
  101 with the real Sec-WebSocket-Accept (hashlib.sha1 + base64) and then
  holds the connection: no pings (the interval is ignored), frames after the
  head are dropped, a close frame is answered and the connection closed.
  What accepting a connection costs kernel + uvloop + a minimal Python
  callback, for the connections bench's ratio.
- handshake-floor-parser: the same, with the head read, validated and
  answered by fastws's ``UpgradeReader.read_accept`` (llhttp and the rest of
  the server's parsing, in C) instead of ``find`` + hashlib: the parsing's
  share apart from the connection machinery (bench/load/handshake_pair.py
  --pair).

Prints ``READY host:port`` when listening. Exit status 3: the library is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the harness
from harness.servers import BACKLOG, picows_echo, say_ready, serve_websockets  # noqa: E402


async def run_picows(host, port, interval, timeout):
    Echo, ws_create_server = picows_echo()  # PINGs / PONGs: auto pong and auto ping bookkeeping
    kw = dict(enable_auto_pong=True, use_aiofastnet=False, backlog=BACKLOG)
    if interval is not None:
        kw.update(enable_auto_ping=True, auto_ping_idle_timeout=interval, auto_ping_reply_timeout=timeout)
    server = await ws_create_server(lambda request: Echo(), host, port, **kw)
    say_ready(host, port)
    async with server:
        await server.serve_forever()


async def run_websockets(host, port, interval, timeout):
    await serve_websockets(host, port, compression=None, ping_interval=interval, ping_timeout=timeout)


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BARE_PING = b"\x89\x00"
BARE_CLOSE = b"\x88\x02\x03\xe8"  # close 1000


async def run_bare(host, port, interval, timeout, reuse_port=False):
    import base64
    import hashlib
    import math

    loop = asyncio.get_running_loop()
    tick = 1.0
    nb = max(1, math.ceil(interval / tick)) if interval is not None else 1
    buckets = [dict() for _ in range(nb)]  # dicts as ordered sets of transports
    state = {"cur": 0, "pongs": 0}

    class Bare(asyncio.Protocol):
        __slots__ = ("transport", "bucket", "buf")

        def connection_made(self, transport):
            self.transport = transport
            self.bucket = None
            self.buf = b""

        def data_received(self, data):
            if self.bucket is not None:  # open: a pong (or the bench's final close)
                if data[0] == 0x88:
                    self.transport.write(BARE_CLOSE)
                    self.transport.close()
                    return
                state["pongs"] += 1
                return
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self.buf = b""
            key = b""
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
            # first ping one interval from now: the bucket the timer reaches last
            self.bucket = buckets[(state["cur"] - 1) % nb]
            self.bucket[self.transport] = None

        def connection_lost(self, exc):
            if self.bucket is not None:
                self.bucket.pop(self.transport, None)
                self.bucket = None

    def on_tick(when):
        state["cur"] = cur = (state["cur"] + 1) % nb
        if interval is not None:
            for transport in buckets[cur]:
                transport.write(BARE_PING)
        loop.call_at(when + tick, on_tick, when + tick)

    server = await loop.create_server(Bare, host, port, backlog=BACKLOG, reuse_port=reuse_port or None)
    t0 = loop.time()
    loop.call_at(t0 + tick, on_tick, t0 + tick)
    say_ready(host, port)
    async with server:
        await server.serve_forever()


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
    say_ready(host, port)
    async with server:
        await server.serve_forever()


async def run_handshake_floor_parser(host, port, interval, timeout):
    """The handshake floor with fastws's parsing in place of its own: the
    head read, validated and answered by ``UpgradeReader.read_accept``
    (llhttp, the field-line scan, the accept key, the packed field lines);
    no connection object, timer or listener. Between the floor and fastws:
    what the parsing costs apart from the rest of the server."""
    from fastws.handshake import upgrade_reader

    reader = upgrade_reader()

    class HandshakeFloorParser(asyncio.Protocol):
        __slots__ = ("transport", "upgraded")

        def connection_made(self, transport):
            self.transport = transport
            self.upgraded = False

        def data_received(self, data):
            if self.upgraded:  # a close frame (opcode 8) is answered, the rest dropped
                if data[:1] == b"\x88":
                    self.transport.write(b"\x88\x02\x03\xe8")
                    self.transport.close()
                return
            quick = reader.read_accept(data, 8192, 100)  # (path, packed field lines, the 101, leftover)
            if quick is None:  # not a whole valid upgrade head in one read: refused, unlike a server
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            self.upgraded = True
            self.transport.write(quick[2])

    server = await asyncio.get_running_loop().create_server(HandshakeFloorParser, host, port, backlog=BACKLOG)
    say_ready(host, port)
    async with server:
        await server.serve_forever()


PEERS = {"picows": run_picows, "websockets": run_websockets, "bare": run_bare,
         "handshake-floor": run_handshake_floor, "handshake-floor-parser": run_handshake_floor_parser}


def _interval(text):
    return None if text.lower() in ("none", "off", "0") else float(text)


def _bare_workers(a):
    """The floor on W processes (SO_REUSEPORT), like ``fastws echo --workers W``:
    this process forks them, prints READY, and ends them on SIGTERM/SIGINT."""
    import os
    import signal

    pids = []
    for _ in range(a.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                uvloop.run(run_bare(a.host, a.port, a.ping_interval, a.ping_timeout, reuse_port=True))
            finally:
                os._exit(0)
        pids.append(pid)
    say_ready(a.host, a.port)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    while not stop:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid in pids:
            break  # a worker died: end the others
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(PEERS))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ping-interval", type=_interval, default=20.0)
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=1, help="bare only: processes sharing the port")
    a = ap.parse_args()
    try:
        if a.name == "bare" and a.workers > 1:
            _bare_workers(a)
        else:
            uvloop.run(PEERS[a.name](a.host, a.port, a.ping_interval, a.ping_timeout))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
