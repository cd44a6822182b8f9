"""The asyncio client fails a connection whose server is already gone.

Autobahn's client-mode cases 7.9.x (a close frame with an invalid code, then
the server closes TCP) made ``transport.write_eof()`` raise ENOTCONN inside
the client's fail callback on the stock asyncio loop: the half-close after our
close frame met a socket the server had already reset, and the OSError
reached the event loop's exception handler. Errors never reach the event loop
(docs/design/architecture.md#principles).
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
