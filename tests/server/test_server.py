"""End-to-end RFC 6455 behaviour of fastws.serve over raw sockets.

Every test runs with both API levels (the low-level Listener and the
``async def handler(ws)`` API). The codec implementation is the one fastws
picked; CI runs this file a second time with FASTWS_PURE_PYTHON=1.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import time

import pytest

import fastws
from fastws.apps import EchoListener, echo_handler
from fastws.http import RequestReader

from util import UNIT, RawClient, build_frame, http_request, wait_until

APPS = {"listener": EchoListener, "handler": echo_handler}


@pytest.fixture(params=sorted(APPS))
def echo(request, serve_thread):
    """start(**options) -> ServerThread running the echo app of one API level."""
    def start(**options):
        return serve_thread(APPS[request.param], **options)
    return start


def upgrade(port, **headers):
    lines = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    method = headers.pop("method", "GET")
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            lines.pop(name, None)
        else:
            lines[name] = value
    head = f"{method} / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n"
    return head.encode()


# ---------------------------------------------------------------- RFC 6455 4.2: handshake

def test_handshake_accept(echo):
    st = echo()
    c = RawClient(st.port)
    assert c.status == 101
    assert b"sec-websocket-accept" in c.head.lower()
    c.send(1, b"hi")
    assert c.recv_frame() == (True, 1, b"hi")
    c.close()


def test_handshake_rfc_example_accept_value(echo):
    st = echo()
    with socket.create_connection(("127.0.0.1", st.port)) as sock:
        sock.sendall(upgrade(st.port))
        head = sock.recv(4096)
    # RFC 6455 1.3: this key gives this accept value.
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


@pytest.mark.parametrize("headers, status", [
    ({"method": "POST"}, 405),
    ({"Sec_WebSocket_Version": "8"}, 426),
    ({"Sec_WebSocket_Version": None}, 426),
    ({"Sec_WebSocket_Key": None}, 400),
    ({"Sec_WebSocket_Key": "c2hvcnQ="}, 400),
    ({"Connection": "keep-alive"}, 400),
    ({"Host": None}, 400),
])
def test_handshake_refusals(echo, headers, status):
    st = echo()
    got, head, _ = http_request(st.port, upgrade(st.port, **headers))
    assert got == status, head
    if status == 426:
        assert b"sec-websocket-version: 13" in head.lower()


def test_malformed_request_400(echo):
    st = echo()
    got, _, _ = http_request(st.port, b"GARBAGE\x00\x01 nonsense\r\n\r\n")
    assert got == 400


def test_oversized_head_431(echo):
    st = echo()
    big = upgrade(st.port, X_Big="a" * 9000)
    got, _, _ = http_request(st.port, big)
    assert got in (431, 400)


def test_too_many_headers_431(echo):
    st = echo()
    extra = "".join(f"X-H{i}: v\r\n" for i in range(120))
    raw = upgrade(st.port).replace(b"\r\n\r\n", b"\r\n" + extra.encode() + b"\r\n")
    got, _, _ = http_request(st.port, raw)
    assert got in (431, 400)


def test_plain_http_gets_426(echo):
    st = echo()
    got, head, body = http_request(st.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got == 426
    assert b"upgrade: websocket" in head.lower()


def test_http_handler_serves_plain_requests(serve_thread):
    def http(request):
        if request.path == "/healthz":
            return fastws.Response(200, "OK", [("Content-Type", "text/plain")], b"ok\n")
        return fastws.Response(404, "Not Found", [], b"no\n")

    st = serve_thread(EchoListener, http_handler=http)
    got, _, body = http_request(st.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (got, body) == (200, b"ok\n")
    got, _, _ = http_request(st.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got == 404
    # The upgrade still works on the same server.
    c = RawClient(st.port)
    assert c.status == 101
    c.close()


def test_async_http_handler(serve_thread):
    async def http(request):
        return fastws.Response(200, "OK", [], request.path.encode())

    st = serve_thread(EchoListener, http_handler=http)
    got, _, body = http_request(st.port, b"GET /x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (got, body) == (200, b"/x?y=1")


def test_origin_policy(serve_thread):
    st = serve_thread(EchoListener, origins=["https://good.example"])
    got, _, _ = http_request(st.port, upgrade(st.port, Origin="https://evil.example"))
    assert got == 403
    c = RawClient(st.port, extra="Origin: https://good.example\r\n")
    assert c.status == 101
    c.close()


def test_origin_callable(serve_thread):
    st = serve_thread(EchoListener, origins=lambda origin: origin is not None and origin.endswith(".ok"))
    assert http_request(st.port, upgrade(st.port, Origin="http://a.bad"))[0] == 403
    c = RawClient(st.port, extra="Origin: http://a.ok\r\n")
    assert c.status == 101
    c.close()


def test_subprotocol_server_preference(serve_thread):
    st = serve_thread(EchoListener, subprotocols=["chat.v2", "chat.v1"])
    c = RawClient(st.port, extra="Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n")
    assert c.status == 101
    assert b"sec-websocket-protocol: chat.v2" in c.head.lower()
    c.close()


def test_process_request_reject_and_headers(serve_thread):
    def process(request):
        if request.headers.get("Authorization") != "Bearer ok":
            return fastws.Response(401, "Unauthorized", [("WWW-Authenticate", "Bearer")], b"who are you?\n")
        return [("Set-Cookie", "session=1")]

    st = serve_thread(EchoListener, process_request=process)
    got, head, body = http_request(st.port, upgrade(st.port))
    assert got == 401 and body == b"who are you?\n"
    c = RawClient(st.port, extra="Authorization: Bearer ok\r\n")
    assert c.status == 101 and b"set-cookie: session=1" in c.head.lower()
    c.close()


@pytest.mark.parametrize("hook", [False, True])
def test_short_cut_request_for_hooks_and_the_access_log(serve_thread, caplog, hook):
    """The short cut makes no Request unless something reads it: the access
    log and process_request get the one the general way reads (path, headers),
    and ws.headers / ws.path are the request's either way."""
    seen = {}

    def process(request):
        seen["request"] = (request.method, request.path, request.version, request.headers.items())
        return None

    class Inspect(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            seen["ws"] = (ws.path, ws.headers.items())

    st = serve_thread(Inspect, process_request=process if hook else None)
    sent = (b"GET /room/1?x=y HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Test:  two  words \t\r\nx-test: again\r\n\r\n")
    with caplog.at_level(logging.INFO, logger="fastws.access"):
        with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
            sock.sendall(sent)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 ")
            wait_until(lambda: "ws" in seen and any(r.name == "fastws.access" for r in caplog.records))
    expected = RequestReader().feed(sent)
    assert seen["ws"] == ("/room/1?x=y", expected.headers.items())
    assert ("X-Test", "two  words") in seen["ws"][1] and ("x-test", "again") in seen["ws"][1]
    if hook:
        assert seen["request"] == ("GET", "/room/1?x=y", "1.1", expected.headers.items())
    lines = [r.getMessage() for r in caplog.records if r.name == "fastws.access"]
    assert len(lines) == 1 and '"GET /room/1?x=y HTTP/1.1" 101' in lines[0], lines


def test_handshake_timeout_drops_slowloris(serve_thread):
    st = serve_thread(EchoListener, handshake_timeout=0.3 * UNIT, timer_tick=0.05 * UNIT)
    with socket.create_connection(("127.0.0.1", st.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes
        sock.settimeout(5 * UNIT)
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 2 * UNIT


def test_first_frame_pipelined_behind_request(echo):
    """Bytes right behind the request head are the first frames (not lost)."""
    st = echo()
    from fastws._py.frames import build_frame

    with socket.create_connection(("127.0.0.1", st.port), timeout=5) as sock:
        sock.sendall(upgrade(st.port) + build_frame(1, b"early", mask_key=b"abcd"))
        data = b""
        while b"early" not in data:
            data += sock.recv(4096)
        assert data.endswith(b"\x81\x05early")


# ---------------------------------------------------------------- RFC 6455 5: framing errors

@pytest.mark.parametrize("frame, code", [
    (bytes([0x81, 0x02]) + b"hi", 1002),                     # 5.1: client frames MUST be masked
    (bytes([0x83, 0x80]) + b"abcd", 1002),                   # 5.2: reserved opcode 3
    (bytes([0xC1, 0x80]) + b"abcd", 1002),                   # 5.2: RSV1 without extension
    (bytes([0x09, 0x80]) + b"abcd", 1002),                   # 5.5: fragmented control frame
    (bytes([0x89, 0xFE, 0x00, 0x7E]) + b"abcd" + b"x" * 126, 1002),  # 5.5: control > 125 bytes
    (bytes([0x80, 0x80]) + b"abcd", 1002),                   # 5.4: continuation with nothing to continue
    (bytes([0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]) + b"abcd", 1002),  # 5.2: 64-bit length, top bit set
    (bytes([0x81, 0x82]) + b"\0\0\0\0" + b"\xc3\x28", 1007),  # 8.1: invalid UTF-8
])
def test_framing_errors_close_with_code(echo, frame, code):
    st = echo()
    c = RawClient(st.port)
    c.send_raw(frame)
    assert c.recv_close()[0] == code
    assert c.wait_eof()
    c.close()


def test_new_message_inside_fragmented_one_1002(echo):
    st = echo()
    c = RawClient(st.port)
    c.send(1, b"a", fin=False)
    c.send(1, b"b")
    assert c.recv_close()[0] == 1002
    c.close()


def test_message_too_big_1009_before_payload(echo):
    st = echo(max_size=1000)
    c = RawClient(st.port)
    # Only the header of a 2000-byte frame: the server must refuse from it.
    c.send_raw(bytes([0x82, 0xFE]) + struct.pack("!H", 2000) + b"abcd")
    assert c.recv_close()[0] == 1009
    c.close()


def test_fragmented_with_interleaved_ping(echo):
    st = echo()
    c = RawClient(st.port)
    c.send(1, b"Hel", fin=False)
    c.send(9, b"ping!")                   # RFC 6455 5.4: control frames in the middle
    c.send(0, b"lo")
    assert c.recv_frame() == (True, 10, b"ping!")
    assert c.recv_frame() == (True, 1, b"Hello")
    c.close()


def test_utf8_code_point_split_across_frames(echo):
    st = echo()
    c = RawClient(st.port)
    euro = "€".encode()
    c.send(1, b"x" + euro[:1], fin=False)
    c.send(0, euro[1:] + b"y")
    assert c.recv_frame() == (True, 1, b"x" + euro + b"y")
    c.close()


# ---------------------------------------------------------------- RFC 6455 7: closing

@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_close_echoes_valid_code(echo, code):
    st = echo()
    c = RawClient(st.port)
    c.send(8, struct.pack("!H", code) + b"bye")
    assert c.recv_close()[0] == code
    assert c.wait_eof()  # the server closes TCP first (RFC 6455 7.1.1)
    c.close()


@pytest.mark.parametrize("payload", [
    struct.pack("!H", 999), struct.pack("!H", 1004), struct.pack("!H", 1005), struct.pack("!H", 1006),
    struct.pack("!H", 1015), struct.pack("!H", 2000), struct.pack("!H", 5000), b"\x03",
])
def test_close_invalid_code_1002(echo, payload):
    st = echo()
    c = RawClient(st.port)
    c.send(8, payload)
    assert c.recv_close()[0] == 1002
    c.close()


def test_close_reason_invalid_utf8_1007(echo):
    st = echo()
    c = RawClient(st.port)
    c.send(8, struct.pack("!H", 1000) + b"\xff")
    assert c.recv_close()[0] == 1007
    c.close()


def test_close_without_code_answered_empty(echo):
    st = echo()
    c = RawClient(st.port)
    c.send(8, b"")
    assert c.recv_close() == (None, "")
    c.close()


def test_server_initiated_close_times_out_and_aborts(serve_thread):
    class CloseAtOnce(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            ws.close(4000, "go")

    st = serve_thread(CloseAtOnce, close_timeout=0.3 * UNIT, timer_tick=0.05 * UNIT)
    c = RawClient(st.port)
    assert c.recv_close() == (4000, "go")
    start = time.monotonic()
    assert c.wait_eof(5)  # we never answer; the server gives up after close_timeout
    assert time.monotonic() - start < 3 * UNIT
    c.close()


def test_keepalive_ping_and_timeout(serve_thread):
    st = serve_thread(EchoListener, ping_interval=0.4 * UNIT, ping_timeout=0.4 * UNIT, timer_tick=0.05 * UNIT)
    c = RawClient(st.port)
    start = time.monotonic()
    fin, opcode, _ = c.recv_frame()
    assert opcode == 9  # a keepalive ping after at most ping_interval of silence
    assert c.recv_close()[0] == 1011  # unanswered
    assert time.monotonic() - start < (0.4 + 0.4 + 0.5) * UNIT
    c.close()


def test_keepalive_answered_stays_open(serve_thread):
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=0.2 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    pings = 0
    deadline = time.monotonic() + 1.2 * UNIT
    while time.monotonic() < deadline:
        fin, opcode, payload = c.recv_frame()
        assert opcode == 9
        pings += 1
        c.send(10, payload)
    assert pings >= 2
    c.send(1, b"still here")
    assert c.recv_frame() == (True, 1, b"still here")
    c.close()


def test_application_error_closes_1011(serve_thread):
    class Boom(fastws.Listener):
        def on_message(self, data):
            raise RuntimeError("secret internals")

    async def boom(ws):
        await ws.recv()
        raise RuntimeError("secret internals")

    for app in (Boom, boom):
        st = serve_thread(app)
        c = RawClient(st.port)
        c.send(1, b"x")
        code, reason = c.recv_close()
        assert code == 1011 and "secret" not in reason
        c.close()


def test_graceful_shutdown_sends_1001(echo):
    st = echo()
    c = RawClient(st.port)
    c.send(1, b"x")
    assert c.recv_frame() == (True, 1, b"x")
    import threading

    t = threading.Thread(target=st.stop)
    t.start()
    assert c.recv_close()[0] == 1001
    c.send(8, struct.pack("!H", 1001))
    t.join(10)
    c.close()


def test_bad_options_rejected_at_start():
    with pytest.raises(fastws.ConfigError):
        fastws.serve(EchoListener, "127.0.0.1", 0, ping_timeout=0)
    with pytest.raises(fastws.ConfigError):
        fastws.serve(EchoListener, "127.0.0.1", 0, max_size=-1)
    with pytest.raises(fastws.ConfigError):
        fastws.serve(EchoListener, "127.0.0.1", 0, origins="https://a.example")


# ---------------------------------------------------------------- memory: idle connections hold no parser

def _only_conn(st):
    return st.call(lambda: next(iter(st.server.connections)))


def test_idle_connection_releases_parser_and_keeps_working(serve_thread):
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=5, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    c.send(1, b"a")
    assert c.recv_frame() == (True, 1, b"a")
    conn = _only_conn(st)
    deadline = time.monotonic() + 3 * UNIT
    while st.call(lambda: conn._parser) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st.call(lambda: conn._parser) is None  # idle: no parser, no buffer
    # Keepalive pings may arrive meanwhile; answer them and check the echo.
    c.send(1, b"after idle")
    assert c.recv_data() == (1, b"after idle")
    c.close()


def test_partial_message_survives_idle_ticks(serve_thread):
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=5, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    c.send(1, b"first half, ", fin=False)
    time.sleep(0.6 * UNIT)  # several idle ticks with a partial message held
    conn = _only_conn(st)
    assert st.call(lambda: conn._parser) is not None
    c.send(0, b"second half")
    assert c.recv_data() == (1, b"first half, second half")
    c.close()


@pytest.mark.parametrize("api", APPS)
def test_frame_header_alone_survives_idle_ticks(serve_thread, api):
    """A peer that stops after a frame's header (mask key included), for
    several keepalive checks, then sends the payload: the parser holds no
    byte meanwhile but is inside a frame, so it must not be released (a new
    one would read the payload as a header)."""
    st = serve_thread(APPS[api], ping_interval=0.2 * UNIT, ping_timeout=5, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    payload = os.urandom(100)
    frame = build_frame(2, payload, mask_key=os.urandom(4))
    c.send_raw(frame[:6])  # 2-byte header + mask key
    time.sleep(0.8 * UNIT)
    conn = _only_conn(st)
    assert st.call(lambda: conn._parser) is not None
    c.send_raw(frame[6:])
    # A ping that came inside the frame cannot be answered until it ends.
    assert c.recv_data(answer_pings=False) == (2, payload)
    c.close()


@pytest.mark.parametrize("api", APPS)
def test_large_frame_trickling_in_is_not_silence(serve_thread, api):
    """A frame whose payload takes several ping_interval + ping_timeout to
    arrive: no frame completes and the peer cannot answer a ping inside its
    frame, but it is talking, so keepalive must not cut it off."""
    st = serve_thread(APPS[api], ping_interval=0.1 * UNIT, ping_timeout=0.2 * UNIT,
                      timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    payload = os.urandom(40_000)
    frame = build_frame(2, payload, mask_key=os.urandom(4))
    step = len(frame) // 40 + 1
    for i in range(0, len(frame), step):  # ~1.2 s in all
        c.send_raw(frame[i:i + step])
        time.sleep(0.03 * UNIT)
    # The pings sent meanwhile could not be answered: skipped here.
    assert c.recv_data(answer_pings=False) == (2, payload)
    c.close()


@pytest.mark.parametrize("api", APPS)
def test_empty_first_fragment_survives_idle_ticks(serve_thread, api):
    """An empty first fragment holds no byte either; the message is begun."""
    st = serve_thread(APPS[api], ping_interval=0.2 * UNIT, ping_timeout=5, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    c.send(1, b"", fin=False)
    time.sleep(0.8 * UNIT)
    c.send(0, b"then the text")
    assert c.recv_data() == (1, b"then the text")
    c.close()


def test_headers_path_and_address_available(serve_thread):
    seen = {}

    class Inspect(fastws.Listener):
        def on_connect(self, ws):
            super().on_connect(ws)
            seen["x"] = ws.headers.get("x-test")
            seen["host"] = ws.headers["Host"]
            seen["path"] = ws.path
            seen["addr"] = ws.remote_address

    async def inspect(ws):
        seen["hx"] = ws.headers.get("X-Test")
        seen["haddr"] = ws.remote_address
        await ws.send("ok")

    st = serve_thread(Inspect)
    c = RawClient(st.port, path="/room/1?x=y", extra="X-Test: hello there\r\n")
    time.sleep(0.1 * UNIT)
    assert seen["x"] == "hello there" and seen["path"] == "/room/1?x=y" and seen["host"].startswith("127.0.0.1")
    assert seen["addr"][0] == "127.0.0.1" and seen["addr"][1] == c.sock.getsockname()[1]
    c.close()
    st2 = serve_thread(inspect)
    c = RawClient(st2.port, extra="X-Test: two\r\n")
    assert c.recv_frame() == (True, 1, b"ok")
    assert seen["hx"] == "two" and seen["haddr"][0] == "127.0.0.1"
    c.close()


def test_idle_timeout_closes_silent_connection_despite_keepalive(serve_thread):
    st = serve_thread(EchoListener, idle_timeout=0.5 * UNIT, ping_interval=0.1 * UNIT,
                      ping_timeout=5, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    start = time.monotonic()
    c.send(1, b"hello")
    while True:  # answer keepalive pings: they are not activity for idle_timeout
        fin, opcode, payload = c.recv_frame()
        if opcode == 9:
            c.send(10, payload)
        elif opcode == 8:
            assert payload[:2] == (1000).to_bytes(2, "big") and b"idle" in payload
            break
    assert 0.5 * UNIT <= time.monotonic() - start < 2 * UNIT
    c.close()


def test_idle_timeout_spares_a_talking_peer(serve_thread):
    st = serve_thread(EchoListener, idle_timeout=0.4 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    for i in range(12):  # 1.2 s of messages every 0.1 s
        c.send(1, str(i).encode())
        assert c.recv_frame() == (True, 1, str(i).encode())
        time.sleep(0.1 * UNIT)
    c.close()


def test_keepalive_cadence_on_an_idle_peer_that_answers(serve_thread):
    """RFC-agnostic contract of keepalive: a ping after at most ping_interval of
    silence, also right after a pong (regression: pings came every
    ping_timeout + ping_interval/2)."""
    interval = 0.4 * UNIT
    st = serve_thread(EchoListener, ping_interval=interval, ping_timeout=3 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    last = time.monotonic()
    gaps = []
    for _ in range(5):
        fin, opcode, payload = c.recv_frame()
        assert opcode == 9
        now = time.monotonic()
        gaps.append(now - last)
        c.send(10, payload)  # answer at once, then stay silent
        last = time.monotonic()
    # every ping came within ping_interval (+ one tick and scheduling slack) of the last frame
    assert max(gaps) < interval + 0.15 * UNIT, gaps
    # and not much more often than every ping_interval/2
    assert min(gaps[1:]) > interval / 2 - 0.05 * UNIT, gaps
    c.close()


def test_idle_peer_pinged_once_per_interval(serve_thread):
    """An idle peer that answers costs one keepalive check per ping_interval:
    the next ping comes ping_interval after the previous one (not earlier),
    and pings keep coming (the pong, handled without a parser, is life)."""
    interval = 0.4 * UNIT
    tick = 0.02 * UNIT
    st = serve_thread(EchoListener, ping_interval=interval, ping_timeout=3 * UNIT, timer_tick=tick)
    c = RawClient(st.port)
    times = []
    for _ in range(4):
        fin, opcode, payload = c.recv_frame()
        assert opcode == 9
        times.append(time.monotonic())
        c.send(10, payload)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(interval - 2 * tick - 0.02 * UNIT < g < interval + 0.15 * UNIT for g in gaps), gaps
    c.close()


def test_lone_control_frames_while_idle(serve_thread):
    """After a keepalive ping the server holds no parser for the connection;
    what arrives then is checked all the same (RFC 6455 5.1: an unmasked
    client frame closes with 1002), and a ping with data behind it in the
    same segment is answered and the data echoed."""
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=3 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    assert c.recv_frame()[1] == 9
    c.send_raw(build_frame(9, b"p", mask_key=b"abcd") + build_frame(2, b"data", mask_key=b"efgh"))
    assert c.recv_frame() == (True, 10, b"p")
    assert c.recv_frame() == (True, 2, b"data")
    c.close()
    c = RawClient(st.port)
    assert c.recv_frame()[1] == 9
    c.send(10, b"", mask=False)  # unmasked pong from a client
    assert c.recv_close()[0] == 1002
    c.close()
    c = RawClient(st.port)
    assert c.recv_frame()[1] == 9
    c.send(9, b"x" * 125)  # the longest valid ping, alone
    assert c.recv_frame() == (True, 10, b"x" * 125)
    c.send(10, b"", rsv=0x40)  # RSV1 without an extension
    assert c.recv_close()[0] == 1002
    c.close()


def test_idle_keepalive_pongs_reach_an_overriding_on_pong(serve_thread):
    """The pong of an idle connection (parser released) is taken by the
    connection core without a parser; a listener that overrides on_pong
    still gets every one, with its payload, and one that keeps Listener's
    empty on_pong is not called (nothing to observe but the count of pings,
    which goes on: the pong was seen as life)."""
    got = []

    class Pongs(fastws.Listener):
        def on_pong(self, payload):
            got.append((payload, self.ws._parser is None))

    interval = 0.2 * UNIT
    st = serve_thread(Pongs, ping_interval=interval, ping_timeout=3 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    for i in range(3):
        assert c.recv_frame()[1] == 9
        c.send(10, b"p%d" % i)
    assert c.recv_frame()[1] == 9  # the third pong was life: a fourth ping
    assert got[:3] == [(b"p0", True), (b"p1", True), (b"p2", True)]
    c.close()

    plain = serve_thread(EchoListener, ping_interval=interval, ping_timeout=3 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(plain.port)
    for _ in range(3):
        assert c.recv_frame()[1] == 9
        c.send(10, b"")
    assert c.recv_frame()[1] == 9
    assert plain.call(lambda: plain.server.counters.pings_sent) >= 4
    c.send(1, b"still here")  # the connection makes a parser again and echoes
    assert c.recv_frame() == (True, 1, b"still here")
    c.close()


def test_whether_on_pong_is_called_is_asked_per_class_only_without_instance_dicts(serve_thread):
    """The server asks once per listener class whether on_pong is Listener's
    empty one, for classes whose instances have no __dict__; a listener with
    a __dict__ may set its own on_pong, and its connections are asked each
    time: the instance that sets one gets its pongs, the next one (same
    class, none set) is not called."""
    got = []
    made = []

    class PerInstance(fastws.Listener):
        __slots__ = ("__dict__",)

        def __init__(self):
            made.append(self)
            if len(made) == 1:  # the first connection's listener only
                self.on_pong = lambda payload: got.append(("instance", payload))

    class Slotted(fastws.Listener):
        __slots__ = ()

        def on_pong(self, payload):
            got.append(("class", payload))

    interval = 0.2 * UNIT
    for app, expect in ((PerInstance, [("instance", b"a")]), (Slotted, [("class", b"a"), ("class", b"b")])):
        got.clear()
        st = serve_thread(app, ping_interval=interval, ping_timeout=3 * UNIT, timer_tick=0.02 * UNIT)
        for payload in (b"a", b"b"):
            c = RawClient(st.port)
            assert c.recv_frame()[1] == 9
            c.send(10, payload)
            assert c.recv_frame()[1] == 9  # the pong was seen: another ping
            c.close()
        assert got == expect


def test_on_connect_is_called_when_overridden_else_ws_is_set(serve_thread):
    """A listener that keeps Listener's on_connect gets ``ws`` set without the
    call; one that overrides it, in its class or on its instance (a
    listener with a __dict__), is called once with the connection; one
    whose ``ws`` cannot be set gets the connection closed with 1011, and the
    server goes on."""
    calls = []

    class Plain(fastws.Listener):
        __slots__ = ()

        def on_message(self, data):
            self.ws.send(data)

    class Overrides(fastws.Listener):
        __slots__ = ()

        def on_connect(self, ws):
            calls.append(("class", ws.path))
            super().on_connect(ws)

        def on_message(self, data):
            self.ws.send(data)

    class PerInstance(Plain):
        __slots__ = ("__dict__",)

        def __init__(self):
            self.on_connect = lambda ws: (calls.append(("instance", ws.path)), setattr(self, "ws", ws))

    class NoWs(fastws.Listener):
        __slots__ = ()
        ws = property(lambda self: None)  # read-only: Listener.on_connect's assignment fails

    for app, expect in ((Plain, []), (Overrides, [("class", "/")]), (PerInstance, [("instance", "/")])):
        calls.clear()
        st = serve_thread(app)
        for _ in range(2):  # the second connection: the class's answer remembered (or asked again)
            c = RawClient(st.port)
            c.send(1, b"hi")
            assert c.recv_frame() == (True, 1, b"hi")
            c.close()
        assert calls == expect * 2
    st = serve_thread(NoWs)
    c = RawClient(st.port)
    assert c.recv_close()[0] == 1011
    c.close()
    c = RawClient(st.port)  # the server still accepts
    assert c.recv_close()[0] == 1011
    c.close()


def test_unanswered_keepalive_counts_and_closes_idle_connection(serve_thread):
    """After a ping answered by a lone pong, the next ping unanswered for
    ping_timeout fails the connection with 1011 (the C timer path)."""
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=0.3 * UNIT, timer_tick=0.02 * UNIT)
    c = RawClient(st.port)
    assert c.recv_frame()[1] == 9
    c.send(10, b"")
    assert c.recv_frame()[1] == 9  # not answered
    assert c.recv_close()[0] == 1011
    assert st.call(lambda: st.server.counters.ping_timeouts) == 1
    assert st.call(lambda: st.server.counters.pings_sent) == 2
    c.close()
