"""Memory and time limits against hostile peers, on real sockets (issue #14).

- A client that floods pings and never reads: the server's RSS stays within
  max_write_buffer plus a few MiB, and another client is served throughout
  (both API levels); the fastws client flooded by a server is bounded too.
- 300 connections announcing 16 MiB and sending 15 bytes reserve little: a
  server under ``prlimit --as`` still echoes a legitimate 8 MiB message.
- The TLS handshake counts against handshake_timeout (server and client).

Servers run as subprocesses (their RSS is theirs alone); waits are bounded.
See docs/design/protocol.md#flow-control-of-what-we-write.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import websockets.sync.client as ws_sync
from util import UNIT, RawClient, arun

import fastws
from fastws._py.frames import build_frame
from fastws.handshake import accept_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1 << 20

SERVER = r"""
import json, ssl, sys
import fastws
from fastws.apps.echo import EchoListener, echo_handler
api, opts = sys.argv[1], json.loads(sys.argv[2])
certfile, keyfile = opts.pop("certfile", None), opts.pop("keyfile", None)
if certfile:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    opts["ssl"] = ctx
def on_start(addresses, workers, loop_name):
    print("READY", addresses, flush=True)
fastws.run(EchoListener if api == "listener" else echo_handler, "127.0.0.1", 0, on_start=on_start,
           graceful_timeout=1, **opts)
"""


class Server:
    """The echo app in a subprocess (``prefix``: e.g. prlimit), with options."""

    def __init__(self, api, prefix=(), **opts):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", SERVER, api, json.dumps(opts)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(re.search(r":(\d+)", line).group(1))

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read()


@pytest.fixture
def servers():
    started = []
    yield lambda *a, **kw: started.append(Server(*a, **kw)) or started[-1]
    for s in started:
        err = s.stop()
        assert "Traceback" not in err, err


# ------------------------------------------------------------ pings from a peer that never reads

@pytest.mark.parametrize("api", ["listener", "handler"])
def test_ping_flood_from_a_client_that_never_reads(servers, api):
    srv = servers(api, max_write_buffer=MiB, ping_interval=None)
    with ws_sync.connect(f"ws://127.0.0.1:{srv.port}/", max_size=None) as other:
        other.send("warm-up")
        assert other.recv(timeout=5 * UNIT) == "warm-up"
        before = srv.rss()
        flood = socket.socket()
        # A small receive window: the pongs pile up in the server, not in our kernel.
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.settimeout(5 * UNIT)
        flood.connect(("127.0.0.1", srv.port))
        raw = RawClient.__new__(RawClient)
        raw.sock, raw.buf = flood, b""
        key = base64.b64encode(os.urandom(16)).decode()
        flood.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        raw._read_until(b"\r\n\r\n")
        ping = build_frame(9, b"p" * 125, mask_key=b"\x01\x02\x03\x04")
        batch = ping * 2000
        flood.settimeout(0.5 * UNIT)
        sent, stalled, deadline = 0, 0, time.monotonic() + 30 * UNIT
        while sent < 1_000_000 and stalled < 3 and time.monotonic() < deadline:
            try:
                flood.sendall(batch)
                sent += 2000
                stalled = 0
            except socket.timeout:
                stalled += 1  # the server stopped reading us: TCP pushes back
            except OSError:
                break  # cut off
            if sent % 100_000 == 0 or stalled:
                other.send(f"still there {sent}")
                assert other.recv(timeout=5 * UNIT) == f"still there {sent}"
        grown = srv.rss() - before
        other.send("after")
        assert other.recv(timeout=5 * UNIT) == "after"
        flood.close()
    print(f"ping flood ({api}): {sent} pings sent, server RSS grew {grown / MiB:.1f} MiB")
    assert sent > 0
    # Before: 127 bytes of pong (and a bytes object) queued per ping, hundreds of MiB.
    assert grown < MiB + 8 * MiB, (grown, sent)


def test_fastws_client_flooded_with_pings_by_a_server_that_never_reads():
    """The same rule on the client side: a server pings and never reads."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: pongs stay with the client
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    stats = {"sent": 0}
    stop = threading.Event()

    def flood():
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = re.search(rb"Sec-WebSocket-Key: (\S+)", head, re.I).group(1).decode()
            accept = accept_key(key)
            conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            batch = build_frame(9, b"s" * 125) * 2000
            conn.settimeout(0.5 * UNIT)
            stalled, deadline = 0, time.monotonic() + 30 * UNIT
            while stats["sent"] < 1_000_000 and stalled < 3 and time.monotonic() < deadline and not stop.is_set():
                try:
                    conn.sendall(batch)
                    stats["sent"] += 2000
                    stalled = 0
                except socket.timeout:
                    stalled += 1
                except OSError:
                    break

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()

    async def main():
        ws = await fastws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None, max_write_buffer=MiB)
        peak = 0
        while thread.is_alive():
            peak = max(peak, ws.transport.get_write_buffer_size())
            await asyncio.sleep(0.05)
        peak = max(peak, ws.transport.get_write_buffer_size())
        ws.transport.abort()
        return peak

    try:
        peak = arun(main(), timeout=60)
    finally:
        stop.set()
        listener.close()
    print(f"client flooded: {stats['sent']} pings, peak write buffer {peak} bytes")
    assert stats["sent"] > 0
    # Held at write_limit (64 KiB) plus what one read's pings answered, far
    # under the hard limit; before: a pong queued per ping, ~127 MiB.
    assert peak <= MiB, (peak, stats)


