"""The lean client process of bench/load/connections.py (``--client lean``): one loop, many sockets, little state.

    python bench/load/conn_lean.py --port P --count N --src 127.0.0.2[,127.0.0.3...]
                                   [--host 127.0.0.1] [--rate R] [--concurrency K] [--per-src 25000]

Not run by hand: connections.py starts it and talks to it over stdin/stdout
with the protocol of bench/load/conn_client.py (commands ``open | halt | stats
| close``; events ``ready, progress, opened, stats, closed``), so the two
clients are interchangeable and measured side by side.

What it does differently from conn_client.py, to cost the least CPU and memory
per connection:

- opening is paced: one loop timer every ``TICK`` s starts the connections
  due at ``--rate`` per second (at most ``--concurrency`` handshakes in
  flight), instead of K opener coroutines racing; a connection is a socket
  bound to an explicit port, a non-blocking ``connect_ex`` and the transport
  around it (``create_connection(sock=...)``, one short Task), with no
  ``sock_connect`` future and no ``wait_for``;
- the upgrade request is pre-built: only the 24-byte Sec-WebSocket-Key
  changes (a fresh random one per connection, its Sec-WebSocket-Accept
  checked, RFC 6455 4.1);
- per connection, a Protocol with three slots (transport, the handshake's
  (accept, start) while it runs, a frame parser only while a frame is cut
  between reads); the handshake's futures and buffers are gone once it is
  open;
- the server's pings are answered through the fastws codec: ``lone_control``
  recognises a lone PING and ``build_frame`` makes the masked PONG (Cython);
  anything else goes through a ``FrameParser`` made for it and dropped when
  the connection is back at rest.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import time

import uvloop

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # bench/: the harness
from conn_client import Counters, _bound_socket, _bump, _port_iter, PORT_HI, PORT_LO, emit  # noqa: E402
from harness.procfs import rss_kib  # noqa: E402

from fastws.codec import FrameParser, build_frame, lone_control  # noqa: E402
from fastws.constants import OP_CLOSE, OP_PING, OP_PONG  # noqa: E402
from fastws.exceptions import ProtocolError  # noqa: E402

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
HANDSHAKE_TIMEOUT = 30.0
MAX_CONSECUTIVE_FAILURES = 200
TICK = 0.005  # seconds between two opening ticks
C = Counters()


class Conn(asyncio.Protocol):
    __slots__ = ("transport", "hs", "parser")

    def __init__(self, hs):
        self.transport = None
        # (expected Sec-WebSocket-Accept, start time, head so far) until the 101;
        # None while open; () once failed or ended
        self.hs = hs
        self.parser = None    # only while a frame is cut between two reads

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        hs = self.hs
        if hs is not None:
            if hs:
                self._head(hs, data)
            return
        if self.parser is None:
            control = lone_control(data, False)
            if control is not None:  # an idle connection's ping: no parser
                if control[0] == OP_PING:
                    C.pings += 1
                    # RFC 6455 5.5.3: identical Application data; 5.3: masked
                    self.transport.write(build_frame(OP_PONG, control[1], mask=True))
                    C.pongs += 1
                return
            self.parser = FrameParser(_ignore, self._control, expect_masked=False, max_size=1 << 20)
        parser = self.parser
        try:
            parser.feed(data)
        except ProtocolError as exc:
            self.transport.write(build_frame(OP_CLOSE, exc.code.to_bytes(2, "big"), mask=True))
            self._end(f"protocol error {exc.code}")
            self.transport.close()
            return
        if self.parser is parser and parser.at_rest and not parser.closed:
            self.parser = None

    def _control(self, opcode, payload):
        if opcode == OP_PING:
            C.pings += 1
            self.transport.write(build_frame(OP_PONG, payload, mask=True))
            C.pongs += 1
        elif opcode == OP_CLOSE:
            code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "none"
            if not C.closing:
                _bump(C.close_codes, code)
            self.transport.write(build_frame(OP_CLOSE, payload[:2], mask=True))
            self._end(f"server close frame {code}")
            self.transport.close()

    def _head(self, hs, data):
        if hs[2]:
            data = hs[2] + data
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > 8192:
                self._fail("response head too long")
            else:
                self.hs = (hs[0], hs[1], data)
            return
        head = data[:end]
        if not head.startswith(b"HTTP/1.1 101 "):
            self._fail(f"status {head[:40]!r}")
            return
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-accept":
                if value.strip() != hs[0]:
                    self._fail("bad Sec-WebSocket-Accept")
                    return
                break
        else:
            self._fail("no Sec-WebSocket-Accept")
            return
        self.hs = None
        CLIENT.in_flight -= 1
        C.opened += 1
        C.open += 1
        C.latencies.append(time.monotonic() - hs[1])
        CLIENT.consecutive = 0
        if end + 4 < len(data):
            self.data_received(data[end + 4:])

    def _fail(self, why):
        self.hs = ()
        CLIENT.failed(why)
        self.transport.abort()

    def _end(self, why):
        if self.hs is None:  # it was open
            self.hs = ()
            C.open -= 1
            if not C.closing:
                C.lost += 1
                _bump(C.lost_reasons, why)

    def connection_lost(self, exc):
        if self.hs:
            self.hs = ()
            CLIENT.failed(f"closed during handshake ({type(exc).__name__ if exc else 'EOF'})")
        else:
            self._end("EOF without close frame" if exc is None else type(exc).__name__)
        CLIENT.conns.discard(self)
        self.transport = None


def _ignore(message):
    pass


class Client:
    def __init__(self, args):
        self.args = args
        self.srcs = args.src.split(",")
        span = min(PORT_HI - PORT_LO + 1, args.per_src + 2000)
        self.ports = {src: _port_iter(span) for src in self.srcs}
        self.conns: set = set()
        self.halted = False
        self.started = 0
        self.in_flight = 0
        self.retried = 0
        self.consecutive = 0
        self.stopped_by = None
        self.t0 = self.t1 = None
        host = args.host.encode()
        self.req_head = (b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " % (host, args.port))
        self.done = None

    def failed(self, why):
        self.in_flight -= 1
        C.failed += 1
        _bump(C.fail_reasons, why[:120])
        if self.retried < self.args.retries and not self.halted:
            # A fresh connection takes the failed one's place (counted; a
            # failure is never hidden: "failed" still counts every one).
            self.retried += 1
            self.started -= 1
        self.consecutive += 1
        if self.consecutive >= MAX_CONSECUTIVE_FAILURES and self.stopped_by is None:
            self.halted = True
            self.stopped_by = f"{self.consecutive} failures in a row, last: {why[:120]}"

    def open_one(self, loop):
        a = self.args
        i = self.started
        self.started += 1
        src = self.srcs[min(i // a.per_src, len(self.srcs) - 1)]
        try:
            sock = _bound_socket(src, self.ports[src])
        except OSError as exc:
            self.in_flight += 1
            self.failed(f"bind: {type(exc).__name__} errno {exc.errno}")
            return
        err = sock.connect_ex((a.host, a.port))
        if err not in (0, 115):  # EINPROGRESS
            sock.close()
            self.in_flight += 1
            self.failed(f"connect errno {err}")
            return
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        proto = Conn((accept, time.monotonic(), b""))
        self.in_flight += 1
        loop.create_task(self._attach(loop, sock, proto, self.req_head + key + b"\r\n\r\n"))

    async def _attach(self, loop, sock, proto, request):
        try:
            transport, _ = await loop.create_connection(lambda: proto, sock=sock)
        except OSError as exc:
            sock.close()
            self.failed(f"{type(exc).__name__} errno {exc.errno}")
            return
        self.conns.add(proto)
        transport.write(request)  # queued by the transport until the connect completes

    def tick(self, loop):
        """Start the connections due at --rate (paced), then re-arm."""
        a = self.args
        now = time.monotonic()
        due = (min(a.count, int((now - self.t0) * a.rate) + 1) if a.rate > 0 else a.count) - self.started
        while due > 0 and not self.halted and self.in_flight < a.concurrency:
            self.open_one(loop)
            due -= 1
        self.timeouts(now)
        if self.started < a.count and not self.halted:
            loop.call_later(TICK, self.tick, loop)
        elif self.in_flight <= 0:
            self.finish()
        else:
            loop.call_later(TICK * 10, self.tick, loop)

    def timeouts(self, now):
        if now - getattr(self, "_last_check", 0.0) < 1.0:
            return
        self._last_check = now
        for proto in list(self.conns):
            hs = proto.hs
            if hs and now - hs[1] > HANDSHAKE_TIMEOUT:
                proto._fail("TimeoutError")

    def finish(self):
        if self.t1 is not None:
            return
        self.t1 = time.monotonic()
        lat = sorted(C.latencies)
        C.latencies = []
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None)
        emit(ev="opened", opened=C.opened, failed=C.failed, open=C.open, t0=self.t0, t1=self.t1,
             p50=pick(0.5), p99=pick(0.99), max=lat[-1] if lat else None,
             fail_reasons=C.fail_reasons, retried=self.retried, stopped_by=self.stopped_by,
             halted=self.halted and self.stopped_by is None, cpu_s=time.process_time())
        self.done.set_result(None)

    async def open_all(self):
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.t0 = time.monotonic()

        async def progress():
            while True:
                await asyncio.sleep(0.5)
                emit(ev="progress", opened=C.opened, failed=C.failed, open=C.open)

        ticker = asyncio.ensure_future(progress())
        self.tick(loop)
        try:
            await self.done
        finally:
            ticker.cancel()

    def stats(self):
        emit(ev="stats", open=C.open, opened=C.opened, pings=C.pings, pongs=C.pongs, lost=C.lost,
             close_codes=C.close_codes, lost_reasons=C.lost_reasons,
             rss_kib=rss_kib("self"), cpu_s=time.process_time())

    async def close_all(self, timeout=10.0):
        C.closing = True
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.write(build_frame(OP_CLOSE, b"\x03\xe8", mask=True))
        deadline = time.monotonic() + timeout
        while C.open > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = 0
        for c in list(self.conns):
            if c.transport is not None:
                left += 1
                c.transport.abort()
        emit(ev="closed", aborted=left)


CLIENT: Client = None  # type: ignore[assignment]


async def amain(args) -> None:
    global CLIENT
    loop = asyncio.get_running_loop()
    CLIENT = client = Client(args)
    lines: asyncio.Queue = asyncio.Queue()
    pending = b""

    def on_stdin():
        nonlocal pending
        chunk = os.read(0, 4096)
        if not chunk:
            loop.remove_reader(0)
            lines.put_nowait("eof")
            return
        pending += chunk
        *done, pending = pending.split(b"\n")
        for ln in done:
            lines.put_nowait(ln.decode().strip())

    loop.add_reader(0, on_stdin)
    emit(ev="ready", pid=os.getpid(), rss_kib=rss_kib("self"), cpu_s=time.process_time())
    opening = None
    while True:
        cmd = await lines.get()
        if cmd == "open" and opening is None:
            opening = asyncio.ensure_future(client.open_all())
        elif cmd == "halt":
            client.halted = True
        elif cmd == "stats":
            client.stats()
        elif cmd in ("close", "eof"):
            client.halted = True
            if opening is not None:
                await opening
            await client.close_all()
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--src", required=True, help="comma list of source addresses, used in turn")
    ap.add_argument("--per-src", type=int, default=25000, help="connections per source address")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="connects per second, paced (default 1,000; 0: as fast as --concurrency allows)")
    ap.add_argument("--concurrency", type=int, default=256, help="handshakes in flight at most")
    ap.add_argument("--retries", type=int, default=2000,
                    help="failed connects or handshakes replaced by a fresh one, at most this many in all")
    uvloop.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
