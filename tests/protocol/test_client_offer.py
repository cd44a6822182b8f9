"""The client's permessage-deflate offer (issue #17): what ``fastws.connect``
and ``fastws.syncclient`` offer by default, which answers they accept, and
byte-exact round trips against real servers (websockets, aiohttp, fastws)
with the default offer.
"""
from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web
from websockets.asyncio.server import serve as ws_serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

import fastws
from fastws import deflate
from fastws.apps import EchoListener, echo_handler
from fastws.deflate import client_options
from fastws.syncclient import connect as sync_connect

from util import arun

DEFAULT_OFFER = "permessage-deflate; client_max_window_bits"
# What the client offered before issue #17 (the server's memory-first windows).
OLD_OFFER = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"


def big_text(n):
    return ("aé€😀 fastws " * (n // 16 + 1))[:n]


MESSAGES = ["hi", "x" * 200, big_text(70000), os.urandom(300) + b"\x00" * 5000, b"\x00" * 2**20,
            big_text(2**20), b"", os.urandom(5000)]


# ------------------------------------------------------------------ offers

@pytest.mark.parametrize("options, offer", [
    ({}, DEFAULT_OFFER),
    (dict(client_max_window_bits=12), "permessage-deflate; client_max_window_bits=12"),
    (dict(server_max_window_bits=12, client_max_window_bits=12), OLD_OFFER),
    (dict(server_max_window_bits=9), "permessage-deflate; server_max_window_bits=9; client_max_window_bits"),
    (dict(server_no_context_takeover=True, client_no_context_takeover=True),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"),
])
def test_offer(options, offer):
    assert deflate.client_offer(client_options(**options)) == offer


def test_compression_defaults():
    assert client_options().compression == "deflate"
    assert client_options(compression=None).compression is None


# ------------------------------------------------------------------ answers

def params(p):
    return (p.local_bits, p.remote_bits, p.local_no_context, p.remote_no_context)


@pytest.mark.parametrize("response, expect", [
    # Autobahn's fuzzingserver and others name the client's window 15: within the offer.
    ("permessage-deflate; client_max_window_bits=15", (15, 15, False, False)),
    ("permessage-deflate", (15, 15, False, False)),                       # aiohttp
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", (12, 12, False, False)),  # websockets
    ("permessage-deflate; client_max_window_bits=9", (9, 15, False, False)),
    ("permessage-deflate; client_max_window_bits=8", (0, 15, False, False)),  # 8: the client sends plain
    ("permessage-deflate; server_max_window_bits=8", (15, 9, False, False)),  # a smaller window inflates fine
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", (15, 15, True, True)),
])
def test_default_offer_accepts(response, expect):
    assert params(deflate.client_accept([response], client_options())) == expect


@pytest.mark.parametrize("options, response, expect", [
    # A memory-saving offer: an answer above it is refused, one within it kept.
    (dict(client_max_window_bits=12), "permessage-deflate; client_max_window_bits=15", ValueError),
    (dict(client_max_window_bits=12), "permessage-deflate; client_max_window_bits=10", (10, 15, False, False)),
    (dict(client_max_window_bits=12), "permessage-deflate", (12, 15, False, False)),
    (dict(server_max_window_bits=12), "permessage-deflate", ValueError),
    (dict(server_max_window_bits=12), "permessage-deflate; server_max_window_bits=13", ValueError),
    (dict(server_max_window_bits=12), "permessage-deflate; server_max_window_bits=11", (15, 11, False, False)),
    (dict(server_no_context_takeover=True), "permessage-deflate", ValueError),
    ({}, "permessage-deflate; client_max_window_bits", ValueError),  # a response must give a value
    ({}, "permessage-deflate; client_max_window_bits=16", ValueError),
    ({}, "permessage-deflate; x=1", ValueError),
    ({}, "permessage-deflate, permessage-deflate", ValueError),
    ({}, "x-other", ValueError),
])
def test_answers_against_options(options, response, expect):
    o = client_options(**options)
    if expect is ValueError:
        with pytest.raises(ValueError):
            deflate.client_accept([response], o)
    else:
        assert params(deflate.client_accept([response], o)) == expect


def test_old_offer_refused_autobahn_answer():
    """Why the default changed: to the old offer, an answer of 15 breaks RFC 7692 7.1.2.2."""
    with pytest.raises(ValueError):
        deflate.client_accept(["permessage-deflate; client_max_window_bits=15"],
                              client_options(server_max_window_bits=12, client_max_window_bits=12))


# ------------------------------------------------------------------ real servers

async def _roundtrip(url, **options):
    async with fastws.connect(url, max_size=None, compression_threshold=0, **options) as ws:
        assert ws._deflate is not None
        for m in MESSAGES:
            await ws.send(m)
            got = await ws.recv()
            assert type(got) is type(m) and got == m
        return ws.headers["Sec-WebSocket-Extensions"]


async def _ws_echo(ws):
    async for m in ws:
        await ws.send(m)


def test_websockets_server_default_compression():
    async def main():
        async with ws_serve(_ws_echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            answer = await _roundtrip(f"ws://127.0.0.1:{port}")
            assert answer == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    arun(main(), 60)


def test_websockets_server_answering_15_like_autobahn():
    """A server that names client_max_window_bits=15 (as Autobahn's fuzzingserver
    does): websockets without window limits, its answer rewritten to say 15
    (the same meaning as saying nothing)."""
    seen = []

    def say_15(connection, request, response):
        seen.append(request.headers["Sec-WebSocket-Extensions"])
        del response.headers["Sec-WebSocket-Extensions"]
        response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits=15"

    async def main():
        factory = ServerPerMessageDeflateFactory(compress_settings={"memLevel": 5})
        async with ws_serve(_ws_echo, "127.0.0.1", 0, max_size=None, compression=None,
                            extensions=[factory], process_response=say_15) as server:
            port = server.sockets[0].getsockname()[1]
            answer = await _roundtrip(f"ws://127.0.0.1:{port}")
            assert answer == "permessage-deflate; client_max_window_bits=15"
            assert seen == [DEFAULT_OFFER]
    arun(main(), 60)


def test_aiohttp_server_compress_15():
    async def echo(request):
        ws = web.WebSocketResponse(compress=15, max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            else:
                await ws.send_bytes(msg.data)
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            answer = await _roundtrip(f"ws://127.0.0.1:{port}/")
            assert answer == "permessage-deflate"
        finally:
            await runner.cleanup()
    arun(main(), 60)


@pytest.mark.parametrize("app", [EchoListener, echo_handler], ids=["listener", "handler"])
def test_fastws_server(serve_thread, app):
    st = serve_thread(app, max_size=None, compression="deflate", compression_threshold=0)

    async def main():
        answer = await _roundtrip(f"ws://127.0.0.1:{st.port}")
        assert answer == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        # A memory-saving offer still works against fastws.
        await _roundtrip(f"ws://127.0.0.1:{st.port}", server_max_window_bits=9, client_max_window_bits=9,
                         client_no_context_takeover=True, server_no_context_takeover=True)
    arun(main(), 60)


# ------------------------------------------------------------------ the sync client

def _sync_roundtrip(url, **options):
    ws = sync_connect(url, max_size=8 * 2**20, timeout=10, compression="deflate",
                      compression_threshold=0, **options)
    try:
        assert ws._deflate is not None
        for m in MESSAGES:
            ws.send(m)
            got = ws.recv(timeout=10)
            assert type(got) is type(m) and got == m
        return ws.response_headers["Sec-WebSocket-Extensions"]
    finally:
        ws.close()


@pytest.mark.parametrize("app", [EchoListener, echo_handler], ids=["listener", "handler"])
def test_sync_client_fastws_server(serve_thread, app):
    st = serve_thread(app, max_size=None, compression="deflate", compression_threshold=0)
    url = f"ws://127.0.0.1:{st.port}"
    assert _sync_roundtrip(url) == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert _sync_roundtrip(url, client_no_context_takeover=True, client_max_window_bits=9) == \
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=9"
    # The defaults offer permessage-deflate, as fastws.connect does; compression=None offers nothing.
    ws = sync_connect(url)
    assert ws._deflate is not None
    assert ws.response_headers["Sec-WebSocket-Extensions"] == \
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    ws.send("x" * 1000)
    assert ws.recv(timeout=10) == "x" * 1000
    ws.close()
    ws = sync_connect(url, compression=None)
    assert ws._deflate is None and "Sec-WebSocket-Extensions" not in ws.response_headers
    ws.close()
    ws = sync_connect(url, compression=None, client_max_window_bits=9)  # options without the offer: none
    assert ws._deflate is None
    ws.close()


def test_sync_client_third_party_servers():
    """websockets (default compression) and aiohttp (compress=15), from a thread."""
    import threading

    result = {}
    ready = threading.Event()
    stop = None

    async def aio_echo(request):
        ws = web.WebSocketResponse(compress=15, max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            await (ws.send_str(msg.data) if msg.type == web.WSMsgType.TEXT else ws.send_bytes(msg.data))
        return ws

    async def servers():
        nonlocal stop
        stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", aio_echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with ws_serve(_ws_echo, "127.0.0.1", 0, max_size=None) as server:
            result["ports"] = (server.sockets[0].getsockname()[1], site._server.sockets[0].getsockname()[1])
            result["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()
        await runner.cleanup()

    t = threading.Thread(target=lambda: asyncio.run(servers()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        wport, aport = result["ports"]
        assert _sync_roundtrip(f"ws://127.0.0.1:{wport}") == \
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        assert _sync_roundtrip(f"ws://127.0.0.1:{aport}/") == "permessage-deflate"
    finally:
        result["loop"].call_soon_threadsafe(stop.set)
        t.join(10)


def test_sync_client_unknown_option():
    with pytest.raises(TypeError):
        sync_connect("ws://127.0.0.1:1", compression="deflate", client_max_windowbits=9)
