"""The asyncio client failing a connection: after a server that is already gone,
and after messages that came in the same write as the 101.

Autobahn's client-mode cases 7.9.x (a close frame with an invalid code, then
the server closes TCP) made ``transport.write_eof()`` raise ENOTCONN inside
the client's fail callback on the stock asyncio loop: the half-close after our
close frame met a socket the server had already reset, and the OSError
reached the event loop's exception handler. Errors never reach the event loop
(docs/design/architecture.md#principles). Cases 3.2, 4.1.3, 5.15, ... send a
message and a bad frame right after the 101: the client failed the connection
before connect() had returned, so the message was never answered.
"""
from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading

import pytest
import uvloop

import fastws
from fastws.handshake import accept_key

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _server_that_closes_after(frame: bytes):
    """A raw server: answers the upgrade, sends ``frame`` and closes TCP at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    done = threading.Event()

    def serve():
        listener.settimeout(10)
        try:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    key = re.search(rb"Sec-WebSocket-Key: (\S+)", head, re.I).group(1).decode()
                    conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
                                  ).encode() + frame)
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], done


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 5000])
def test_invalid_close_code_then_tcp_gone_reaches_no_handler(loop_name, code):
    port, done = _server_that_closes_after(b"\x88\x02" + struct.pack("!H", code))
    loop = LOOPS[loop_name]()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))

    async def main():
        ws = await fastws.connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
        with pytest.raises(fastws.ConnectionClosed):
            await ws.recv()
        await asyncio.wait_for(ws.wait_closed(), 10)
        await asyncio.sleep(0)  # a callback scheduled by the close runs
        return ws

    try:
        ws = loop.run_until_complete(main())
    finally:
        done.set()
        loop.close()
    assert ws.sent_close_code == 1002  # RFC 6455 7.4.1: an invalid code is a protocol error
    assert errors == [], [e.get("exception") or e.get("message") for e in errors]


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("bad", [b"\xa1\x05Hello",      # RSV2 set (Autobahn 3.2)
                                 b"\x85\x00",           # reserved opcode 5 (4.1.3)
                                 b"\x00\x02ab"],       # a continuation with nothing to continue (5.15-like)
                         ids=["rsv2", "opcode5", "continuation"])
def test_messages_that_came_with_the_101_reach_the_application_before_the_failure(loop_name, bad):
    """A message and then a bad frame in the same write as the 101: the client
    answers the message (an echo here) before it fails the connection with
    1002, as when they come later (RFC 6455 7.1.7 fails the connection; what
    came before the error was valid)."""
    port, done, received = _server_recording(b"\x81\x05Hello" + bad)
    loop = LOOPS[loop_name]()

    async def main():
        try:
            async with fastws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
                async for message in ws:
                    await ws.send(message)
        except fastws.ConnectionClosed:
            pass
        return ws

    try:
        ws = loop.run_until_complete(main())
        assert received.wait(10)
    finally:
        done.set()
        loop.close()
    assert ws.sent_close_code == 1002
    frames = _unmask_all(received.data)
    assert frames[0] == (0x1, b"Hello"), frames
    assert frames[1][0] == 0x8 and frames[1][1][:2] == b"\x03\xea", frames


def _server_recording(frames: bytes):
    """A raw server: answers the upgrade and sends ``frames`` in the same
    write, then records what the client sends until it closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()
    received = threading.Event()
    received.data = b""

    def serve():
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except OSError:
            listener.close()
            return
        with conn, listener:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = re.search(rb"Sec-WebSocket-Key: (\S+)", head, re.I).group(1).decode()
            conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode() + frames)
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received.data += chunk
                    if len(_unmask_all(received.data)) >= 2:
                        break
            except OSError:
                pass
        received.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], done, received


def _unmask_all(data: bytes) -> list:
    """(opcode, payload) of each whole masked client frame in ``data``."""
    out, i = [], 0
    while i + 6 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = struct.unpack("!H", data[i:i + 2])[0]
            i += 2
        mask = data[i:i + 4]
        i += 4
        if i + length > len(data):
            break
        out.append((opcode, bytes(b ^ mask[k % 4] for k, b in enumerate(data[i:i + length]))))
        i += length
    return out
