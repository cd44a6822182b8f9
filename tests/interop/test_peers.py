"""fastws against real third-party peers.

Servers: fastws echo (both API levels) driven by the `websockets`, `aiohttp`
and `websocket-client` libraries. Client: fastws.connect against a
`websockets` server and against fastws itself.
"""
from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
import websocket as websocket_client  # websocket-client
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import fastws
from fastws.apps import EchoListener, echo_handler

from util import arun

APPS = {"listener": EchoListener, "handler": echo_handler}
BIG = 16 * 2**20
SIZES = [0, 1, 125, 126, 65535, 65536, 2**20, BIG]


@pytest.fixture(params=sorted(APPS))
def echo_port(request, serve_thread):
    st = serve_thread(APPS[request.param], max_size=BIG)
    return st.port


def payload(n: int, text: bool):
    if text:
        base = "aé€😀"  # 1, 2, 3 and 4-byte UTF-8 sequences
        s = (base * (n // 10 + 1))
        out = s.encode()[:n]
        return out.decode("utf-8", "ignore")
    return os.urandom(n)


# ---------------------------------------------------------------- websockets client

def test_websockets_client_sizes(echo_port):
    async def main():
        async with ws_connect(f"ws://127.0.0.1:{echo_port}", max_size=None, compression=None) as ws:
            for n in SIZES:
                for text in (True, False):
                    msg = payload(n, text)
                    await ws.send(msg)
                    assert await ws.recv() == msg
    arun(main(), 60)


def test_websockets_client_fragmented_ping_close(echo_port):
    async def main():
        async with ws_connect(f"ws://127.0.0.1:{echo_port}", compression=None) as ws:
            await ws.send(["frag", "ment", "ed €"])  # one message in three frames
            assert await ws.recv() == "fragmented €"
            await ws.send([b"\x00", b"\x01" * 70000])
            assert await ws.recv() == b"\x00" + b"\x01" * 70000
            latency = await (await ws.ping(b"abc"))
            assert latency >= 0
            await ws.close(4001, "custom")
            assert ws.close_code == 4001
            assert ws.close_reason == "custom"
    arun(main())


def test_websockets_client_too_big_gets_1009(serve_thread):
    st = serve_thread(EchoListener, max_size=1000)

    async def main():
        async with ws_connect(f"ws://127.0.0.1:{st.port}", compression=None) as ws:
            await ws.send(b"x" * 1001)
            with pytest.raises(websockets.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1009
    arun(main())


# ---------------------------------------------------------------- aiohttp client

def test_aiohttp_client(echo_port):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{echo_port}", max_msg_size=0, compress=0,
                                          autoping=True) as ws:
                for n in (0, 5, 126, 65536, 2**20, BIG):
                    text = payload(n, True)
                    await ws.send_str(text)
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT and msg.data == text
                    data = payload(n, False)
                    await ws.send_bytes(data)
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == data
                await ws.ping(b"hb")
                await ws.send_str("after ping")
                msg = await ws.receive()
                assert msg.data == "after ping"
                await ws.close(code=4002, message=b"bye")
                assert ws.close_code == 4002
    arun(main(), 60)


# ---------------------------------------------------------------- websocket-client (sync)

def test_websocket_client_sync(echo_port):
    ws = websocket_client.create_connection(f"ws://127.0.0.1:{echo_port}", timeout=10)
    try:
        for n in (0, 10, 200, 70000, 2**20):
            ws.send(payload(n, True))
            assert ws.recv() == payload(n, True)
            data = payload(n, False)
            ws.send_binary(data)
            assert ws.recv() == data
        # A fragmented message: first frame, then a continuation.
        ws.send_frame(websocket_client.ABNF.create_frame("abc", websocket_client.ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(websocket_client.ABNF.create_frame("def", websocket_client.ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == "abcdef"
        ws.ping("x")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket_client.ABNF.OPCODE_PONG and frame.data == b"x"
        ws.send_close(3001, b"done")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket_client.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 3001
    finally:
        ws.shutdown()


# ---------------------------------------------------------------- fastws.connect

async def _ws_echo(ws):
    async for message in ws:
        await ws.send(message)


def test_fastws_client_against_websockets_server():
    async def main():
        async with ws_serve(_ws_echo, "127.0.0.1", 0, max_size=None, compression=None,
                            subprotocols=["b", "a"]) as server:
            port = server.sockets[0].getsockname()[1]
            async with fastws.connect(f"ws://127.0.0.1:{port}/path?q=1", max_size=BIG,
                                      subprotocols=["a", "b"]) as ws:
                assert ws.subprotocol == "b"
                for n in SIZES:
                    for text in (True, False):
                        msg = payload(n, text)
                        await ws.send(msg)
                        assert await ws.recv() == msg
                assert await ws.ping() >= 0
                await ws.close(4003, "client says bye")
                assert ws.close_code == 4003
    arun(main(), 60)


def test_fastws_client_against_fastws_server(echo_port):
    async def main():
        async with fastws.connect(f"ws://127.0.0.1:{echo_port}") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            msgs = [os.urandom(i) for i in range(200)]
            for m in msgs:
                await ws.send(m)
            got = [await ws.recv() for _ in msgs]
            assert got == msgs
            received = []
            await ws.send("last")
            async for m in ws:
                received.append(m)
                await ws.close()
            assert received == ["last"]
            assert ws.close_code == 1000
    arun(main())


def test_fastws_client_refused_status():
    async def reject(connection, request):
        return connection.respond(403, "no\n")

    async def main():
        async with ws_serve(_ws_echo, "127.0.0.1", 0, process_request=reject) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(fastws.InvalidStatus) as info:
                await fastws.connect(f"ws://127.0.0.1:{port}")
            assert info.value.status == 403
    arun(main())


def test_fastws_client_bad_uri():
    for url in ("http://x", "ws://", "ws://x/#frag"):
        with pytest.raises(fastws.InvalidURI):
            fastws.connect(url)


def test_server_close_seen_by_fastws_client(serve_thread):
    async def closer(ws):
        await ws.send("bye soon")
        await ws.close(4004, "server done")

    st = serve_thread(closer)

    async def main():
        async with fastws.connect(f"ws://127.0.0.1:{st.port}") as ws:
            assert await ws.recv() == "bye soon"
            with pytest.raises(fastws.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 4004
            assert info.value.reason == "server done"
    arun(main())


def test_many_concurrent_clients(echo_port):
    async def one(i):
        async with fastws.connect(f"ws://127.0.0.1:{echo_port}") as ws:
            for j in range(20):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"

    async def main():
        await asyncio.gather(*(one(i) for i in range(200)))
    arun(main(), 60)
