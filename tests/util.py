"""Helpers for end-to-end tests: a loop runner, raw WebSocket sockets.

Time in tests is expressed in UNITs (FASTWS_TEST_TIME_UNIT, default 1.0
second) so a slow machine can scale every wait at once.
"""
from __future__ import annotations

import asyncio
import base64
import os
import time
import socket
import struct
import subprocess

import uvloop

import fastws

from fastws._py.frames import build_frame

UNIT = float(os.environ.get("FASTWS_TEST_TIME_UNIT", "1.0"))


def arun(coro, timeout: float = 30.0):
    """Run a coroutine on a fresh uvloop loop, with a timeout."""
    async def guarded():
        return await asyncio.wait_for(coro, timeout * UNIT)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop, debug=os.environ.get("FASTWS_TEST_DEBUG") == "1") as r:
        return r.run(guarded())


UPGRADE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "{extra}"
    "\r\n"
)


class RawClient:
    """A blocking raw-socket WebSocket client that sends exactly what a test says."""

    def __init__(self, port: int, path: str = "/", extra: str = "", timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * UNIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(UPGRADE.format(path=path, port=port, key=key, extra=extra).encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before " + repr(marker))
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True, rsv: int = 0):
        self.sock.sendall(build_frame(opcode, payload, fin=fin, mask_key=os.urandom(4) if mask else None, rsv=rsv))

    def recv_frame(self):
        """(fin, opcode, payload) of the next server frame (server frames are unmasked)."""
        b0, b1 = self._read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        assert not b1 & 0x80, "server frames must not be masked"
        return bool(b0 & 0x80), b0 & 0x0F, self._read_exact(length)

    def recv_data(self, answer_pings: bool = True):
        """(opcode, payload) of the next frame that is not a ping, answering
        the keepalive pings met on the way (unless answer_pings is False)."""
        while True:
            fin, opcode, payload = self.recv_frame()
            if opcode != 9:
                return opcode, payload
            if answer_pings:
                self.send(10, payload)

    def recv_close(self):
        """Skip to the close frame; return (code, reason)."""
        while True:
            fin, opcode, payload = self.recv_frame()
            if opcode == 8:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
                return None, ""

    def wait_eof(self, timeout: float = 5.0) -> bool:
        """True if the server closes TCP within timeout (reading and dropping data)."""
        self.sock.settimeout(timeout * UNIT)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def http_request(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes, bytes]:
    """Send raw bytes, read until the server closes; (status, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * UNIT) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, head, body


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005):
    """Wait for ``predicate()`` to be true (``timeout`` scaled by UNIT);
    its value, or AssertionError when it is still false at the deadline."""
    deadline = time.monotonic() + timeout * UNIT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process the test started, by its own Popen handle (i.e. by
    PID): SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RemoteAddressListener(fastws.Listener):
    """Sends ws.remote_address, then echoes (the PROXY protocol tests)."""

    def on_connect(self, ws):
        super().on_connect(ws)
        ws.send(repr(ws.remote_address))

    def on_message(self, data):
        self.ws.send(data)


async def remote_address_handler(ws):
    """The handler API's RemoteAddressListener."""
    await ws.send(repr(ws.remote_address))
    async for message in ws:
        await ws.send(message)
