"""permessage-deflate (RFC 7692): negotiation tables, the parser's RSV1 rules
(both implementations), limits, and real peers (websockets, aiohttp) against
fastws with compression on, both API levels."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
import zlib

import aiohttp
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import fastws
from fastws import deflate
from fastws.apps import EchoListener, echo_handler
from fastws.exceptions import ConfigError, FrameError, InvalidResponse, MessageTooBig, ProtocolError
from fastws.options import Options

from util import RawClient, arun

APPS = {"listener": EchoListener, "handler": echo_handler}
ON = dict(compression="deflate")


def raw_deflate(data: bytes, bits: int = 15) -> bytes:
    """A message compressed as RFC 7692 7.2.1 says, written with zlib directly."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# ------------------------------------------------------------------ negotiation (server)

def neg(header, **opts):
    params = deflate.negotiate([header] if isinstance(header, str) else header, Options(**ON, **opts))
    return None if params is None else params.response


@pytest.mark.parametrize("header, opts, response", [
    # plain offer: the server's defaults (window 12) are announced
    ("permessage-deflate", {}, "permessage-deflate; server_max_window_bits=12"),
    ("permessage-deflate", dict(server_max_window_bits=15), "permessage-deflate"),
    # browsers: client_max_window_bits without a value -> the server limits it
    ("permessage-deflate; client_max_window_bits", {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits", dict(server_max_window_bits=15, client_max_window_bits=15),
     "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits=10", dict(server_max_window_bits=15, client_max_window_bits=15),
     "permessage-deflate; client_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits=14", {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # server_max_window_bits is a limit the response repeats
    ("permessage-deflate; server_max_window_bits=10", {}, "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=15", {}, "permessage-deflate; server_max_window_bits=12"),
    ('permessage-deflate; server_max_window_bits="9"', {}, "permessage-deflate; server_max_window_bits=9"),
    # context takeover
    ("permessage-deflate; server_no_context_takeover", dict(server_max_window_bits=15),
     "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover", dict(server_max_window_bits=15),
     "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate", dict(server_max_window_bits=15, server_no_context_takeover=True,
                                client_no_context_takeover=True),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    # case-insensitive names, odd spacing, empty list elements
    ("  PerMessage-Deflate ;client_max_window_bits ,", dict(server_max_window_bits=15, client_max_window_bits=15),
     "permessage-deflate"),
    # several offers: the first acceptable one wins
    ("permessage-deflate; server_max_window_bits=10, permessage-deflate", {},
     "permessage-deflate; server_max_window_bits=10"),
    (["x-webkit-deflate-frame", "permessage-deflate; client_no_context_takeover"], dict(server_max_window_bits=15),
     "permessage-deflate; client_no_context_takeover"),
    # declined offers (unknown, duplicate, bad values), then an acceptable one
    ("permessage-deflate; foo, permessage-deflate", dict(server_max_window_bits=15), "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover, permessage-deflate; "
     "server_max_window_bits=11", {}, "permessage-deflate; server_max_window_bits=11"),
    # nothing acceptable: no extension
    ("permessage-deflate; foo", {}, None),
    ("permessage-deflate; server_no_context_takeover=1", {}, None),
    ("permessage-deflate; client_no_context_takeover=x", {}, None),
    ("permessage-deflate; server_max_window_bits", {}, None),
    ("permessage-deflate; server_max_window_bits=16", {}, None),
    ("permessage-deflate; server_max_window_bits=7", {}, None),
    ("permessage-deflate; server_max_window_bits=010", {}, None),
    ("permessage-deflate; client_max_window_bits=0", {}, None),
    ("permessage-deflate; client_max_window_bits=1x", {}, None),
    ('permessage-deflate; client_max_window_bits="16"', {}, None),
    ("permessage-deflate; client_max_window_bits=10; client_max_window_bits", {}, None),
    ("x-webkit-deflate-frame", {}, None),
    ("deflate-frame; no_context_takeover", {}, None),
])
def test_server_negotiation(header, opts, response):
    assert neg(header, **opts) == response


@pytest.mark.parametrize("header", [
    "permessage-deflate;", ";", "permessage-deflate; =1", "permessage-deflate; a=", "permessage-deflate a",
    'permessage-deflate; a="1 2"', 'permessage-deflate; a="unterminated', "permessage-deflate; a=1=2",
    "permessage-deflate, ;x", "perm\x01", "permessage-deflate; a=@",
])
def test_malformed_header_is_an_error(header):
    with pytest.raises(ValueError):
        deflate.negotiate([header], Options(**ON))


def test_negotiated_params():
    p = deflate.negotiate(["permessage-deflate; client_max_window_bits=9; server_no_context_takeover"],
                          Options(**ON, client_max_window_bits=10))
    assert (p.local_bits, p.remote_bits, p.local_no_context, p.remote_no_context) == (12, 9, True, False)
    assert p.shared_key == (12, 5, 6)
    # window 8 requested for the server: valid, but zlib cannot make it, so
    # the server accepts and never compresses (uncompressed is always valid)
    p = deflate.negotiate(["permessage-deflate; server_max_window_bits=8"], Options(**ON))
    assert p.response == "permessage-deflate; server_max_window_bits=8" and p.local_bits == 0


# ------------------------------------------------------------------ negotiation (client)

@pytest.mark.parametrize("opts, offer", [
    ({}, "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    (dict(server_max_window_bits=15, client_max_window_bits=15), "permessage-deflate; client_max_window_bits"),
    (dict(server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=15),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12"),
])
def test_client_offer(opts, offer):
    assert deflate.client_offer(Options(**ON, **opts)) == offer


@pytest.mark.parametrize("response, opts, expect", [
    ("permessage-deflate", dict(server_max_window_bits=15), (12, 15, False, False)),
    ("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9", {}, (9, 10, False, False)),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", dict(server_max_window_bits=15),
     (12, 15, True, True)),
    ("permessage-deflate; server_max_window_bits=12", dict(server_no_context_takeover=True), ValueError),
    ("permessage-deflate", {}, ValueError),  # asked for server_max_window_bits=12, not granted
    ("permessage-deflate; server_max_window_bits=13", {}, ValueError),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=13", {}, ValueError),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits", {}, ValueError),
    ("permessage-deflate; server_max_window_bits=12; foo", {}, ValueError),
    ("permessage-deflate; server_max_window_bits=12, permessage-deflate", {}, ValueError),
    ("x-other", {}, ValueError),
])
def test_client_accept(response, opts, expect):
    o = Options(**ON, **opts)
    if expect is ValueError:
        with pytest.raises(ValueError):
            deflate.client_accept([response], o)
    else:
        p = deflate.client_accept([response], o)
        assert (p.local_bits, p.remote_bits, p.local_no_context, p.remote_no_context) == expect


def test_options_validation():
    for bad in (dict(compression="gzip"), dict(compression=True), dict(server_max_window_bits=8),
                dict(client_max_window_bits=16), dict(deflate_mem_level=0), dict(deflate_level=10),
                dict(compression_threshold=-1), dict(server_no_context_takeover="yes")):
        with pytest.raises(ConfigError):
            Options(**bad)
    assert Options().compression is None  # off by default on the server


# ------------------------------------------------------------------ parser: RSV1 (both implementations)

def frame(b0, payload, key=b"\x01\x02\x03\x04"):
    n = len(payload)
    head = bytes([b0, 0x80 | n]) if n < 126 else bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big") \
        if n < 65536 else bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def parser(impl, max_size=2**20, params=None):
    got = []
    pmd = deflate.PerMessageDeflate(params or deflate.negotiate(["permessage-deflate"], Options(**ON, max_size=max_size)))
    p = impl.FrameParser(got.append, lambda op, pl: got.append((op, pl)), expect_masked=True,
                         max_size=max_size, inflate=pmd.inflate)
    return p, got


def test_parser_compressed_messages(impl):
    p, got = parser(impl)
    text = "héllo wörld " * 50
    z = raw_deflate(text.encode())
    # one frame; then the same split over three frames with a ping inside
    p.feed(frame(0xC1, z))
    p.feed(frame(0x41, z[:5]) + frame(0x89, b"hi") + frame(0x00, z[5:9]) + frame(0x80, z[9:]))
    zb = raw_deflate(bytes(range(256)) * 10)
    p.feed(frame(0xC2, zb) + frame(0x82, b"plain"))  # uncompressed messages stay allowed
    p.feed(frame(0xC1, b"\x00"))  # an empty compressed message (RFC 7692 7.2.3.6)
    assert got == [text, (9, b"hi"), text, bytes(range(256)) * 10, b"plain", ""]
    assert p.messages_received == 5


@pytest.mark.parametrize("data, error", [
    (frame(0xC9, b""), "RSV1 set on a control frame"),
    (frame(0x41, b"a") + frame(0xC0, b"b"), "RSV1 set on a continuation frame"),
    (frame(0xA1, b"a"), "RSV bits set"),
    (frame(0x91, b"a"), "RSV bits set"),
])
def test_parser_rsv_errors(impl, data, error):
    p, got = parser(impl)
    with pytest.raises(FrameError) as info:
        p.feed(data)
    assert info.value.reason == error and p.failed


def test_parser_rsv1_without_extension(impl):
    p = impl.FrameParser(lambda m: None, lambda o, p: None, expect_masked=True)
    with pytest.raises(FrameError, match="RSV bits set"):
        p.feed(frame(0xC1, raw_deflate(b"x")))


@pytest.mark.parametrize("payload, code", [
    (b"\xff\xff\xff\xff", 1007),                 # not deflate data
    (raw_deflate(b"\xff\xfe invalid"), 1007),    # inflates to invalid UTF-8 (text)
])
def test_parser_bad_compressed_data(impl, payload, code):
    p, got = parser(impl)
    with pytest.raises(ProtocolError) as info:
        p.feed(frame(0xC1, payload))
    assert info.value.code == code and p.failed and got == []


def test_bomb_is_1009_with_bounded_memory(impl):
    """100 MiB of zeros compress to ~100 KiB; with max_size 1 MiB inflating stops
    after max_size + 1 bytes of output."""
    bomb = raw_deflate(b"\x00" * (100 * 2**20))
    assert len(bomb) < 200_000
    p, got = parser(impl, max_size=2**20)
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBig):
            p.feed(frame(0xC2, bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # max_size of output plus copies of the 100 KiB bomb (measured: +0.45 MiB
    # Cython, +0.75 MiB twin); without the bound it would be 100 MiB
    assert peak < 2 * 2**20, peak
    assert p.failed and got == []
    # exactly max_size inflated is fine
    p, got = parser(impl, max_size=2**20)
    p.feed(frame(0xC2, raw_deflate(b"\x00" * 2**20)))
    assert got == [b"\x00" * 2**20]


def test_compressed_size_limit(impl):
    """An endless run of empty stored blocks inflates to nothing: the compressed
    size is limited too (max_size + 1/8 + 1 KiB)."""
    p, got = parser(impl, max_size=1000)
    empty_blocks = b"\x00\x00\x00\xff\xff" * 500  # 2500 bytes of nothing
    with pytest.raises(MessageTooBig):
        p.feed(frame(0xC2, empty_blocks))
    p, got = parser(impl, max_size=10000)
    p.feed(frame(0xC2, empty_blocks))
    assert got == [b""]


def test_context_takeover_across_messages(impl):
    """With context takeover a message may refer to the previous one."""
    c = zlib.compressobj(6, zlib.DEFLATED, -12)
    msgs = [b"the same words again and again " * 20 for _ in range(3)]
    p, got = parser(impl)
    sizes = []
    for m in msgs:
        z = (c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        sizes.append(len(z))
        p.feed(frame(0xC2, z))
    assert got == msgs and sizes[1] < sizes[0] // 3


# ------------------------------------------------------------------ real peers

def big_text(n):
    return ("aé€😀 fastws " * (n // 16 + 1))[:n]


MESSAGES = ["hi", "x" * 200, big_text(70000), os.urandom(300) + b"\x00" * 5000, b"\x00" * 2**20 * 3,
            big_text(3 * 2**20), b""]


@pytest.fixture(params=sorted(APPS))
def deflate_port(request, serve_thread):
    st = serve_thread(APPS[request.param], max_size=16 * 2**20, compression="deflate", compression_threshold=0)
    return st.port


def test_websockets_client(deflate_port):
    async def main():
        async with ws_connect(f"ws://127.0.0.1:{deflate_port}", max_size=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            for m in MESSAGES:
                await ws.send(m)
                assert await ws.recv() == m
            await ws.send(["frag", "mented ", "text"])   # fragmented, compressed as one stream
            assert await ws.recv() == "fragmented text"
            await ws.send([b"\x01" * 70000, b"\x02" * 70000])
            assert await ws.recv() == b"\x01" * 70000 + b"\x02" * 70000
    arun(main())


@pytest.mark.parametrize("compress", [15, 9])
def test_aiohttp_client(deflate_port, compress):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{deflate_port}/", compress=compress,
                                          max_msg_size=0) as ws:
                assert ws.compress  # permessage-deflate negotiated (aiohttp reports a window size)
                for m in MESSAGES:
                    if isinstance(m, str):
                        await ws.send_str(m)
                    else:
                        await ws.send_bytes(m)
                    reply = await ws.receive()
                    assert reply.data == m
    arun(main())


def test_server_frames_are_compressed(serve_thread):
    """On the wire: RSV1 on the echo of a large message, none below the threshold."""
    st = serve_thread(EchoListener, compression="deflate", compression_threshold=64)
    c = RawClient(st.port, extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    assert b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12" in c.head
    c.send(1, raw_deflate(b"abc" * 1000, bits=12), rsv=0x40)
    b0, b1 = c._read_exact(2)
    n = b1 & 0x7F
    payload = c._read_exact(n)
    assert b0 == 0xC1 and n < 100
    assert zlib.decompressobj(-12).decompress(payload + b"\x00\x00\xff\xff") == b"abc" * 1000
    c.send(1, b"small")
    b0, b1 = c._read_exact(2)
    assert b0 == 0x81 and c._read_exact(b1) == b"small"
    c.close()


@pytest.mark.parametrize("header, status", [
    ("permessage-deflate; =x", 400),
    ("permessage-deflate; foo", 101),   # declined offer: no extension, still 101
])
def test_server_header_handling(serve_thread, header, status):
    st = serve_thread(EchoListener, compression="deflate")
    c = RawClient(st.port, extra=f"Sec-WebSocket-Extensions: {header}\r\n")
    assert c.status == status
    assert b"Sec-WebSocket-Extensions" not in c.head
    c.close()


def test_compression_off_ignores_offers(serve_thread):
    st = serve_thread(EchoListener)
    c = RawClient(st.port, extra="Sec-WebSocket-Extensions: permessage-deflate; =x\r\n")
    assert c.status == 101 and b"Sec-WebSocket-Extensions" not in c.head
    c.send(1, raw_deflate(b"x" * 100), rsv=0x40)
    assert c.recv_close()[0] == 1002
    c.close()


def test_bomb_over_the_wire(serve_thread):
    st = serve_thread(EchoListener, compression="deflate", max_size=2**20)
    c = RawClient(st.port, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    c.send(2, raw_deflate(b"\x00" * (64 * 2**20), bits=12), rsv=0x40)
    assert c.recv_close()[0] == 1009
    c.close()


def test_fastws_client_against_websockets_server():
    async def main():
        async def echo(ws):
            async for m in ws:
                await ws.send(m)

        async with ws_serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with fastws.connect(f"ws://127.0.0.1:{port}", max_size=None, compression_threshold=0) as ws:
                assert ws._deflate is not None
                assert ws.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
                for m in MESSAGES:
                    await ws.send(m)
                    assert await ws.recv() == m
            async with fastws.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                assert ws._deflate is None and "Sec-WebSocket-Extensions" not in ws.headers
                await ws.send("plain")
                assert await ws.recv() == "plain"
    arun(main())


def test_fastws_client_rejects_unasked_response():
    """A server that answers with parameters the client did not offer fails the handshake."""
    async def main():
        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
            from fastws.handshake import accept_key
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() +
                         b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12; x=1\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(InvalidResponse, match="Sec-WebSocket-Extensions"):
            await fastws.connect(f"ws://127.0.0.1:{port}")
        server.close()
    arun(main())


def test_client_context_takeover_options():
    async def main():
        async with fastws.serve(echo_handler, "127.0.0.1", 0, compression="deflate", compression_threshold=0,
                                server_no_context_takeover=True) as server:
            async with fastws.connect(f"ws://127.0.0.1:{server.port}", client_no_context_takeover=True,
                                      compression_threshold=0) as ws:
                p = ws._deflate.params
                assert p.local_no_context and p.remote_no_context
                for _ in range(3):
                    await ws.send("again " * 100)
                    assert await ws.recv() == "again " * 100
                assert ws._deflate._inflater is None  # dropped after each message
            (conn,) = server.connections or [None]
    arun(main())


def test_publish_compresses_once(serve_thread, monkeypatch):
    """server_no_context_takeover: one compression per publish for every
    subscriber with the same setting; the others get the plain frame."""
    calls = []
    real = deflate.compress

    def counting(params, data, c=None):
        calls.append(c is None)
        return real(params, data, c)

    from fastws import pubsub

    monkeypatch.setattr(pubsub, "compress", counting)  # the compress-once fan-out's

    async def handler(ws):
        ws.subscribe("t")
        await ws.send("ready")
        async for m in ws:
            pass

    async def main():
        async with fastws.serve(handler, "127.0.0.1", 0, compression="deflate", compression_threshold=0,
                                server_no_context_takeover=True) as server:
            url = f"ws://127.0.0.1:{server.port}"
            clients = [await ws_connect(url) for _ in range(5)]
            plain = await ws_connect(url, compression=None)
            for c in clients + [plain]:
                assert await c.recv() == "ready"
            calls.clear()
            msg = "published " * 500
            assert server.publish("t", msg) == 6
            for c in clients + [plain]:
                assert await c.recv() == msg
            assert calls == [True]  # compressed once, with the shared compressor
            for c in clients + [plain]:
                await c.close()
    arun(main())


def test_pure_python_server_with_websockets(tmp_path):
    """The twin parser behind a real server (FASTWS_PURE_PYTHON=1) with compression."""
    env = dict(os.environ, FASTWS_PURE_PYTHON="1")
    server = subprocess.Popen([sys.executable, "-m", "fastws", "echo", "--port", "0", "--compression", "deflate",
                               "--log-level", "warning"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert "implementation python" in line and "compression deflate" in line, line
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])

        async def main():
            async with ws_connect(f"ws://127.0.0.1:{port}") as ws:
                for m in ["x" * 1000, b"\x00" * 100000, big_text(5000)]:
                    await ws.send(m)
                    assert await ws.recv() == m
        arun(main())
    finally:
        server.terminate()
        server.wait(10)
