"""Large data frames read straight into the message (fastws/transport.py's
``_DirectReads``): when 64 KiB or more of a data frame's payload are still to
come, the extension's connection core hands the transport to a
BufferedProtocol whose buffer is the message itself, and takes it back after
16 reads without a large frame. Real peers (the ``websockets`` library, raw sockets), both API
levels, uvloop and asyncio's own loop; on the pure-Python twins (whose parser
never lends its message) the same tests check that nothing switches and that
everything still arrives.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest
import uvloop
import websockets

import fastws
from fastws.apps import EchoListener, echo_handler
from fastws.transport import StreamConnection, _DirectReads
from util import UNIT, RawClient, build_frame

EXT = fastws.IMPLEMENTATION == "cython"
APPS = {"listener": EchoListener, "handler": echo_handler}
LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
SIZES = [65536 + 1, 200_000, 1 << 20, (3 << 20) + 7]


@pytest.fixture
def switches(monkeypatch):
    """Counts the transport's hand-overs (to _DirectReads and back) and the
    reads that went straight into a message."""
    counts = {"to_direct": 0, "back": 0, "direct_reads": 0}
    lock = threading.Lock()  # servers may run in a thread of their own
    begin, end = StreamConnection._direct_reads_begin, StreamConnection._direct_reads_end

    def counted_begin(self, parser):
        begin(self, parser)
        if self._transport.get_protocol() is not self:
            with lock:
                counts["to_direct"] += 1

    def counted_end(self):
        was_direct = self._transport.get_protocol() is not self
        end(self)
        if was_direct and self._transport.get_protocol() is self:
            with lock:
                counts["back"] += 1

    def counted_update(self, nbytes):
        with lock:
            counts["direct_reads"] += 1
        return updated(self, nbytes)

    updated = _DirectReads.buffer_updated
    monkeypatch.setattr(_DirectReads, "buffer_updated", counted_update)
    monkeypatch.setattr(StreamConnection, "_direct_reads_begin", counted_begin)
    monkeypatch.setattr(StreamConnection, "_direct_reads_end", counted_end)
    return counts


def _run(loop: str, coro):
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(coro, 120 * UNIT))


def _text(n: int) -> str:
    # 1-, 2-, 3- and 4-byte code points: reads cut them anywhere.
    return ("a\u00e9\u20ac\U0001f600" * (n // 10 + 1))[: n // 3]


def _assert_switched(switches, at_least: int, conns: int = 1) -> None:
    """At least ``at_least`` reads went straight into a message; every
    hand-over was handed back, except at most one per connection (a
    connection may end while its transport is still on _DirectReads)."""
    if EXT:
        assert switches["to_direct"] >= 1, switches
        assert switches["to_direct"] - conns <= switches["back"] <= switches["to_direct"], switches
        # The event loop really called get_buffer/buffer_updated.
        assert switches["direct_reads"] >= at_least, switches
    else:  # the twin parser lends only its scratch buffer: nothing to gain
        assert switches == {"to_direct": 0, "back": 0, "direct_reads": 0}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("api", APPS)
def test_large_messages_echo_exactly(loop, api, switches):
    async def main():
        server = await fastws.serve(APPS[api], "127.0.0.1", 0, max_size=16 << 20)
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/", max_size=None,
                                          compression=None) as ws:
                for n in SIZES:
                    data = os.urandom(n)
                    await ws.send(data)
                    assert await ws.recv() == data
                    text = _text(n)
                    await ws.send(text)
                    assert await ws.recv() == text
                # A fragmented message of large fragments: one hand-over each.
                parts = [os.urandom(150_000) for _ in range(3)]
                await ws.send(parts)
                assert await ws.recv() == b"".join(parts)
                # Back to bytes after each: small messages, many per read.
                for i in range(200):
                    await ws.send(f"m{i}")
                for i in range(200):
                    assert await ws.recv() == f"m{i}"
                # Several large messages in flight at once.
                burst = [os.urandom(300_000) for _ in range(6)]
                for data in burst:
                    await ws.send(data)
                for data in burst:
                    assert await ws.recv() == data
        finally:
            await server.shutdown(5)

    _run(loop, main())
    _assert_switched(switches, 5)


@pytest.mark.parametrize("api", APPS)
def test_invalid_utf8_deep_in_a_large_text_frame_closes_1007(serve_thread, api, switches):
    st = serve_thread(APPS[api], max_size=4 << 20)
    c = RawClient(st.port)
    payload = b"a" * 300_000 + b"\xff" + b"a" * 300_000
    c.send_raw(build_frame(1, payload, mask_key=os.urandom(4)))
    assert c.recv_close()[0] == 1007
    assert c.wait_eof()
    c.close()
    _assert_switched(switches, 1)


@pytest.mark.parametrize("api", APPS)
def test_large_frame_then_protocol_error_in_the_same_write(serve_thread, api):
    st = serve_thread(APPS[api], max_size=4 << 20)
    c = RawClient(st.port)
    data = os.urandom(500_000)
    # The echo of the large frame first, then 1002 for the unmasked frame after it.
    c.send_raw(build_frame(2, data, mask_key=os.urandom(4)) + build_frame(2, b"unmasked"))
    assert c.recv_frame() == (True, 2, data)
    assert c.recv_close()[0] == 1002
    c.close()


def test_peer_gone_in_the_middle_of_a_large_frame(serve_thread, switches, caplog):
    closed = []

    class Echo(EchoListener):
        def on_close(self, code, reason):
            closed.append(code)

    st = serve_thread(Echo, max_size=4 << 20)
    c = RawClient(st.port)
    frame = build_frame(2, os.urandom(1 << 20), mask_key=os.urandom(4))
    with caplog.at_level(logging.WARNING, logger="fastws"):
        c.send_raw(frame[:200_000])
        time.sleep(0.2 * UNIT)
        c.close()
        deadline = time.monotonic() + 5 * UNIT
        while not closed and time.monotonic() < deadline:
            time.sleep(0.02)
    assert closed == [1006]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # The server goes on serving, with large messages too.
    c = RawClient(st.port)
    data = os.urandom(400_000)
    c.send(2, data)
    assert c.recv_frame() == (True, 2, data)
    c.close()
    _assert_switched(switches, 2, conns=2)


def test_handler_with_a_full_inbox_during_large_frames(serve_thread, switches):
    """max_queue=1 and a handler slower than the peer: reading pauses in the
    middle of the direct reads; every message still arrives, in order."""
    got = []

    async def slow(ws):
        async for msg in ws:
            await asyncio.sleep(0.02)
            got.append(msg)
            await ws.send(len(msg).to_bytes(4, "big"))

    st = serve_thread(slow, max_size=4 << 20, max_queue=1)
    c = RawClient(st.port)
    sent = [os.urandom(n) for n in (300_000, 70_000, 1 << 20, 5, 200_000, 700_000)]
    for data in sent:
        c.send(2, data)
    for data in sent:
        assert c.recv_frame() == (True, 2, len(data).to_bytes(4, "big"))
    assert got == sent
    c.close()
    _assert_switched(switches, 3)


@pytest.mark.parametrize("loop", LOOPS)
def test_client_receives_large_messages_from_websockets(loop, switches):
    """fastws.connect is a StreamConnection too: a server's large (unmasked)
    frames are read straight into the message."""
    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async def main():
        async with websockets.serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as srv:
            port = srv.sockets[0].getsockname()[1]
            async with fastws.connect(f"ws://127.0.0.1:{port}/", max_size=16 << 20) as ws:
                for n in SIZES:
                    data = os.urandom(n)
                    await ws.send(data)
                    assert await ws.recv() == data
                    await ws.send(_text(n))
                    assert await ws.recv() == _text(n)

    _run(loop, main())
    _assert_switched(switches, 3)


@pytest.mark.parametrize("api", APPS)
def test_large_compressed_messages(api, switches):
    """permessage-deflate: a large compressed frame is read straight into the
    parser's message buffer, then inflated (random bytes do not shrink, so
    the frames stay large)."""
    async def main():
        server = await fastws.serve(APPS[api], "127.0.0.1", 0, max_size=16 << 20, compression="deflate")
        try:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/", max_size=None,
                                          compression="deflate") as ws:
                for n in (200_000, 1 << 20):
                    data = os.urandom(n)
                    await ws.send(data)
                    assert await ws.recv() == data
                    text = _text(3 * n)  # compresses well: small frames
                    await ws.send(text)
                    assert await ws.recv() == text
        finally:
            await server.shutdown(5)

    _run("uvloop", main())
    _assert_switched(switches, 1)


def test_back_to_bytes_after_small_messages(serve_thread):
    """After a large message the transport stays on _DirectReads (the next
    large frame's first read is not copied by the loop either) until
    _DirectReads.STAY reads in a row brought no large frame."""
    class Which(EchoListener):
        def on_message(self, data):
            if data == "which?":
                ws = self.ws
                self.ws.send("bytes" if ws.transport.get_protocol() is ws else "direct")
            else:
                super().on_message(data)

    st = serve_thread(Which, max_size=4 << 20)
    c = RawClient(st.port)

    def ask():
        c.send(1, b"which?")
        return c.recv_frame()[2]

    assert ask() == b"bytes"
    data = os.urandom(600_000)
    c.send(2, data)
    assert c.recv_frame() == (True, 2, data)
    assert ask() == (b"direct" if EXT else b"bytes")
    for i in range(_DirectReads.STAY):  # one read each: sent after the echo of the last
        c.send(1, b"%d" % i)
        assert c.recv_frame() == (True, 1, b"%d" % i)
    assert ask() == b"bytes"
    # And again.
    c.send(2, data)
    assert c.recv_frame() == (True, 2, data)
    assert ask() == (b"direct" if EXT else b"bytes")
    c.close()


@pytest.mark.parametrize("api", APPS)
def test_parser_released_while_on_direct_reads(serve_thread, api, switches):
    """Idle after a large message: keepalive releases the parser while the
    transport is still on _DirectReads; the next bytes (a pong, a message)
    are taken as plain data and the transport goes back to the connection."""
    st = serve_thread(APPS[api], max_size=4 << 20, ping_interval=0.2 * UNIT, ping_timeout=5,
                      timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    data = os.urandom(300_000)
    c.send(2, data)
    assert c.recv_frame() == (True, 2, data)
    conn = st.call(lambda: next(iter(st.server.connections)))
    deadline = time.monotonic() + 5 * UNIT
    while st.call(lambda: conn._parser) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st.call(lambda: conn._parser) is None
    c.send(1, b"after idle")
    assert c.recv_data() == (1, b"after idle")
    assert st.call(lambda: conn.transport.get_protocol() is conn)
    c.send(2, data)  # and large ones still work
    assert c.recv_data() == (2, data)
    c.close()
    _assert_switched(switches, 2)