# ------------------------------------------------------------ no memory from declared lengths

@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("api", ["listener", "handler"])
def test_half_frames_announcing_16mib_do_not_exhaust_address_space(servers, api):
    srv = servers(api, prefix=("prlimit", f"--as={600 * MiB}"), max_size=16 * MiB, ping_interval=None)
    half = bytes([0x82, 0xFF]) + struct.pack("!Q", 16 * MiB) + b"\x00\x00\x00\x00" + b"x" * 15
    socks = []
    try:
        for _ in range(300):
            c = RawClient(srv.port)
            assert c.status == 101
            c.send_raw(half)
            socks.append(c)
        # Each must have been read (the next echo goes through the same loop).
        with ws_sync.connect(f"ws://127.0.0.1:{srv.port}/", max_size=None, open_timeout=10 * UNIT) as ws:
            big = os.urandom(8 * MiB)
            ws.send(big)
            assert ws.recv(timeout=30 * UNIT) == big
        with open(f"/proc/{srv.proc.pid}/status") as f:
            size = int(re.search(r"VmSize:\s+(\d+) kB", f.read()).group(1)) * 1024
        print(f"300 half-frames ({api}): address space {size / MiB:.0f} MiB")
    finally:
        for c in socks:
            c.close()


# ------------------------------------------------------------ the TLS handshake under handshake_timeout

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    certfile, keyfile = d / "cert.pem", d / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(certfile), append=i > 0)
    return str(certfile), str(keyfile)


def _eof_within(sock, timeout) -> float | None:
    """Seconds until the peer closes (EOF or reset), or None after timeout."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None
    return time.monotonic() - start


@pytest.mark.parametrize("trickle", [False, True])
def test_tls_client_hello_never_completed_is_cut_at_handshake_timeout(servers, cert_files, trickle):
    certfile, keyfile = cert_files
    srv = servers("listener", certfile=certfile, keyfile=keyfile, handshake_timeout=1)
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        if trickle:  # the start of a ClientHello, then silence
            sock.sendall(b"\x16\x03\x01")
        took = _eof_within(sock, 20 * UNIT)  # before: uvloop's own 60 s
    print(f"TLS handshake (trickle={trickle}) cut after {took} s")
    assert took is not None and took < 5 * UNIT, took


def test_fastws_client_tls_handshake_under_handshake_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts (the kernel does) and never answers the ClientHello
    port = listener.getsockname()[1]

    async def main():
        start = time.monotonic()
        with pytest.raises((TimeoutError, asyncio.TimeoutError, ConnectionError, OSError)):
            await fastws.connect(f"wss://127.0.0.1:{port}/", handshake_timeout=1, open_timeout=30)
        return time.monotonic() - start

    try:
        took = arun(main(), timeout=60)
    finally:
        listener.close()
    print(f"client TLS handshake gave up after {took:.2f} s")
    assert took < 5 * UNIT, took
