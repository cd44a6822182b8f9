"""Parse throughput of the frame parser: fastws (Cython and its pure-Python
twin) and, in the same run, the parsers of the peers driven directly.

Masked binary frames (client to server, as a server parses them) of 32 B,
1 KiB, 64 KiB and 1 MiB, fed in 64 KiB chunks.  Best of ``--repeat`` runs.
Not part of the test suite.

fastws is driven three ways:

- ``feed``: ``FrameParser.feed`` on ready-made 64 KiB ``bytes`` chunks (the
  parser alone: no read is simulated);
- ``loop+feed``: what uvloop does for an ``asyncio.Protocol``: each read is
  copied into the loop's own buffer (standing for the kernel's copy), then
  into a new ``bytes`` given to ``feed``;
- ``loop+buffered``: what uvloop does for an ``asyncio.BufferedProtocol``:
  ``get_buffer``, the read copied into that view (the kernel's copy),
  ``buffer_updated``.  A read never goes past the end of a direct view, as
  with a socket; picows is driven the same way.

    python bench/micro/parse.py [--repeat 3] [--mib 8] [--only fastws]

What each peer does per frame is not quite the same, so read the ratios with
that in mind:

- fastws:     unmask, reassemble, one ``bytes`` per message, callback;
- websockets: ``Protocol.receive_data`` (sans-I/O): unmask, one ``Frame`` per
  frame (messages are assembled later, in its asyncio layer);
- aiohttp:    ``WebSocketReader.feed_data`` (its Cython build when present):
  unmask, reassemble, one ``WSMessage`` per message put in its data queue;
- picows:     ``WSProtocol.buffer_updated`` after a real handshake over a fake
  transport: unmask in place, one ``WSFrame`` view per frame, listener callback.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/: the harness
from harness.meta import REPO, load_codec  # noqa: E402
from harness.run import head, stamp  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's fastws first


SIZES = [32, 1024, 65536, 1048576]
OP_BINARY = 0x2  # RFC 6455 5.2
CHUNK = 65536


def make_stream(size, mib):
    """(chunks, message count): masked binary frames, cut into 64 KiB chunks."""
    py = load_codec("python")
    count = max(32, min(100_000, mib * 1048576 // size))
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = py.build_frame(OP_BINARY, payload, mask_key=b"\x12\x34\x56\x78")
    data = frame * count
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)], count


def best_of(repeat, run):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = run()
        best = min(best, time.perf_counter() - t0)
    return best, got


# -- drivers: each returns a function that parses all chunks and returns the
# -- number of messages (or frames) seen.


def fastws_driver(name):
    codec = load_codec(name)
    codec.FrameParser  # ImportError now if not built

    def make(chunks):
        def run():
            seen = []  # emptied after every feed, as the others' queues are
            parser = codec.FrameParser(seen.append, None, expect_masked=True, max_size=None)
            feed = parser.feed
            n = 0
            for chunk in chunks:
                feed(chunk)
                n += len(seen)
                seen.clear()
            return n

        return run

    return make


def fastws_loop_driver(name, buffered):
    """An event loop's reads of up to CHUNK bytes (what has arrived)."""
    codec = load_codec(name)
    codec.FrameParser  # ImportError now if not built

    def make(chunks):
        views = [memoryview(c) for c in chunks]

        def run():
            seen = []
            parser = codec.FrameParser(seen.append, None, expect_masked=True, max_size=None)
            n = 0
            if buffered:
                get_buffer, buffer_updated = parser.get_buffer, parser.buffer_updated
                for data in views:
                    while data:
                        view = get_buffer(CHUNK)
                        k = min(len(view), len(data))
                        view[:k] = data[:k]
                        buffer_updated(k)
                        data = data[k:]
                    n += len(seen)
                    seen.clear()
            else:
                feed = parser.feed
                rbuf = memoryview(bytearray(256 * 1024))
                for data in views:
                    k = len(data)
                    rbuf[:k] = data
                    feed(bytes(rbuf[:k]))
                    n += len(seen)
                    seen.clear()
            return n

        return run

    return make


def websockets_driver():
    from websockets.protocol import Protocol, Side

    def make(chunks):
        def run():
            proto = Protocol(Side.SERVER, max_size=None)
            n = 0
            for chunk in chunks:
                proto.receive_data(chunk)
                n += len(proto.events_received())
            return n

        return run

    return make


