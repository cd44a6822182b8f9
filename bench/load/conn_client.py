"""One client process of bench/load/connections.py: opens and holds many WebSocket connections.

    python bench/load/conn_client.py --port P --count N --src 127.0.0.2[,127.0.0.3...]
                                     [--host 127.0.0.1] [--concurrency K] [--per-src 25000]

Not run by hand: bench/load/connections.py (and bench/e2e/handshake_instructions.py) start C of these and talks to each over
stdin/stdout, one line per message.

    stdin (commands)   open | halt | stats | close
    stdout (events)    one JSON object per line: ready, progress, opened, stats, closed

Lean on purpose, so that the client is not what limits the count: a plain
uvloop ``asyncio.Protocol`` per connection (``__slots__``, no Task, no buffer
kept while idle), counters kept per process rather than per connection. The
only coroutines are the K "openers" that run while connections are being
opened (at most K handshakes in flight); once open, a connection costs its
transport and one small object.

Per connection: a real HTTP/1.1 upgrade with a random 16-byte
Sec-WebSocket-Key whose Sec-WebSocket-Accept is checked (RFC 6455 4.1), then
only control frames matter: a ping is answered with a pong carrying the same
payload, masked (RFC 6455 5.5.3: "A Pong frame sent in response to a Ping
frame must have identical Application data"; 5.3: clients MUST mask); a close
frame from the server is counted with its code and answered; a connection that
ends without our asking is counted as lost, with the reason.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import hashlib
import json
import os
import socket
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/: the harness
from harness.procfs import rss_kib  # noqa: E402

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
HANDSHAKE_TIMEOUT = 15.0  # seconds for connect + 101 response
MAX_CONSECUTIVE_FAILURES = 200  # stop opening: the limit has been reached


class Counters:
    """What every connection of this process adds to (no per-connection state)."""

    def __init__(self):
        self.opened = 0        # handshakes completed
        self.failed = 0        # connects or handshakes that failed
        self.open = 0          # connections open now
        self.pings = 0         # pings received from the server
        self.pongs = 0         # pongs sent in answer
        self.lost = 0          # open connections that ended without our asking
        self.close_codes: dict[str, int] = {}   # server close frames by code
        self.lost_reasons: dict[str, int] = {}  # how lost connections ended
        self.fail_reasons: dict[str, int] = {}  # why opening failed
        self.latencies: list[float] = []        # handshake seconds, connect to 101
        self.closing = False   # set by "close": endings are expected from then on


C = Counters()


def _bump(d: dict, key: str) -> None:
    d[key] = d.get(key, 0) + 1


def _masked(opcode: int, payload: bytes) -> bytes:
    """A FIN control frame from a client, masked (payload <= 125 bytes, RFC 6455 5.5)."""
    key = os.urandom(4)
    n = len(payload)
    if n:
        stream = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")
    return bytes((0x80 | opcode, 0x80 | n)) + key + payload


PROXY = None  # --proxy: "v1" or "v2"


def _proxy_header(src, dst) -> bytes:
    """The PROXY protocol header of a TCP4 connection from src to dst."""
    if PROXY == "v1":
        return b"PROXY TCP4 %s %s %d %d\r\n" % (src[0].encode(), dst[0].encode(), src[1], dst[1])
    block = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + len(block).to_bytes(2, "big") + block


# --header lines, sent in every upgrade request (e.g. an Authorization for
# bench/e2e/handshake_instructions.py's servers with an authenticate hook).
EXTRA_HEADERS = b""


class Conn(asyncio.Protocol):
    __slots__ = ("transport", "buf", "accept", "waiter", "started", "is_open")

    def __init__(self, waiter):
        self.transport = None
        self.buf = b""          # only a response head or a frame cut by a read
        self.waiter = waiter    # set when the 101 arrives; dropped afterwards
        self.started = time.monotonic()
        self.is_open = False
        self.accept = b""

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        host, port = transport.get_extra_info("peername")[:2]
        # With --proxy the header and the request go in one write (so in one
        # read of the server's, as when a proxy's header and the client's
        # first bytes meet in its buffer): the cost of the header alone.
        prefix = b"" if PROXY is None else _proxy_header(transport.get_extra_info("sockname")[:2], (host, port))
        transport.write(
            prefix + b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (host.encode(), port, key,
                                                                           EXTRA_HEADERS)
        )

    def data_received(self, data):
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.is_open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > 8192:
                    self._fail_handshake("response head too long")
                else:
                    self.buf = data
                return
            head, data = data[:end], data[end + 4:]
            lines = head.split(b"\r\n")
            if lines[0].split(b" ", 2)[1:2] != [b"101"]:
                self._fail_handshake(f"status {lines[0][:40]!r}")
                return
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-accept":
                    if value.strip() != self.accept:
                        self._fail_handshake("bad Sec-WebSocket-Accept")
                        return
                    break
            else:
                self._fail_handshake("no Sec-WebSocket-Accept")
                return
            self.is_open = True
            self.accept = b""
            C.opened += 1
            C.open += 1
            C.latencies.append(time.monotonic() - self.started)
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(None)
            if not data:
                return
        self._frames(data)

    def _frames(self, data):
        # RFC 6455 5.2: server frames are not masked; 7/16/64-bit lengths.
        pos, n = 0, len(data)
        while pos < n:
            if n - pos < 2:
                break
            b0, b1 = data[pos], data[pos + 1]
            ln = b1 & 0x7F
            hl = 2 if ln < 126 else 4 if ln == 126 else 10
            if n - pos < hl:
                break
            if hl > 2:
                ln = int.from_bytes(data[pos + 2:pos + hl], "big")
            if n - pos < hl + ln:
                break
            opcode = b0 & 0x0F
            payload = data[pos + hl:pos + hl + ln]
            pos += hl + ln
            if opcode == OP_PING:
                C.pings += 1
                self.transport.write(_masked(OP_PONG, payload))
                C.pongs += 1
            elif opcode == OP_CLOSE:
                code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "none"
                if not C.closing:
                    _bump(C.close_codes, code)
                self.transport.write(_masked(OP_CLOSE, payload[:2]))
                self._end(f"server close frame {code}")
                self.transport.close()
                return
        if pos < n:
            self.buf = data[pos:]

    def _fail_handshake(self, why):
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(why))
        self.transport.abort()

    def _end(self, why):
        if self.is_open:
            self.is_open = False
            C.open -= 1
            if not C.closing:
                C.lost += 1
                _bump(C.lost_reasons, why)

    def connection_lost(self, exc):
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"closed during handshake ({exc!r})"))
        self._end("EOF without close frame" if exc is None else f"{type(exc).__name__}")
        self.transport = None


PORT_LO, PORT_HI = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())


def _bound_socket(src: str, ports) -> socket.socket:
    """A non-blocking TCP socket bound to (src, next port of ports).

    Each source address belongs to one client process, so the client picks
    the ports itself, in order, from the ephemeral range. bind((src, 0)) would
    let the kernel search for a free port, and that search gets slower as the
    range fills (about 1 ms of kernel time per socket at 15k ports in use,
    which made the client the bottleneck); IP_BIND_ADDRESS_NO_PORT moves the
    search to connect() but still scans (about 130 µs at 15k). An explicit
    port is one hash lookup. A port some other socket holds is skipped.
    """
    for _ in range(1000):
        port = next(ports, None)
        if port is None:
            break
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # A port whose previous connection (an earlier run's) is still in
            # TIME_WAIT can be bound again, and connect() reuses the TIME_WAIT
            # 4-tuple on loopback (net.ipv4.tcp_tw_reuse = 2, the default).
            # Without this, back-to-back runs ran out of ports near 200,000
            # (EADDRNOTAVAIL).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((src, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRNOTAVAIL, f"no free port left on {src}")


def _port_iter(n):
    """The first n usable ports of the ephemeral range, then nothing."""
    return iter(range(PORT_LO, min(PORT_HI + 1, PORT_LO + n)))


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Client:
    def __init__(self, args):
        self.args = args
        self.srcs = args.src.split(",")
        span = min(PORT_HI - PORT_LO + 1, args.per_src + 2000)  # room to skip busy ports
        self.ports = {src: _port_iter(span) for src in self.srcs}
        self.conns: list[Conn] = []
        self.halted = False
        self.next = 0
        self.t0 = self.t1 = None
        self.stopped_by = None  # why opening stopped early

    async def _opener(self, loop):
        a = self.args
        consecutive = 0
        while not self.halted and self.next < a.count:
            i = self.next
            self.next += 1
            src = self.srcs[min(i // a.per_src, len(self.srcs) - 1)]
            waiter = loop.create_future()
            proto = None
            sock = None
            try:
                sock = _bound_socket(src, self.ports[src])
                await asyncio.wait_for(loop.sock_connect(sock, (a.host, a.port)), HANDSHAKE_TIMEOUT)
                _, proto = await loop.create_connection(lambda: Conn(waiter), sock=sock)
                sock = None  # the transport owns it now
                self.conns.append(proto)
                await asyncio.wait_for(waiter, HANDSHAKE_TIMEOUT)
                consecutive = 0
            except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                if proto is not None and not proto.is_open and proto.transport is not None:
                    proto.transport.abort()
                if sock is not None:
                    sock.close()
                C.failed += 1
                reason = (f"{type(exc).__name__}" + (f" errno {exc.errno}" if getattr(exc, "errno", None) else "")
                          + (f": {exc}" if isinstance(exc, ConnectionError) and not exc.errno else ""))
                _bump(C.fail_reasons, reason[:120])
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_FAILURES:
                    self.halted = True
                    self.stopped_by = f"{consecutive} failures in a row, last: {reason[:120]}"

    async def open_all(self):
        loop = asyncio.get_running_loop()
        self.t0 = time.monotonic()

        async def progress():
            while True:
                await asyncio.sleep(0.5)
                emit(ev="progress", opened=C.opened, failed=C.failed, open=C.open)

        ticker = asyncio.ensure_future(progress())
        try:
            await asyncio.gather(*(self._opener(loop) for _ in range(self.args.concurrency)))
        finally:
            ticker.cancel()
        self.t1 = time.monotonic()
        self.conns = [c for c in self.conns if c.is_open]
        lat = sorted(C.latencies)
        C.latencies = []
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None)
        emit(ev="opened", opened=C.opened, failed=C.failed, open=C.open, t0=self.t0, t1=self.t1,
             p50=pick(0.5), p99=pick(0.99), max=lat[-1] if lat else None,
             fail_reasons=C.fail_reasons, stopped_by=self.stopped_by,
             halted=self.halted and self.stopped_by is None, cpu_s=time.process_time())

    def stats(self):
        emit(ev="stats", open=C.open, opened=C.opened, pings=C.pings, pongs=C.pongs, lost=C.lost,
             close_codes=C.close_codes, lost_reasons=C.lost_reasons,
             rss_kib=rss_kib("self"), cpu_s=time.process_time())

    async def close_all(self, timeout=10.0):
        """Close frame 1000 on every connection, then wait for the server's close."""
        C.closing = True
        frame = _masked(OP_CLOSE, (1000).to_bytes(2, "big"))
        for c in self.conns:
            if c.transport is not None:
                c.transport.write(frame)
        deadline = time.monotonic() + timeout
        while C.open > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = 0
        for c in self.conns:
            if c.transport is not None:
                left += 1
                c.transport.abort()
        emit(ev="closed", aborted=left)


async def amain(args) -> None:
    loop = asyncio.get_running_loop()
    client = Client(args)
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
    emit(ev="ready", pid=os.getpid())
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
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight at most")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="a header line added to every upgrade request (repeatable)")
    ap.add_argument("--proxy", choices=("v1", "v2"), default=None,
                    help="begin each connection with a PROXY protocol header, as HAProxy send-proxy / "
                         "send-proxy-v2 would (source: this socket's own address)")
    args = ap.parse_args()
    global EXTRA_HEADERS, PROXY
    EXTRA_HEADERS = b"".join(h.encode("latin-1") + b"\r\n" for h in args.header)
    PROXY = args.proxy
    uvloop.run(amain(args))


if __name__ == "__main__":
    main()
