"""Cost of the server side of the opening handshake (RFC 6455 4.2), in µs.

Two measures, best of ``--repeat`` runs:

- ``whole path``: what a listening server does for one accepted connection
  whose complete upgrade request arrives in one read: ``server._connection_class()`` (what the loop calls),
  ``connection_made`` on a fake transport, ``data_received`` with the
  request (read, check, 101 written, listener started), on uvloop. No socket: accept/read/write syscalls and uvloop's
  own work come on top of this.
- the handshake module's steps alone, each in a loop of its own (so with
  hot caches: inside the whole path the same code costs more):
  ``RequestReader()`` + ``feed``, ``is_upgrade_request``, ``check_request``,
  ``accept_response`` and ``request.headers.pack()`` (what the connection
  keeps), then all of them in one loop: the general way, which the server
  takes for a head split over reads, plain HTTP or anything unusual;
  then the short cut the server takes for a whole valid upgrade head in the
  first read (``upgrade_reader().read``, ``accept_101``).
- the whole path again with ``proxy_protocol=True`` and a PROXY v1 or v2
  header in front of the request (in the same read), and the difference.

Three requests: a browser-like one (User-Agent, Origin, Accept-*,
permessage-deflate offered), the minimal one (Host, Upgrade, Connection, Key,
Version) and the one the ``websockets`` client sends (captured over a real
socket on 127.0.0.1 when ``websockets`` is installed). Not part of the test
suite.

    python bench/micro/handshake.py [--repeat 5] [-n 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/: the harness
from harness.meta import REPO, codec_module, http_module  # noqa: E402
from harness.run import head, stamp  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's fastws first

import uvloop  # noqa: E402

from fastws import handshake  # noqa: E402
from fastws.apps import EchoListener  # noqa: E402
from fastws.server import Server  # noqa: E402

BROWSER = (
    b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://127.0.0.1:8765\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
MINIMAL = (
    b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


PROXY_HEADERS = {
    "v1": b"PROXY TCP4 203.0.113.9 127.0.0.1 50000 8765\r\n",
    "v2": (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.9")
           + socket.inet_aton("127.0.0.1") + (50000).to_bytes(2, "big") + (8765).to_bytes(2, "big")),
}


class FakeTransport:
    def write(self, data): pass
    def writelines(self, parts): pass
    def set_write_buffer_limits(self, high=None, low=None): pass
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 1)
    def is_closing(self): return False
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): pass
    def abort(self): pass
    def get_write_buffer_size(self): return 0
    def can_write_eof(self): return True


def websockets_request():
    """The request head the ``websockets`` client sends, or None."""
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        return None
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    captured = []

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        captured.append(data)
        conn.close()

    async def go():
        try:
            async with connect(f"ws://127.0.0.1:{port}/chat", open_timeout=5):
                pass
        except Exception:
            pass  # the raw server hangs up without answering

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    asyncio.run(go())
    thread.join(5)
    listener.close()
    return captured[0] if captured else None


async def whole_path(req: bytes, n: int, **options) -> float:
    server = Server(EchoListener, ping_interval=20, **options)
    keep = []
    t0 = time.perf_counter()
    for _ in range(n):
        c = server._connection_class()
        t = FakeTransport()
        c.connection_made(t)
        c.data_received(req)
        keep.append(c)
    elapsed = time.perf_counter() - t0
    assert keep[-1].path == "/chat" and keep[-1].state == "OPEN", keep[-1].state
    return elapsed / n * 1e6


def steps(req: bytes, n: int) -> dict:
    """µs per call of each handshake step, on the same request."""
    RequestReader = http_module().RequestReader
    check_request = handshake.check_request
    accept_response = handshake.accept_response
    is_upgrade_request = handshake.is_upgrade_request
    out = {}

    t0 = time.perf_counter()
    for _ in range(n):
        reader = RequestReader()
        request = reader.feed(req)
    out["RequestReader()+feed"] = time.perf_counter() - t0

    # Fresh requests, checked in the server's order: is_upgrade_request
    # first (it pays for collecting the checked fields, cached on the
    # request's Headers), then check_request.
    requests = [RequestReader().feed(req) for _ in range(n)]
    t0 = time.perf_counter()
    for request in requests:
        is_upgrade_request(request)
    out["is_upgrade_request"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for request in requests:
        _, headers = check_request(request, origins=None, subprotocols=None)
    out["check_request"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(n):
        accept_response(headers)
    out["accept_response"] = time.perf_counter() - t0

    requests = [RequestReader().feed(req) for _ in range(n)]
    t0 = time.perf_counter()
    for request in requests:
        request.headers.pack()
    out["headers.pack"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(n):
        reader = RequestReader()
        request = reader.feed(req)
        is_upgrade_request(request)
        _, headers = check_request(request, origins=None, subprotocols=None)
        accept_response(headers)
        request.headers.pack()
    out["all steps"] = time.perf_counter() - t0

    # The server's short cut for a whole upgrade head in one read (what
    # the whole path above takes): one upgrade_reader() per server, its llhttp
    # parser kept from head to head, then the 101 from the key.
    upgrades = handshake.upgrade_reader()
    read = upgrades.read
    accept_101 = handshake.accept_101
    quick = read(req)
    if quick is not None:
        t0 = time.perf_counter()
        for _ in range(n):
            read(req)
        out["short cut: read"] = time.perf_counter() - t0
        key = quick[2]
        t0 = time.perf_counter()
        for _ in range(n):
            accept_101(key)
        out["short cut: accept_101"] = time.perf_counter() - t0
    return {k: v / n * 1e6 for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("-n", type=int, default=5000)
    args = ap.parse_args()

    import httptools

    print("\n".join(head(__file__, stamp(), f"- httptools {httptools.__version__}, "
                                             f"fastws impl {getattr(codec_module(), 'IMPLEMENTATION', '?')}")))
    requests = {"browser": BROWSER, "minimal": MINIMAL}
    ws_req = websockets_request()
    if ws_req is not None:
        requests["websockets"] = ws_req

    loop = uvloop.new_event_loop()
    for name, req in requests.items():
        whole = min(loop.run_until_complete(whole_path(req, args.n)) for _ in range(args.repeat))
        best = {}
        for _ in range(args.repeat):
            for k, v in steps(req, args.n).items():
                best[k] = min(best.get(k, v), v)
        fields = req.count(b"\r\n") - 2
        print(f"\n{name} request ({len(req)} bytes, {fields} fields)")
        print(f"  {'whole server-side path':24} {whole:7.2f} µs per handshake")
        for version, header in PROXY_HEADERS.items():
            # proxy_protocol=True, the header in the request's read (the fake
            # transport's peer, 127.0.0.1, is in forwarded_allow_ips)
            proxied = min(loop.run_until_complete(whole_path(header + req, args.n, proxy_protocol=True))
                          for _ in range(args.repeat))
            print(f"  {'... PROXY ' + version + ' header first':24} {proxied:7.2f} µs per handshake "
                  f"(+{proxied - whole:.2f})")
        for k, v in best.items():
            print(f"  {k:24} {v:7.2f} µs")
    loop.close()


if __name__ == "__main__":
    main()
