"""Flow control both ways: memory per connection stays bounded whatever the peer does."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import fastws
from fastws.exceptions import ConnectionClosed

from cliutil import wait_for
from util import UNIT, RawClient, arun


def test_reading_pauses_while_handler_does_not_recv(serve_thread):
    """A handler that stops calling recv(): the server stops reading (TCP pushes
    back on the client) instead of queueing without bound."""
    started = threading.Event()
    release = threading.Event()
    seen = {}

    async def slow(ws):
        await ws.recv()
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        seen["queued"] = len(ws._inbox)
        seen["paused"] = ws._reading_paused
        n = 1
        async for _ in ws:
            n += 1
        seen["total"] = n

    st = serve_thread(slow, max_queue=8)
    c = RawClient(st.port)
    c.send(2, b"first")
    assert started.wait(5)
    c.sock.setblocking(False)
    sent = 0
    frame = None
    deadline = time.monotonic() + 10 * UNIT
    from fastws._py.frames import build_frame

    frame = build_frame(2, b"x" * 1000, mask_key=b"abcd")
    stalled_since = None
    while time.monotonic() < deadline:
        try:
            c.sock.send(frame)  # a frame may go out partially: count whole ones only
            sent += 1
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5 * UNIT:
                break  # the kernel buffers are full: the server stopped reading
            time.sleep(0.01)
    assert stalled_since is not None, "the server never pushed back"
    release.set()
    wait_for(lambda: "paused" in seen, timeout=10 * UNIT)  # the handler has looked
    # What the server holds is its queue (<= max_queue + what one read delivered),
    # not everything the client pushed.
    assert seen["paused"] is True
    assert seen["queued"] <= 8 + 300, seen
    c.sock.setblocking(True)
    c.close()


def test_listener_send_reports_high_water_and_drain(serve_thread):
    events = []

    class Pusher(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            chunk = b"y" * 65536
            # Into a peer that does not read, until the write buffer passes
            # write_limit: that is only once the kernel's socket buffers are
            # full (several MiB on loopback, depending on its autotuning), so
            # the cap is far above them.
            for i in range(512):
                if not ws.send(chunk):
                    events.append(("high", i))
                    break

        def on_drain(self):
            events.append(("drain",))

    st = serve_thread(Pusher, write_limit=65536)
    c = RawClient(st.port)
    wait_for(lambda: events, timeout=10 * UNIT)  # on_connect has run
    assert events[0][0] == "high" and events[0][1] < 512
    # Now read everything: the buffer drains and on_drain fires.
    c.sock.settimeout(0.1 * UNIT)
    deadline = time.monotonic() + 10 * UNIT
    while ("drain",) not in events and time.monotonic() < deadline:
        try:
            if not c.sock.recv(1 << 20):
                break
        except socket.timeout:
            pass
    assert ("drain",) in events
    c.close()


@pytest.mark.parametrize("write_limit", [65536, 16384, 200000])
def test_the_write_buffer_pauses_at_write_limit_and_resumes_at_a_quarter(serve_thread, write_limit):
    """The high-water mark is write_limit and the low-water mark
    write_limit // 4, whatever the transport starts with (uvloop: 64 KiB and
    16 B), and send() says False once the buffer is past the mark."""
    seen = {}

    class Pusher(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            transport = ws._transport
            for _ in range(100000):  # 400 MiB if nothing stopped it: stops at the pause
                if not ws.send(b"p" * 4096):
                    break
            seen["size"] = transport.get_write_buffer_size()
            seen["limits"] = transport.get_write_buffer_limits()

        def on_drain(self):
            seen["drained"] = True

    st = serve_thread(Pusher, write_limit=write_limit)
    c = RawClient(st.port)
    wait_for(lambda: "limits" in seen, timeout=10 * UNIT)
    # paused with at most one frame (4 KiB and a 4-byte header) above the mark
    assert write_limit < seen["size"] <= write_limit + 4100, seen
    assert seen["limits"] == (write_limit // 4, write_limit)
    c.sock.settimeout(0.1 * UNIT)
    deadline = time.monotonic() + 10 * UNIT
    while "drained" not in seen and time.monotonic() < deadline:
        try:
            if not c.sock.recv(1 << 20):
                break
        except socket.timeout:
            pass
    assert seen.get("drained")
    c.close()


def test_peer_that_never_reads_is_cut_off_at_max_write_buffer(serve_thread):
    """RFC-agnostic safety: a listener that ignores send()'s False and a peer
    that never reads; past max_write_buffer the connection is dropped and its
    buffer freed, instead of growing without bound."""
    closed = []

    class Flood(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            chunk = b"z" * 65536
            try:
                for _ in range(4000):  # 256 MiB if nothing stopped it
                    ws.send(chunk)
            except ConnectionClosed:
                pass

        def on_close(self, code, reason):
            closed.append(code)

    st = serve_thread(Flood, write_limit=65536, max_write_buffer=2 * 2**20)
    c = RawClient(st.port)
    deadline = time.monotonic() + 5 * UNIT
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == [1008]
    assert not st.server.connections
    c.close()


def test_handler_send_waits_for_drain(serve_thread):
    progress = []
    N = 400  # 25 MiB: more than the loopback socket buffers absorb

    async def pusher(ws):
        chunk = b"w" * 65536
        for i in range(N):
            await ws.send(chunk)
            progress.append(i)

    st = serve_thread(pusher, write_limit=65536)
    c = RawClient(st.port)
    time.sleep(0.3 * UNIT)
    stuck_at = len(progress)
    assert stuck_at < N, "send() should wait while the peer does not read"
    got = 0
    while got < N:
        fin, opcode, payload = c.recv_frame()
        if opcode == 2:
            got += 1
    wait_for(lambda: len(progress) == N, timeout=10 * UNIT)
    c.close()


def test_client_recv_after_server_close_gets_queued_messages_first(serve_thread):
    async def burst(ws):
        for i in range(50):
            await ws.send(str(i))
        await ws.close(1000)

    st = serve_thread(burst)

    async def main():
        async with fastws.connect(f"ws://127.0.0.1:{st.port}") as ws:
            await asyncio.sleep(0.2 * UNIT)
            got = [m async for m in ws]
            assert got == [str(i) for i in range(50)]
            assert ws.close_code == 1000
    arun(main())


def test_recv_after_cancelled_recv(serve_thread):
    """A recv() cancelled by a timeout leaves the connection usable, and no
    message is lost."""
    timed_out = threading.Event()

    async def handler(ws):
        try:
            await asyncio.wait_for(ws.recv(), 0.05)
        except asyncio.TimeoutError:
            timed_out.set()
        async for message in ws:  # still works after the cancelled wait
            await ws.send(message)

    st = serve_thread(handler)
    c = RawClient(st.port)
    assert timed_out.wait(10 * UNIT)  # the first recv() was cancelled before anything came
    for i in range(5):
        c.send(1, str(i).encode())
    assert [c.recv_frame()[2] for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    c.close()


def test_write_timeout_cuts_off_a_peer_that_stops_reading(serve_thread):
    closed = []

    class Push(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            for _ in range(100):  # 6.4 MiB: above write_limit, under max_write_buffer
                ws.send(b"q" * 65536)

        def on_close(self, code, reason):
            closed.append((code, time.monotonic()))

    st = serve_thread(Push, write_limit=65536, max_write_buffer=64 * 2**20,
                      write_timeout=0.5 * UNIT, timer_tick=0.05 * UNIT, ping_interval=None)
    start = time.monotonic()
    c = RawClient(st.port)
    deadline = time.monotonic() + 5 * UNIT
    while not closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed and closed[0][0] == 1013
    assert closed[0][1] - start < 2.5 * UNIT
    assert not st.server.connections
    c.close()


def test_write_timeout_spares_a_peer_that_reads(serve_thread):
    closed = []

    class Push(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            for _ in range(100):
                ws.send(b"q" * 65536)
            ws.send("end")

        def on_close(self, code, reason):
            closed.append(code)

    st = serve_thread(Push, write_limit=65536, write_timeout=1.0 * UNIT, timer_tick=0.05 * UNIT)
    c = RawClient(st.port)
    n = 0
    while True:  # a slow but steady reader
        fin, opcode, payload = c.recv_frame()
        if opcode == 1:
            break
        n += 1
        if n % 10 == 0:
            time.sleep(0.05)
    assert n == 100 and payload == b"end" and not closed
    c.close()