def aiohttp_driver():
    from aiohttp._websocket.reader import WebSocketReader
    from aiohttp.base_protocol import BaseProtocol

    # The queue class of the same build (Cython or pure Python) as the reader.
    WebSocketDataQueue = sys.modules[WebSocketReader.__module__].WebSocketDataQueue

    def make(chunks):
        def run():
            loop = asyncio.new_event_loop()
            try:
                queue = WebSocketDataQueue(BaseProtocol(loop), 2**31 - 1, loop=loop)
                reader = WebSocketReader(queue, 2**31 - 1, False, False)
                n = 0
                for chunk in chunks:
                    reader.feed_data(chunk)
                    n += len(queue._buffer)
                    queue._buffer.clear()
                return n
            finally:
                loop.close()

        return run

    return make


def picows_driver():
    import picows
    from picows.picows import WSProtocol

    class Listener(picows.WSListener):
        n = 0

        def on_ws_frame(self, transport, frame):
            Listener.n += 1

    class FakeTransport(asyncio.Transport):
        def __init__(self, sock):
            super().__init__()
            self._sock = sock

        def get_extra_info(self, name, default=None):
            return {"socket": self._sock, "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

        def write(self, data):
            pass

        def writelines(self, data):
            pass

        def is_closing(self):
            return False

        def close(self):
            pass

        def get_write_buffer_size(self):
            return 0

    request = (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    def make(chunks):
        async def arun():
            # picows sets TCP options on the socket: give it a real TCP one.
            server = socket.create_server(("127.0.0.1", 0))
            b = socket.create_connection(server.getsockname())
            a, _ = server.accept()
            server.close()
            try:
                import logging

                proto = WSProtocol(
                    None, "/", False, lambda req: Listener(), logging.getLogger("bench.picows"),
                    False, None, False, 10, 10, picows.WSAutoPingStrategy.PING_WHEN_IDLE,
                    False, 2**40, None, 1024 * 1024,
                )
                proto.connection_made(FakeTransport(a))

                def feed(data):
                    view = proto.get_buffer(len(data))
                    while len(view) < len(data):
                        proto.buffer_updated(0)
                        view = proto.get_buffer(len(data))
                    view[: len(data)] = data
                    proto.buffer_updated(len(data))

                feed(request)
                Listener.n = 0
                t0 = time.perf_counter()
                for chunk in chunks:
                    feed(chunk)
                return time.perf_counter() - t0, Listener.n
            finally:
                a.close()
                b.close()

        def run():
            return asyncio.run(arun())

        return run

    return make


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mib", type=int, default=8, help="stream size per message size (MiB)")
    ap.add_argument("--only", default="", help="comma-separated subset of drivers")
    args = ap.parse_args()

    print("\n".join(head(__file__, stamp())))
    drivers = {
        "fastws (cython)": lambda: fastws_driver("cython"),
        "fastws (cy) loop+feed": lambda: fastws_loop_driver("cython", False),
        "fastws (cy) loop+buffered": lambda: fastws_loop_driver("cython", True),
        "fastws (python twin)": lambda: fastws_driver("python"),
        "fastws (py) loop+buffered": lambda: fastws_loop_driver("python", True),
        "websockets": websockets_driver,
        "aiohttp": aiohttp_driver,
        "picows": picows_driver,
    }
    if args.only:
        drivers = {k: v for k, v in drivers.items() if any(o in k for o in args.only.split(","))}
    ready = {}
    for name, factory in drivers.items():
        try:
            ready[name] = factory()
        except Exception as exc:  # a peer that is not installed
            print(f"skip {name}: {exc!r}")
    for size in SIZES:
        chunks, count = make_stream(size, args.mib)
        total = sum(map(len, chunks))
        print(f"\n{size} B masked binary frames: {count} messages, {total / 1048576:.1f} MiB in {len(chunks)} chunks")
        print(f"  {'parser':26} {'msg/s':>12} {'MB/s':>9} {'vs cython':>10}")
        base = None
        for name, make in ready.items():
            run = make(chunks)
            try:
                if name == "picows":  # times itself, after the handshake
                    results = [run() for _ in range(args.repeat)]
                    elapsed = min(r[0] for r in results)
                    seen = results[0][1]
                else:
                    elapsed, seen = best_of(args.repeat, run)
            except Exception as exc:
                print(f"  {name:26} failed: {exc!r}")
                continue
            if seen != count:
                print(f"  {name:26} saw {seen} messages, expected {count}")
                continue
            if base is None:
                base = elapsed
            print(f"  {name:26} {count / elapsed:12,.0f} {total / elapsed / 1e6:9.1f} "
                  f"{base / elapsed:9.2f}x")


if __name__ == "__main__":
    main()
