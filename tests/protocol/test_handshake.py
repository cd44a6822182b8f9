"""The opening handshake (RFC 6455 section 4): fastws.handshake, sans-I/O.

Server side: RequestReader + check_request + accept_response/error_response.
Client side: build_request + ResponseReader + check_response. Interop tests
run both against the ``websockets`` library and ``websocket-client`` over real
sockets on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import sys
import threading
import time

import httptools
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastws.codec import load as _codec_load
from fastws.codec import unpack_lines
from fastws.exceptions import ConfigError, InvalidRequest, InvalidResponse, InvalidStatus, InvalidURI
from fastws.http import Headers, Request, RequestReader, Response, ResponseReader
from fastws.handshake import (
    GUID,
    accept_key,
    accept_response,
    build_request,
    check_request,
    check_response,
    error_response,
    is_upgrade_request,
    make_key,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

# RFC 6455 1.2, the sample client handshake.
SAMPLE = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # RFC 6455 5.7 masked "Hello"


def parse(data: bytes, **kw) -> Request:
    reader = RequestReader(**kw)
    request = reader.feed(data)
    assert request is not None
    return request


def upgrade(*extra: str, drop=(), method="GET", version="1.1") -> bytes:
    """A valid upgrade request, minus the fields named in ``drop``, plus ``extra`` lines."""
    fields = [
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    lines = [f"{method} /ws HTTP/{version}"]
    lines += [f"{n}: {v}" for n, v in fields if n.lower() not in drop]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def refused(data: bytes, **kw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_request(parse(data), **kw)
    return info.value


def parse_http_response(data: bytes):
    """Parse bytes back with httptools; return (status, headers, body)."""

    class P:
        headers: list
        body = b""
        done = False

        def __init__(self):
            self.headers = []

        def on_header(self, n, v):
            self.headers.append((n.decode("latin-1").lower(), v.decode("latin-1")))

        def on_body(self, b):
            self.body += b

        def on_message_complete(self):
            self.done = True

    p = P()
    parser = httptools.HttpResponseParser(p)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    assert p.done
    return parser.get_status_code(), p.headers, p.body


# ---------------------------------------------------------------- RFC 6455 1.3 / 4.2.2


def test_accept_key_rfc6455_1_3_example():
    assert accept_key(KEY) == ACCEPT


def test_make_key_is_base64_of_16_random_bytes():
    keys = {make_key() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert len(base64.b64decode(k, validate=True)) == 16


# ---------------------------------------------------------------- Headers


def test_headers_case_insensitive_multidict():
    h = Headers([("Host", "a"), ("X-A", "1"), ("x-a", "2")])
    assert h["HOST"] == h.get("host") == "a"
    assert h["X-a"] == "1"
    assert h.get_all("X-A") == ["1", "2"]
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert h.get_all("missing") == []
    with pytest.raises(KeyError):
        h["missing"]
    assert "x-A" in h and "nope" not in h and 3 not in h
    assert list(h) == ["Host", "X-A", "x-a"]
    assert len(h) == 3
    h.add("Y", "z")
    assert h.items()[-1] == ("Y", "z")
    assert h.raw_items() is h.raw_items()
    assert h == Headers([("host", "a"), ("x-a", "1"), ("X-A", "2"), ("y", "z")])
    assert h != Headers([("host", "a")])
    assert Headers({"a": "b"}) == [("A", "b")]
    assert Headers(h) == h and Headers(h) is not h
    assert "Host" in repr(h)
    assert not hasattr(h, "__dict__")


def test_request_response_have_slots():
    assert not hasattr(Request("GET", "/"), "__dict__")
    assert not hasattr(Response(200), "__dict__")


# ---------------------------------------------------------------- RequestReader


def test_reader_parses_rfc6455_sample():
    request = parse(SAMPLE)
    assert (request.method, request.path, request.version) == ("GET", "/chat?room=1", "1.1")
    assert request.headers["sec-websocket-key"] == KEY
    assert request.body == b""
    assert is_upgrade_request(request)


def test_reader_every_split_point_parses_identically():
    data = SAMPLE + FRAME
    expected = parse(SAMPLE)
    for cut in range(len(data) + 1):
        reader = RequestReader()
        got = reader.feed(data[:cut])
        if cut < len(SAMPLE):
            assert got is None
            got = reader.feed(data[cut:])
        else:
            assert reader.feed(data[cut:]) is None  # later bytes go to leftover
        assert (got.method, got.path, got.headers) == (expected.method, expected.path, expected.headers)
        assert reader.leftover == FRAME, cut


def test_reader_byte_by_byte():
    reader = RequestReader()
    results = [reader.feed(bytes([b])) for b in SAMPLE + FRAME]
    assert [r for r in results if r is not None][0].path == "/chat?room=1"
    assert sum(r is not None for r in results) == 1
    assert reader.leftover == FRAME


def test_reader_pipelined_frames_in_leftover():
    reader = RequestReader()
    assert reader.feed(SAMPLE + FRAME + FRAME).path == "/chat?room=1"
    assert reader.leftover == FRAME + FRAME


def test_reader_keeps_bytes_fed_after_completion():
    reader = RequestReader()
    reader.feed(SAMPLE + b"ab")
    assert reader.feed(b"cd") is None
    assert reader.leftover == b"abcd"


def test_reader_values_latin1_and_stripped():
    request = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX:  v \t\r\nY:\r\nZ: caf\xe9\r\n\r\n")
    assert request.headers["x"] == "v"
    assert request.headers["y"] == ""
    assert request.headers["z"] == "caf\u00e9"


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # RFC 9112 5.1: no whitespace before colon
        b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_reader_malformed_is_400(data):
    reader = RequestReader()
    with pytest.raises(InvalidRequest) as info:
        reader.feed(data)
    assert info.value.status == 400
    assert "llhttp" not in info.value.body and "httptools" not in info.value.body
    with pytest.raises(InvalidRequest):  # the reader stays failed
        reader.feed(b"GET / HTTP/1.1\r\n\r\n")


def _head_of_size(size: int) -> bytes:
    base = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
    filler = size - len(base)
    assert filler >= 0
    return base.replace(b"X: ", b"X: " + b"a" * filler)


@pytest.mark.parametrize("chunk", [1, 7, 100, 100000])
def test_reader_head_limit_exact(chunk):
    head = _head_of_size(8192)
    assert len(head) == 8192
    reader = RequestReader()
    results = [reader.feed(head[i:i + chunk]) for i in range(0, len(head), chunk)]
    assert results[-1] is not None and results[-1].headers["x"] == "a" * (8192 - 32)

    over = _head_of_size(8193)
    reader = RequestReader()
    with pytest.raises(InvalidRequest) as info:
        for i in range(0, len(over), chunk):
            reader.feed(over[i:i + chunk])
    assert info.value.status == 431
    assert info.value.reason == "Request Header Fields Too Large"


def test_reader_head_limit_refuses_without_waiting_for_the_end():
    reader = RequestReader(max_head=100)
    with pytest.raises(InvalidRequest) as info:
        reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)  # no CRLF CRLF yet
    assert info.value.status == 431


def test_reader_head_limit_then_leftover():
    head = _head_of_size(8192)
    reader = RequestReader()
    assert reader.feed(head + b"x" * 10000) is not None
    assert reader.leftover == b"x" * 10000


@pytest.mark.parametrize("count,ok", [(100, True), (101, False)])
def test_reader_header_count_limit(count, ok):
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n"
    reader = RequestReader()
    if ok:
        assert len(reader.feed(data).headers) == count
    else:
        with pytest.raises(InvalidRequest) as info:
            reader.feed(data)
        assert info.value.status == 431


def test_reader_plain_request_with_content_length():
    reader = RequestReader()
    assert reader.feed(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab") is None
    request = reader.feed(b"cdeNEXT")
    assert (request.method, request.body) == ("POST", b"abcde")
    assert not is_upgrade_request(request)
    assert reader.leftover == b"NEXT"


def test_reader_plain_request_chunked():
    reader = RequestReader()
    data = b"POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    for i in range(len(data) - 1):
        assert reader.feed(data[i:i + 1]) is None
    assert reader.feed(data[-1:]).body == b"abcde"


def test_reader_plain_get_without_upgrade():
    reader = RequestReader()
    request = reader.feed(b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\nrest")
    assert request.path == "/index.html" and not is_upgrade_request(request)
    assert reader.leftover == b"rest"


def test_reader_body_limit_413():
    with pytest.raises(InvalidRequest) as info:
        RequestReader(max_body=4).feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    assert info.value.status == 413
    reader = RequestReader(max_body=4)
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(InvalidRequest) as info:
        reader.feed(b"5\r\nabcde\r\n0\r\n\r\n")
    assert info.value.status == 413
    assert RequestReader(max_body=5).feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde"
    ).body == b"abcde"


def test_reader_upgrade_with_body_leaves_it_unread():
    # llhttp switches right after the head; check_request refuses the body.
    data = upgrade("Content-Length: 2")
    reader = RequestReader()
    request = reader.feed(data + b"XY")
    assert reader.leftover == b"XY" and request.body == b""
    exc = refused(data)
    assert exc.status == 400


def test_reader_rejects_bad_limits():
    with pytest.raises(ConfigError):
        RequestReader(max_head=-1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_reader_random_input_only_raises_invalid_request(data, cuts):
    reader = RequestReader(max_head=256)
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    try:
        for a, b in zip(points, points[1:]):
            reader.feed(data[a:b])
    except InvalidRequest as exc:
        assert exc.status in (400, 413, 431)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(SAMPLE) + len(FRAME)), max_size=6))
def test_reader_random_splits(cuts):
    data = SAMPLE + FRAME
    points = sorted({0, len(data), *cuts})
    reader = RequestReader()
    results = [reader.feed(data[a:b]) for a, b in zip(points, points[1:])]
    done = [r for r in results if r is not None]
    assert len(done) == 1 and done[0].headers == parse(SAMPLE).headers
    assert reader.leftover == FRAME


# ---------------------------------------------------------------- check_request (RFC 6455 4.2.1)


def test_check_request_accepts_sample():
    subprotocol, headers = check_request(parse(SAMPLE))
    assert subprotocol is None
    assert headers == [("Sec-WebSocket-Accept", ACCEPT)]


def test_4_2_1_item_1_method_must_be_get_405():
    exc = refused(upgrade(method="POST"))
    assert (exc.status, exc.headers) == (405, [("Allow", "GET")])


def test_4_2_1_item_1_http_1_0_is_400():
    exc = refused(upgrade(version="1.0"))
    assert exc.status == 400


def test_http_2_on_an_http1_wire_is_505():
    assert refused(upgrade(version="2.0")).status == 505


def test_4_2_1_item_2_host_required_400():
    assert refused(upgrade(drop=("host",))).status == 400
    assert refused(upgrade("Host: other")).status == 400  # RFC 9112 3.2: several Host lines


def test_4_2_1_item_3_upgrade_without_websocket_426():
    for data in (upgrade("Upgrade: h2c", drop=("upgrade",)), upgrade("Upgrade: websocket/13", drop=("upgrade",))):
        exc = refused(data)
        assert exc.status == 426
        assert exc.headers == [("Upgrade", "websocket"), ("Connection", "Upgrade")]


def test_4_2_1_item_3_upgrade_token_list_and_case():
    check_request(parse(upgrade("Upgrade: h2c, WebSocket", drop=("upgrade",))))
    check_request(parse(upgrade("Upgrade: h2c", "Upgrade: WEBSOCKET", drop=("upgrade",))))


def test_4_2_1_item_4_connection_without_upgrade_400():
    exc = refused(upgrade("Connection: keep-alive", drop=("connection",)))
    assert exc.status == 400
    assert refused(upgrade(drop=("connection",))).status == 400


def test_4_2_1_item_4_connection_token_list_several_lines():
    check_request(parse(upgrade("Connection: keep-alive, UPGRADE", drop=("connection",))))
    check_request(parse(upgrade("Connection: keep-alive", "connection: upgrade", drop=("connection",))))
    check_request(parse(upgrade("Connection: ,upgrade,", drop=("connection",))))


@pytest.mark.parametrize(
    "lines",
    [[], ["Sec-WebSocket-Version: 8"], ["Sec-WebSocket-Version: 13, 8"],
     ["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"], ["Sec-WebSocket-Version: 013"]],
)
def test_4_2_2_version_not_13_is_426(lines):
    exc = refused(upgrade(*lines, drop=("sec-websocket-version",)))
    assert exc.status == 426
    assert ("Sec-WebSocket-Version", "13") in exc.headers
    assert ("Upgrade", "websocket") in exc.headers


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [f"Sec-WebSocket-Key: {KEY}", f"Sec-WebSocket-Key: {KEY}"],
        ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"],  # unpadded
        ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j"],  # 15 bytes
        ["Sec-WebSocket-Key: " + base64.b64encode(b"x" * 17).decode()],
        ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=!"],
        ["Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ="],
        ["Sec-WebSocket-Key: "],
    ],
)
def test_4_2_1_item_5_bad_key_400(lines):
    assert refused(upgrade(*lines, drop=("sec-websocket-key",))).status == 400


def test_upgrade_with_body_refused_400():
    assert refused(upgrade("Transfer-Encoding: chunked")).status == 400
    check_request(parse(upgrade("Content-Length: 0")))


def test_header_names_case_insensitive():
    data = (
        b"GET / HTTP/1.1\r\nhOsT: a\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\n"
        b"SEC-WEBSOCKET-KEY: " + KEY.encode() + b"\r\nsec-websocket-version: 13\r\n\r\n"
    )
    assert check_request(parse(data))[1] == [("Sec-WebSocket-Accept", ACCEPT)]


# origins (RFC 6455 4.2.2 /origin/, 10.2)

def test_origins_none_allows_anything():
    check_request(parse(upgrade("Origin: https://evil.example")), origins=None)
    check_request(parse(upgrade()), origins=None)


def test_origins_list_case_insensitive():
    ok = ["https://App.example", "https://other.example"]
    check_request(parse(upgrade("Origin: https://app.EXAMPLE")), origins=ok)
    exc = refused(upgrade("Origin: https://evil.example"), origins=ok)
    assert (exc.status, exc.body) == (403, "Forbidden origin")
    assert refused(upgrade("Origin: https://app.example.evil"), origins=ok).status == 403
    assert refused(upgrade(), origins=ok).status == 403  # missing Origin refused
    check_request(parse(upgrade()), origins=[*ok, None])  # ... unless None is listed
    check_request(parse(upgrade("Origin: https://other.example")), origins=frozenset(ok))


def test_origins_several_lines_refused():
    data = upgrade("Origin: https://a.example", "Origin: https://a.example")
    assert refused(data, origins=["https://a.example"]).status == 403


def test_origins_callable():
    seen = []

    def policy(origin):
        seen.append(origin)
        return origin is None or origin.endswith(".good.example")

    check_request(parse(upgrade("Origin: https://x.good.example")), origins=policy)
    check_request(parse(upgrade()), origins=policy)
    assert refused(upgrade("Origin: https://bad.example"), origins=policy).status == 403
    assert seen == ["https://x.good.example", None, "https://bad.example"]


def test_origins_string_is_a_config_error():
    with pytest.raises(ConfigError):
        check_request(parse(upgrade("Origin: https://a")), origins="https://a")


# subprotocols (RFC 6455 4.2.2 /subprotocol/)

def test_subprotocol_server_preference():
    request = parse(upgrade("Sec-WebSocket-Protocol: chat, superchat"))
    sp, headers = check_request(request, subprotocols=["superchat", "chat"])
    assert sp == "superchat"
    assert headers == [("Sec-WebSocket-Accept", ACCEPT), ("Sec-WebSocket-Protocol", "superchat")]
    assert check_request(request, subprotocols=["chat", "superchat"])[0] == "chat"


def test_subprotocol_several_lines():
    request = parse(upgrade("Sec-WebSocket-Protocol: a", "sec-websocket-protocol: b,c"))
    assert check_request(request, subprotocols=["c", "a"])[0] == "c"


def test_subprotocol_none_in_common_succeeds_without_header():
    request = parse(upgrade("Sec-WebSocket-Protocol: a"))
    assert check_request(request, subprotocols=["b"]) == (None, [("Sec-WebSocket-Accept", ACCEPT)])
    assert check_request(parse(upgrade()), subprotocols=["b"])[0] is None
    assert check_request(request)[0] is None  # server has none


# ---------------------------------------------------------------- responses


def test_accept_response_rfc6455_4_2_2():
    _, headers = check_request(parse(SAMPLE), subprotocols=["chat"])
    data = accept_response(headers, [("X-Extra", "1"), ("Connection", "nope")])
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert data.endswith(b"\r\n\r\n")
    reader = ResponseReader()
    response = reader.feed(data + FRAME)
    assert reader.leftover == FRAME
    assert response.headers.get_all("connection") == ["Upgrade"]
    assert response.headers["upgrade"] == "websocket"
    assert response.headers["sec-websocket-protocol"] == "chat"
    assert response.headers["x-extra"] == "1"
    assert response.headers["server"] == "fastws" and "date" in response.headers
    assert "content-length" not in response.headers
    assert check_response(response, KEY, ["chat"]) == "chat"


@pytest.mark.parametrize(
    "data,kw",
    [
        (upgrade(method="POST"), {}),
        (upgrade(version="1.0"), {}),
        (upgrade(version="2.0"), {}),
        (upgrade(drop=("host",)), {}),
        (upgrade("Upgrade: h2c", drop=("upgrade",)), {}),
        (upgrade(drop=("connection",)), {}),
        (upgrade(drop=("sec-websocket-version",)), {}),
        (upgrade(drop=("sec-websocket-key",)), {}),
        (upgrade("Origin: https://x"), {"origins": []}),
    ],
)
def test_error_responses_are_valid_http(data, kw):
    exc = refused(data, **kw)
    status, headers, body = parse_http_response(error_response(exc))
    assert status == exc.status
    names = [n for n, _ in headers]
    assert "close" in [t.strip().lower() for n, v in headers if n == "connection" for t in v.split(",")]
    assert ("content-type", "text/plain; charset=utf-8") in headers
    assert names.count("content-length") == 1 and "date" in names and ("server", "fastws") in headers
    for name, value in exc.headers:
        if name.lower() != "connection":
            assert (name.lower(), value) in headers
    assert body.decode() == exc.body + "\n"


def test_426_response_merges_connection_tokens():
    data = error_response(refused(upgrade("Upgrade: h2c", drop=("upgrade",))))
    assert b"\r\nConnection: Upgrade, close\r\n" in data
    assert b"\r\nUpgrade: websocket\r\n" in data


def test_error_reader_errors_are_valid_http():
    for data, status in ((b"BAD\r\n\r\n", 400), (_head_of_size(9000), 431)):
        with pytest.raises(InvalidRequest) as info:
            RequestReader().feed(data)
        assert parse_http_response(error_response(info.value))[0] == status


def test_response_to_bytes():
    response = Response(200, "OK", Headers([("Content-Type", "text/html"), ("Content-Length", "999")]), b"<p>")
    status, headers, body = parse_http_response(response.to_bytes())
    assert (status, body) == (200, b"<p>")
    assert ("content-type", "text/html") in headers and ("content-length", "3") in headers
    assert ("content-length", "999") not in headers
    status, headers, body = parse_http_response(Response(204, "", []).to_bytes())
    assert status == 204 and "content-length" not in [n for n, _ in headers]


@pytest.mark.parametrize(
    "headers,reason",
    [([("X", "a\r\nInjected: 1")], "OK"), ([("Bad Name", "a")], "OK"), ([], "OK\r\nX: y")],
)
def test_response_refuses_header_injection(headers, reason):
    with pytest.raises(ValueError):
        Response(200, reason, headers).to_bytes()


# ---------------------------------------------------------------- client side (RFC 6455 4.1)


def test_build_request_round_trip():
    key = make_key()
    data = build_request(
        "example.com", 8080, "/ws?x=1", key, subprotocols=["chat", "v2"],
        origin="https://example.com", extra_headers=[("Authorization", "Bearer t")],
    )
    request = parse(data)
    assert request.headers["host"] == "example.com:8080"
    assert request.path == "/ws?x=1"
    assert request.headers["user-agent"] == "fastws/0.1"
    assert request.headers["authorization"] == "Bearer t"
    sp, headers = check_request(request, origins=["https://example.com"], subprotocols=["v2"])
    assert sp == "v2" and headers[0] == ("Sec-WebSocket-Accept", accept_key(key))


@pytest.mark.parametrize(
    "host,port,secure,expected",
    [
        ("example.com", 80, False, "example.com"),
        ("example.com", 443, True, "example.com"),
        ("example.com", 443, False, "example.com:443"),
        ("example.com", 80, True, "example.com:80"),
        ("::1", 80, False, "[::1]"),
        ("::1", 9000, True, "[::1]:9000"),
        ("[::1]", 9000, False, "[::1]:9000"),
    ],
)
def test_build_request_host_header(host, port, secure, expected):
    request = parse(build_request(host, port, "", KEY, secure=secure, user_agent=None))
    assert request.headers["host"] == expected
    assert request.path == "/"
    assert "user-agent" not in request.headers


def test_build_request_refuses_injection():
    with pytest.raises(InvalidURI):
        build_request("a", 80, "/a b", KEY)
    with pytest.raises(InvalidURI):
        build_request("a\r\nX: y", 80, "/", KEY)
    with pytest.raises(ValueError):
        build_request("a", 80, "/", KEY, subprotocols=["a b"])
    with pytest.raises(ValueError):
        build_request("a", 80, "/", KEY, extra_headers=[("X", "1\r\n")])


def _response(*lines: str, status="101 Switching Protocols") -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{l}\r\n" for l in lines) + "\r\n").encode()


GOOD = ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}")


def read_response(data: bytes) -> Response:
    reader = ResponseReader()
    response = reader.feed(data)
    return response if response is not None else reader.eof()


def test_check_response_ok():
    assert check_response(read_response(_response(*GOOD)), KEY) is None
    lines = ("upgrade: WebSocket", "connection: keep-alive, upgrade", f"sec-websocket-accept: {ACCEPT}")
    assert check_response(read_response(_response(*lines)), KEY) is None


@pytest.mark.parametrize(
    "lines",
    [
        GOOD[1:],
        ("Upgrade: h2c", *GOOD[1:]),
        ("Upgrade: websocket, h2c", *GOOD[1:]),
        (GOOD[0], GOOD[2]),
        (GOOD[0], "Connection: keep-alive", GOOD[2]),
        GOOD[:2],
        (*GOOD[:2], "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        (*GOOD, GOOD[2]),
        (*GOOD, "Sec-WebSocket-Extensions: permessage-deflate"),
        (*GOOD, "Sec-WebSocket-Protocol: other"),
        (*GOOD, "Sec-WebSocket-Protocol: chat, other"),
    ],
)
def test_check_response_rfc6455_4_1_failures(lines):
    with pytest.raises(InvalidResponse) as info:
        check_response(read_response(_response(*lines)), KEY, ["chat"])
    assert not isinstance(info.value, InvalidStatus)


def test_check_response_subprotocol():
    response = read_response(_response(*GOOD, "Sec-WebSocket-Protocol: chat"))
    assert check_response(response, KEY, ["v2", "chat"]) == "chat"
    with pytest.raises(InvalidResponse):
        check_response(response, KEY)  # we offered none


def test_check_response_non_101_is_invalid_status():
    response = read_response(_response("Content-Length: 9", "X: y", status="403 Forbidden") + b"forbidden")
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    assert info.value.status == 403
    assert info.value.body == b"forbidden"
    assert ("X", "y") in info.value.headers


def test_response_reader_101_split_everywhere_with_frames():
    data = _response(*GOOD) + FRAME
    for cut in range(len(data) + 1):
        reader = ResponseReader()
        first = reader.feed(data[:cut])
        second = reader.feed(data[cut:])
        assert (first is None) != (second is None), cut
        assert reader.leftover == FRAME, cut
        assert check_response(first or second, KEY) is None


def test_response_reader_bodies():
    reader = ResponseReader()
    assert reader.feed(_response(status="400 Bad Request") + b"until ") is None
    assert reader.feed(b"close") is None
    assert reader.eof().body == b"until close"

    reader = ResponseReader()
    assert reader.feed(_response("Transfer-Encoding: chunked", status="500 Oops") + b"2\r\nab\r\n") is None
    response = reader.feed(b"0\r\n\r\n")
    assert (response.status, response.reason, response.body) == (500, "Oops", b"ab")

    response = read_response(_response("Content-Length: 0", status="404"))
    assert (response.status, response.reason) == (404, "")

    reader = ResponseReader()
    reader.feed(_response("Content-Length: 10", status="400 x") + b"abc")
    with pytest.raises(InvalidResponse):
        reader.eof()

    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 101 Swi")
    with pytest.raises(InvalidResponse):
        reader.eof()


def test_response_reader_skips_interim_1xx():
    reader = ResponseReader()
    response = reader.feed(_response(status="100 Continue") + _response("Link: </x>", status="103 Early Hints") + _response(*GOOD) + b"F")
    assert response.status == 101 and reader.leftover == b"F"
    assert "link" not in response.headers


def test_response_reader_limits():
    with pytest.raises(InvalidResponse):
        ResponseReader().feed(b"NOT HTTP\r\n\r\n")
    with pytest.raises(InvalidResponse):
        ResponseReader(max_head=50).feed(_response(*GOOD))
    with pytest.raises(InvalidResponse):
        ResponseReader(max_headers=2).feed(_response(*GOOD))
    with pytest.raises(InvalidResponse):
        ResponseReader(max_body=3).feed(_response("Content-Length: 4", status="403 x"))
    reader = ResponseReader(max_body=3)
    reader.feed(_response(status="403 x"))
    with pytest.raises(InvalidResponse):
        reader.feed(b"abcd")


# ---------------------------------------------------------------- interop over real sockets


def test_check_response_against_websockets_server():
    from websockets.asyncio.server import serve

    async def main():
        async def handler(ws):
            await ws.send("hello")
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, subprotocols=["chat"]) as server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = make_key()
            writer.write(build_request("127.0.0.1", port, "/x", key, subprotocols=["v9", "chat"]))
            parser = ResponseReader()
            response = None
            while response is None:
                data = await asyncio.wait_for(reader.read(4096), 5)
                assert data
                response = parser.feed(data)
            assert check_response(response, key, ["v9", "chat"]) == "chat"
            frame = parser.leftover
            while len(frame) < 7:
                frame += await asyncio.wait_for(reader.read(4096), 5)
            assert frame[:7] == b"\x81\x05hello"
            writer.close()

    asyncio.run(main())


def test_websockets_server_refusal_is_invalid_status():
    from websockets.asyncio.server import serve

    async def main():
        def refuse(connection, request):
            return connection.respond(403, "go away\n")

        async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = make_key()
            writer.write(build_request("127.0.0.1", port, "/", key))
            parser = ResponseReader()
            response = None
            while response is None:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                response = parser.feed(chunk) if chunk else parser.eof()
            with pytest.raises(InvalidStatus) as info:
                check_response(response, key)
            assert (info.value.status, info.value.body) == (403, b"go away\n")
            writer.close()

    asyncio.run(main())


def _capture_request(client) -> bytes:
    """Run ``client(port)`` against a raw socket server; return the request head it sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    captured = []

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        captured.append(data)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client(port)
    except Exception:
        pass  # the raw server hangs up without answering
    thread.join(5)
    listener.close()
    assert captured and captured[0].endswith(b"\r\n\r\n")
    return captured[0]


def test_websockets_client_request_accepted():
    from websockets.asyncio.client import connect

    async def go(port):
        async with connect(
            f"ws://127.0.0.1:{port}/path?q=1", subprotocols=["chat"], origin="http://o.example", open_timeout=5
        ):
            pass

    data = _capture_request(lambda port: asyncio.run(go(port)))
    request = parse(data)
    assert request.path == "/path?q=1"
    sp, headers = check_request(request, origins=["http://O.example"], subprotocols=["chat"])
    assert sp == "chat"
    assert headers[0] == ("Sec-WebSocket-Accept", accept_key(request.headers["sec-websocket-key"]))


def test_websocket_client_request_accepted():
    import websocket

    def go(port):
        websocket.create_connection(f"ws://127.0.0.1:{port}/wc", timeout=5, subprotocols=["a", "b"])

    data = _capture_request(go)
    request = parse(data)
    assert request.path == "/wc"
    sp, _ = check_request(request, subprotocols=["b"])
    assert sp == "b"


# ---------------------------------------------------------------- llhttp quirks the reader hides


def test_upgrade_without_connection_upgrade_is_still_returned_at_the_head():
    # llhttp only treats Upgrade + Connection: upgrade as an upgrade; without
    # Connection it is a plain message, complete at the head anyway.
    reader = RequestReader()
    request = reader.feed(upgrade(drop=("connection",)) + FRAME)
    assert reader.leftover == FRAME
    assert is_upgrade_request(request)
    assert refused(upgrade(drop=("connection",))).status == 400


def test_connection_upgrade_without_upgrade_is_plain_http():
    reader = RequestReader()
    request = reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\nXX")
    assert not is_upgrade_request(request) and reader.leftover == b"XX"


def test_upgrade_with_huge_content_length_is_not_413():
    # The body of an upgrade request is never read, so no body limit applies;
    # check_request refuses it instead.
    data = upgrade("Content-Length: 99999999")
    assert RequestReader(max_body=10).feed(data) is not None
    assert refused(data).status == 400


def test_connect_method_is_405():
    data = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    reader = RequestReader()
    request = reader.feed(data + b"tunnel")
    assert request.method == "CONNECT" and reader.leftover == b"tunnel"
    assert refused(data).status == 405


def test_response_101_without_connection_header_fails_check():
    reader = ResponseReader()
    response = reader.feed(_response(GOOD[0], GOOD[2]) + FRAME)
    assert reader.leftover == FRAME
    with pytest.raises(InvalidResponse):
        check_response(response, KEY)


# ---------------------------------------------------------------- the fast paths equal the general ones
#
# The server's common case (whole head in one read, an upgrade) takes short
# cuts: raw field lines decoded lazily, the checked fields collected in one
# scan (Headers._fields), the head's field lines kept as received for
# Headers.pack, a 101 written from a template. Each is compared here with a
# plain reference written against the public Headers API, as the module did
# it before the short cuts.

from fastws import handshake as _hs  # noqa: E402
from fastws import http as _http  # noqa: E402


def _reference_check(request, origins=None, subprotocols=None):
    """check_request spelled out with Headers.get_all (the reference)."""
    headers = request.headers

    def tokens(name):
        return [t.strip(" \t") for v in headers.get_all(name) for t in v.split(",") if t.strip(" \t")]

    def has(name, token):
        return any(t.lower() == token for t in tokens(name))

    if request.method != "GET":
        raise InvalidRequest(405, "Method Not Allowed", [("Allow", "GET")])
    major, _, minor = request.version.partition(".")
    version = (int(major), int(minor or 0))
    if version < (1, 1):
        raise InvalidRequest(400, "Bad Request", body="HTTP/1.1 required")
    if version[0] > 1:
        raise InvalidRequest(505, "HTTP Version Not Supported")
    hosts = headers.get_all("host")
    if len(hosts) != 1 or not hosts[0]:
        raise InvalidRequest(400, "Bad Request", body="Missing or duplicate Host header")
    upgrade_headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if not has("upgrade", "websocket"):
        raise InvalidRequest(426, "Upgrade Required", upgrade_headers,
                             body="This service requires use of the WebSocket protocol")
    if not has("connection", "upgrade"):
        raise InvalidRequest(400, "Bad Request", body="Missing Connection: upgrade")
    if headers.get_all("sec-websocket-version") != ["13"]:
        raise InvalidRequest(426, "Upgrade Required", [("Sec-WebSocket-Version", "13"), *upgrade_headers],
                             body="Unsupported WebSocket version")
    keys = headers.get_all("sec-websocket-key")
    valid = False
    if len(keys) == 1 and len(keys[0]) == 24:
        try:
            valid = len(base64.b64decode(keys[0].encode("ascii"), validate=True)) == 16
        except ValueError:
            pass
    if not valid:
        raise InvalidRequest(400, "Bad Request", body="Invalid Sec-WebSocket-Key")
    length = headers.get("content-length")
    if (length is not None and length != "0") or "transfer-encoding" in headers:
        raise InvalidRequest(400, "Bad Request", body="Unexpected request body")
    if origins is not None:
        values = headers.get_all("origin")
        if len(values) > 1:
            ok = False
        elif callable(origins):
            ok = bool(origins(values[0] if values else None))
        elif not values:
            ok = None in origins
        else:
            ok = any(o is not None and o.lower() == values[0].lower() for o in origins)
        if not ok:
            raise InvalidRequest(403, "Forbidden", body="Forbidden origin")
    digest = __import__("hashlib").sha1((keys[0] + _hs.GUID).encode()).digest()
    response_headers = [("Sec-WebSocket-Accept", base64.b64encode(digest).decode())]
    offered = tokens("sec-websocket-protocol")
    for candidate in subprotocols or ():
        if candidate in offered:
            response_headers.append(("Sec-WebSocket-Protocol", candidate))
            return candidate, response_headers
    return None, response_headers


def _outcome(check, request, **kw):
    try:
        return check(request, **kw)
    except InvalidRequest as exc:
        return (exc.status, list(exc.headers), exc.body)


# Field lines to draw requests from: each checked field valid and not, in
# several spellings and spacings, with repeats, plus fields nobody checks.
_LINES = [
    "Host: example.com", "host: a", "HOST:b", "Host: ", "Host:\t x \t",
    "Upgrade: websocket", "upgrade: WebSocket", "Upgrade: h2c, websocket ", "Upgrade: h2c", "Upgrade: websocket/13",
    "Connection: Upgrade", "connection: keep-alive, upgrade", "Connection: keep-alive", "CONNECTION: ,Upgrade,",
    f"Sec-WebSocket-Key: {KEY}", f"sec-websocket-key:   {KEY}  ", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
    "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ=", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
    "Sec-WebSocket-Version: 13", "sec-websocket-version: 13 ", "Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 13, 8",
    "Origin: https://app.example", "origin: HTTPS://APP.EXAMPLE", "Origin: https://evil.example",
    "Sec-WebSocket-Protocol: chat, superchat", "sec-websocket-protocol: v2", "Sec-WebSocket-Protocol: ,",
    "Content-Length: 0", "Content-Length: 5", "Transfer-Encoding: chunked",
    "User-Agent: Mozilla/5.0", "user-agent: x", "Accept-Encoding: gzip", "Sec-WebSocket-Extensions: permessage-deflate",
    "X-Custom: caf\xe9", "Cookie: a=b", "Y:",
]
_VALID = ["Host: example.com", "Upgrade: websocket", "Connection: Upgrade",
          f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]


def _head(lines, method="GET", version="1.1") -> bytes:
    return (f"{method} /ws HTTP/{version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1")


def _complete(data: bytes, reader=None) -> Request:
    """The request ``data`` holds, for the cases where its head is all of it
    (not refused by llhttp, e.g. for two Content-Length; no body awaited)."""
    try:
        request = (reader or RequestReader()).feed(data)
    except InvalidRequest:
        request = None
    assume(request is not None)
    return request


def _reparsed(request) -> Request:
    """The same request with (str, str) Headers, as an application builds one."""
    return Request(request.method, request.path, Headers(request.headers.items()), request.version)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_LINES), max_size=8),
    st.sets(st.sampled_from(range(len(_VALID)))),
    st.sampled_from([None, ["https://app.example"], ["https://app.example", None], lambda o: o is None]),
    st.sampled_from([None, ["superchat", "chat"], ["v2"], ["none"]]),
    st.randoms(use_true_random=False),
)
def test_check_request_equals_reference(extra, dropped, origins, subprotocols, rnd):
    lines = [line for i, line in enumerate(_VALID) if i not in dropped] + extra
    rnd.shuffle(lines)
    data = _head(lines)
    request = _complete(data)
    expected = _outcome(_reference_check, request, origins=origins, subprotocols=subprotocols)
    assert _outcome(check_request, parse(data), origins=origins, subprotocols=subprotocols) == expected
    # A request built by the application (str Headers) takes the other scan.
    assert _outcome(check_request, _reparsed(request), origins=origins, subprotocols=subprotocols) == expected
    assert is_upgrade_request(parse(data)) == any(
        t.strip(" \t").lower() == "websocket" for v in request.headers.get_all("upgrade") for t in v.split(",")
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=10), st.integers(0, 400))
def test_headers_fields_pack_and_split_reads_agree(lines, cut):
    data = _head(lines) + FRAME
    whole = RequestReader()
    request = _complete(data, whole)  # (a Content-Length body takes from FRAME)
    assert request.headers._block is not None  # the head came in one read
    split = RequestReader()
    first = split.feed(data[:cut])
    second = split.feed(data[cut:])
    got = first or second
    assert (first is None) != (second is None)
    assert (split.leftover, got.body) == (whole.leftover, request.body)
    # Decoded lazily or not, in one read or two: the same fields...
    expected = [(n, v.strip(" \t")) for n, _, v in (line.partition(":") for line in lines)]
    assert request.headers.items() == expected == got.headers.items()
    # ... the same checked fields, from raw or from str items ...
    for headers in (parse(data).headers, got.headers, Headers(expected)):
        fields = headers._fields()
        for i, name in enumerate(_http.FIELD_NAMES):
            assert fields[i] == (headers.get_all(name) or None), name
    # ... and pack() round-trips whichever form it takes.
    for headers in (parse(data).headers, got.headers, Headers(expected)):
        assert Headers.unpack(headers.pack()).items() == expected


_QUERIES = ["Host", "host", "HOST", "Upgrade", "sec-websocket-key", "Origin", "Cookie", "cookie", "Y", "y",
            "X-Custom", "Authorization", "Missing", "", "caf\xe9", "\u212aey", "Sec-WebSocket-Protocol"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_LINES + ["Authorization: Bearer a.b.c", "authorization:Basic x ",
                                          "Key: k"]), max_size=10))
def test_headers_get_on_raw_lines_equals_decoded(lines):
    """``get``/``get_all`` on a reader's raw field lines (what an
    ``authenticate`` hook reads) answer as the decoded Headers do, and decode
    no other line: the headers stay raw."""
    data = _head(lines)
    try:
        request = RequestReader().feed(data)
    except InvalidRequest:
        assume(False)
    assume(request is not None)
    decoded = Headers(request.headers.items())
    raw = RequestReader().feed(data).headers
    for name in _QUERIES:
        assert raw.get(name) == decoded.get(name), name
        assert raw.get(name, "default") == decoded.get(name, "default"), name
        assert raw.get_all(name) == decoded.get_all(name), name
    assert raw._items is None and raw._raw is not None  # nothing decoded but the values asked for
    assert raw.pack() == RequestReader().feed(data).headers.pack()


def test_pack_keeps_the_field_lines_as_received():
    reader = RequestReader()
    request = reader.feed(SAMPLE + FRAME)
    # As received, or as their shape's number and the key (codec.pack_lines): the same bytes back.
    assert unpack_lines(request.headers.pack()) == SAMPLE[SAMPLE.index(b"\r\n"):-4]
    assert Headers.unpack(request.headers.pack()) == parse(SAMPLE).headers
    # Empty lines before the request line (RFC 9112 2.2): the joined form.
    request = parse(b"\r\n" + SAMPLE)
    assert request.headers.pack() == b"\r\n".join(b"%s: %s" % (n.encode(), v.encode()) for n, v in request.headers.items())
    assert Headers.unpack(request.headers.pack()) == parse(SAMPLE).headers
    assert parse(b"GET / HTTP/1.1\r\n\r\n").headers.pack() == b""
    h = parse(SAMPLE).headers
    h.add("X-Added", "1")  # the received lines no longer tell the whole story
    assert Headers.unpack(h.pack())["x-added"] == "1"


def test_raw_index_spellings_agree_with_lowercase():
    for name, i in _http._FIELD_INDEX_RAW.items():
        assert i == _http._FIELD_INDEX.get(name.decode().lower(), -1), name


def test_reader_drops_its_parser_when_done():
    # The parser holds the reader's callbacks: dropping it when done breaks
    # the cycle, so a reader is freed by reference counting alone.
    reader = RequestReader()
    reader.feed(SAMPLE)
    assert reader._parser is None
    reader = RequestReader()
    with pytest.raises(InvalidRequest):
        reader.feed(b"BAD\r\n\r\n")
    assert reader._parser is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCDEFabcdef0123456789+/= -_!\xe9", min_size=20, max_size=26))
def test_valid_key_equals_b64decode_validate(key):
    try:
        expected = len(key) == 24 and len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except ValueError:
        expected = False
    assert _hs._valid_key(key) == expected


def _reference_101(items) -> bytes:
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    headers += [(n, v) for n, v in items if n.lower() not in ("upgrade", "connection")]
    return Response(101, "Switching Protocols", headers).to_bytes()


@pytest.mark.parametrize(
    "headers_101,extra",
    [
        ([("Sec-WebSocket-Accept", ACCEPT)], ()),
        ([("Sec-WebSocket-Accept", ACCEPT), ("Sec-WebSocket-Protocol", "chat")], [("Set-Cookie", "a=b; Path=/")]),
        ([("Sec-WebSocket-Accept", ACCEPT)], [("X-Extra", "caf\xe9\t1"), ("connection", "close")]),
        ([("Sec-WebSocket-Accept", ACCEPT)], [("Server", "mine"), ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")]),
        ([("Sec-WebSocket-Accept", ACCEPT)], [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
        ([("Sec-WebSocket-Accept", ACCEPT)], [("Content-Type", "text/plain")]),
        ([], []),
    ],
)
def test_accept_response_equals_to_bytes(headers_101, extra):
    items = [*headers_101, *extra]
    assert accept_response(headers_101, extra) == _reference_101(items)


@pytest.mark.parametrize(
    "extra",
    [[("X", "a\r\nInjected: 1")], [("Bad Name", "a")], [("X", "\x00")], [("Sec-WebSocket-Protocol", "a\nb")],
     [("X\r\nY", "1")], [(b"X", "1")], [("X", 1)]],
)
def test_accept_response_refuses_what_to_bytes_refuses(extra):
    with pytest.raises(Exception) as expected:
        _reference_101([("Sec-WebSocket-Accept", ACCEPT), *extra])
    with pytest.raises(expected.type):
        accept_response([("Sec-WebSocket-Accept", ACCEPT)], extra)


# read_upgrade: the server's short cut for a whole valid upgrade head in the
# first read. Whenever it answers, the general way (RequestReader +
# check_request + accept_response) must give the same request, leftover and
# 101; when it does not (None), the server reads the bytes the general way.


def _general(data, max_head=8192, max_headers=100):
    reader = RequestReader(max_head=max_head, max_headers=max_headers)
    try:
        request = reader.feed(data)
    except InvalidRequest as exc:
        return ("refused", exc.status)
    if request is None:
        return ("incomplete",)
    try:
        subprotocol, headers = check_request(request)
    except InvalidRequest as exc:
        return ("refused", exc.status)
    return request, reader.leftover, subprotocol, headers


def _without_date(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    dates = [line for line in lines if line.lower().startswith(b"date: ")]
    assert len(dates) <= 1 and all(line.endswith(b" GMT") for line in dates), head
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"date: "))


def _same_as_general(data, max_head=8192, max_headers=100):
    quick = _hs.read_upgrade(data, max_head, max_headers)
    general = _general(data, max_head, max_headers)
    if quick is None:
        return False
    path, packed, key, leftover = quick
    assert (type(path), type(packed), type(key), type(leftover)) == (str, bytes, bytes, bytes)
    assert isinstance(general[0], Request), (data, general)
    expected, expected_leftover, subprotocol, headers = general
    assert subprotocol is None
    # The Request a hook gets later is the one the general way reads.
    request = _hs.quick_request(path, packed)
    assert (request.method, request.path, request.version, request.body) == (
        expected.method, expected.path, expected.version, expected.body)
    assert request.headers == expected.headers
    assert request.headers.items() == expected.headers.items()
    # packed: the lines as received; Headers.pack() keeps them as their
    # shape's number and the key (codec.pack_lines), the same bytes back.
    assert expected.headers.pack() == request.headers.pack()
    assert unpack_lines(request.headers.pack()) == packed
    assert leftover == expected_leftover
    assert type(key) is bytes and headers == [("Sec-WebSocket-Accept", accept_key(key.decode("ascii")))]
    # The same 101 but for its Date line, which may fall on either side of a
    # second's boundary between the two calls.
    assert _without_date(_hs.accept_101(key)) == _without_date(accept_response(headers))
    # ... and check_request answers the same on it.
    assert check_request(_hs.quick_request(path, packed)) == (None, headers)
    return True


_SHARED = _hs.upgrade_reader()


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(_LINES), max_size=8),
    st.sets(st.sampled_from(range(len(_VALID)))),
    st.sampled_from(["GET", "POST", "CONNECT"]),
    st.sampled_from(["1.1", "1.0", "2.0"]),
    st.sampled_from([b"", FRAME, b"GET / HTTP/1.1\r\n\r\n"]),
    st.sampled_from([(8192, 100), (120, 100), (8192, 5), (8192, 7)]),
    st.randoms(use_true_random=False),
)
def test_read_upgrade_agrees_with_the_general_way(extra, dropped, method, version, tail, limits, rnd):
    lines = [line for i, line in enumerate(_VALID) if i not in dropped] + extra
    rnd.shuffle(lines)
    data = _head(lines, method, version) + tail
    taken = _same_as_general(data, *limits)
    # A reader that keeps its parser from head to head (the server's) agrees.
    shared = _SHARED.read(data, *limits)
    assert (shared is not None) == taken
    if taken:
        assert shared == _hs.read_upgrade(data, *limits)
    # A head cut anywhere (the rest in a later read) is never taken.
    cut = rnd.randrange(len(data) - len(tail))
    assert _hs.read_upgrade(data[:cut]) is None


# Request lines and field lines llhttp accepts, some of them unusual: the
# short cut takes a head only where the spans it finds are llhttp's.
_ODD_STARTS = [b"GET /ws HTTP/1.1", b"GET  /ws HTTP/1.1", b"GET /ws  HTTP/1.1", b"GET * HTTP/1.1",
               b"GET http://a/b?c=d#e HTTP/1.1", b"GET /caf%C3%A9?q=%20 HTTP/1.1", b"GET / HTTP/1.0",
               b"GET /\xe9 HTTP/1.1", b"GET /a\tb HTTP/1.1"]
_ODD_LINES = [line.encode("latin-1") for line in _LINES] + [
    b"X-A: 1", b"x-a: 2", b"X-A:3", b"X-Empty:", b"X-Tail: v \t ", b"X-Obs: caf\xe9\xff", b"X-Tab: a\tb",
    b" folded", b"\tfolded", b"X : a", b"NoColon", b": v", b"X-CR: a\rb", b"X-LF: a\nb", b"X-Colon: a:b:c",
    b"Authorization: Bearer " + b"x" * 150,
]


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(_ODD_STARTS),
    st.lists(st.sampled_from(_ODD_LINES), max_size=8),
    st.sets(st.sampled_from(range(len(_VALID)))),
    st.sampled_from([b"", FRAME]),
    st.sampled_from([(8192, 100), (8192, 6), (8192, 9)]),
    st.randoms(use_true_random=False),
)
def test_quick_request_equals_the_general_request(start, extra, dropped, tail, limits, rnd):
    """RFC 9112 2.2 / 5: whatever llhttp accepts in a head, the short cut
    either leaves it (None) or finds the same request target and field
    lines: quick_request(path, packed) is the request RequestReader reads,
    headers included, and check_request answers it the same."""
    lines = [line.encode("latin-1") for i, line in enumerate(_VALID) if i not in dropped] + extra
    rnd.shuffle(lines)
    data = start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + tail
    taken = _same_as_general(data, *limits)
    assert (_SHARED.read(data, *limits) is not None) == taken
    if taken:
        assert start.count(b" ") == 2 and start.endswith(b" HTTP/1.1")
        assert not any(line[:1] in (b" ", b"\t") for line in lines)


@pytest.mark.parametrize("data", [
    # llhttp takes two spaces around the target; its URL span then differs
    # from "between the first space and ' HTTP/1.1'": not taken.
    upgrade().replace(b"GET /ws", b"GET  /ws"),
    upgrade().replace(b"/ws HTTP", b"/ws  HTTP"),
])
def test_read_upgrade_leaves_odd_request_lines(data):
    assert _hs.read_upgrade(data) is None
    request = parse(data)
    assert request.path == "/ws"
    check_request(request)  # the general way takes it


_QUICK = [
    SAMPLE,
    upgrade(),
    upgrade() + FRAME,
    upgrade("Origin: http://a", "User-Agent: x", "Sec-WebSocket-Extensions: permessage-deflate"),
    # Firefox: a token list in Connection
    upgrade(drop=("connection",)) [:-2] + b"Connection: keep-alive, Upgrade\r\n\r\n",
    # lowercase names (Go, Node clients), odd spacing
    b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
    b"sec-websocket-key:   " + KEY.encode() + b" \r\nsec-websocket-version: 13\r\n\r\n",
    # a field nobody checks, twice in the same spelling (a dict kept one)
    upgrade("X-A: 1", "X-A: 2", "Cookie: a=b", "Cookie: c=d"),
]


@pytest.mark.parametrize("data", _QUICK)
def test_read_upgrade_takes_the_usual_requests(data):
    assert _same_as_general(data)


@pytest.mark.parametrize(
    "data",
    [
        upgrade(version="1.0"), upgrade(method="POST"), upgrade(drop=("host",)), upgrade("Host: b"),
        upgrade("Content-Length: 0"), upgrade("Transfer-Encoding: chunked"), upgrade("Sec-WebSocket-Version: 13"),
        upgrade("Connection: Upgrade"),  # two Connection lines: the general way joins them
        upgrade(drop=("upgrade",)) [:-2] + b"Upgrade: h2c, websocket\r\n\r\n",
        upgrade(drop=("sec-websocket-key",)) [:-2] + b"Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ=\r\n\r\n",
        b"\r\n" + upgrade(), upgrade()[:-1], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GARBAGE\r\n\r\n",
    ],
)
def test_read_upgrade_leaves_the_rest_to_the_general_way(data):
    assert _hs.read_upgrade(data) is None
    _general(data)  # and the general way answers (refuses or accepts) without raising


def test_upgrade_reader_reuses_its_parser_only_after_a_head_it_took(feed_data_path):
    reader = _hs.upgrade_reader()
    heads = [SAMPLE + FRAME, upgrade(), b"GARBAGE\r\n\r\n", upgrade("Host: b"), upgrade("Connection: close, upgrade"),
             b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", upgrade()[:-2], SAMPLE, upgrade("X-A: 1", "x-a: 2")] * 2
    parsers = []
    for data in heads:
        before = reader._parser
        got = reader.read(data)
        assert got == _hs.read_upgrade(data), data
        if got is not None:
            assert reader._parser is not None
            parsers.append((before, reader._parser))
        else:
            assert reader._parser is None or reader._parser is before
    assert any(before is after for before, after in parsers)  # reused


def test_quick_request_headers_decode_on_first_use():
    path, packed, _, _ = _hs.read_upgrade(SAMPLE)
    headers = _hs.quick_request(path, packed).headers
    assert headers._items is None  # nothing decoded yet: a hook that reads no header pays nothing
    # pack() gives the lines back undecoded (as their shape's number and the
    # key when the shape table has room: codec.pack_lines).
    assert unpack_lines(headers.pack()) == packed and headers._items is None
    assert len(headers) == 7
    assert headers.get("sec-websocket-protocol") == "chat, superchat"
    assert headers == parse(SAMPLE).headers
    assert headers._fields() == parse(SAMPLE).headers._fields()
    headers.add("X-Added", "1")
    assert Headers.unpack(headers.pack())["x-added"] == "1"
    assert len(Headers.unpack(b"")) == 0 and Headers.unpack(b"").pack() == b""


# scan_upgrade: the checks of the short cut, in Cython (fastws_ext.upgrade)
# and in its pure-Python twin (fastws._py.upgrade): the same answers.

_SCAN_NAMES = [b"Host", b"host", b"HOST", b"Upgrade", b"upgrade", b"Connection", b"connection",
               b"Sec-WebSocket-Key", b"sec-websocket-key", b"Sec-WebSocket-Version", b"SEC-WEBSOCKET-VERSION",
               b"Content-Length", b"transfer-encoding", b"Origin", b"X-Any", b"Hosts", b"Upgrade2", b"Sec-WebSocket-Keys",
               b"", b"Ho st", b" Host", b"\tX", b"X\r", b"X\n"]
_SCAN_VALUES = [b"", b" ", b"a", b"example.com", b"websocket", b"WebSocket ", b"\twebsocket", b"websockets", b"h2c",
                b"upgrade", b"Upgrade", b"keep-alive, Upgrade", b"keep-alive,upgrade ,x", b",", b" , upgrade,",
                b"upgrades", b"keep-alive", b"13", b" 13\t", b"8", b"130", b"1 3", b"0",
                KEY.encode(), b" " + KEY.encode() + b"\t", b"dGhlIHNhbXBsZSBub25jZR==", b"dGhlIHNhbXBsZSBub25jZQ=",
                b"dGhlIHNhbXBsZSBub25jZQ===", b"dGhlIHNhbXBsZSBub25jZQ=A", b"dGhlIHNhbXBsZSBub25j-Q==",
                b"dGhlIHNhbXBsZSBub25jZ\xe9==", b"AAAAAAAAAAAAAAAAAAAAAA==", b"AAAAAAAAAAAAAAAAAAAAA===",
                b"=AAAAAAAAAAAAAAAAAAAAAA=", b"AAAAAAAAAAAAAAAAAAAAAAA=", b"AAAAAAAAAAAAAAAAAAAAAAAA",
                b"a\rb", b"a\nb", b"a\r\n b", b"a:b", b"\r\n\r\n"]
_SCAN_STARTS = [b"GET /ws HTTP/1.1", b"GET / HTTP/1.0", b"GET /HTTP/1.1", b"GET / http/1.1", b"GET / HTTP/1.12",
                b"GET  / HTTP/1.1", b"GET /  HTTP/1.1", b"GET /\xe9 HTTP/1.1", b"GET /a\x7f HTTP/1.1", b"POST / HTTP/1.1",
                b"GET\t/ HTTP/1.1", b"GET / HTTP/1.1\r", b"GET /\r HTTP/1.1", b"GET /\n HTTP/1.1", b"GET /",
                b"GET * HTTP/1.1", b"GET ?a=b#c HTTP/1.1", b"", b"GET  HTTP/1.1"]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(_SCAN_NAMES), st.sampled_from([b":", b": ", b":\t", b"", b" :"]),
                       st.sampled_from(_SCAN_VALUES)), max_size=9),
    st.sampled_from(_SCAN_STARTS),
    st.sampled_from([100, 5, 3]),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([b"\r\n\r\n", b"\r\n", b"\r\n\r\nX", b"\n\r\n", b"\r\n\r\n\r\n"]),
    st.randoms(use_true_random=False),
)
def test_scan_upgrade_cython_equals_twin(both_impls, fields, start, max_headers, extra_lines, base, end, rnd):
    cy, py = both_impls
    if base:  # a valid request, then the drawn lines mixed in
        fields = [(b"Host", b": ", b"a"), (b"Upgrade", b": ", b"websocket"), (b"Connection", b": ", b"Upgrade"),
                  (b"Sec-WebSocket-Key", b": ", KEY.encode()), (b"Sec-WebSocket-Version", b": ", b"13")] + fields[:2]
        rnd.shuffle(fields)
    lines = [start] + [n + sep + v for n, sep, v in fields] + [b"X: y"] * extra_lines
    head = b"\r\n".join(lines) + end
    expected = py.scan_upgrade(head, max_headers)
    assert cy.scan_upgrade(head, max_headers) == expected
    if expected is not None:
        path, packed, key = expected
        assert key == key.strip(b" \t") and len(key) == 24
        assert head == b"GET " + path.encode("latin-1") + b" HTTP/1.1" + packed + b"\r\n\r\n"
        assert packed.count(b"\r\n") <= max_headers


@pytest.mark.parametrize("key", _SCAN_VALUES + [b"+/+/+/+/+/+/+/+/+/+/+w==", b"zzzzzzzzzzzzzzzzzzzzzw=="])
def test_scan_upgrade_key_rule(impl, key):
    head = (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    valid = _hs._valid_key(key.decode("latin-1").strip(" \t"))
    got = impl.scan_upgrade(head, 100)
    assert (got[2] if got else None) == (key.strip(b" \t") if valid else None)


def test_scan_upgrade_counts_field_lines_against_max_headers(impl):
    head = upgrade("X-A: 1", "X-A: 2")  # 7 field lines
    assert impl.scan_upgrade(head, 7) is not None
    assert impl.scan_upgrade(head, 6) is None  # RequestReader(max_headers=6) refuses it (431)
    with pytest.raises(InvalidRequest):
        RequestReader(max_headers=6).feed(head)


def test_upgrade_reader_cython_equals_twin(both_impls):
    cy, py = both_impls
    readers = [cy.UpgradeReader(), py.UpgradeReader()]
    heads = _QUICK + [
        upgrade(version="1.0"), upgrade("Host: b"), upgrade("Content-Length: 0"), b"\r\n" + upgrade(),
        upgrade()[:-1], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET", b"",
        upgrade("X-Long: " + "x" * 9000), upgrade() + upgrade(), SAMPLE[:40] + b"\r\n\r\n",
        upgrade().replace(b"GET /ws", b"GET  /ws"),
    ]
    for limits in ((8192, 100), (100, 100), (8192, 4)):
        for data in heads * 2:
            got = [r.read(data, *limits) for r in readers]
            assert got[0] == got[1], data
    assert [r.read(bytearray(upgrade())) for r in readers] == [None, None]  # bytes only (as the server passes)


def test_upgrade_reader_read_accept_is_read_then_accept(both_impls):
    # read_accept (the server's call when nothing is left to check): read(),
    # accept() of its key and pack_lines() of its field lines, in one call;
    # the extension makes neither the key's nor the field lines' bytes.
    head = b"HTTP/1.1 101 Switching Protocols\r\nX: y\r\n"
    heads = _QUICK + [
        upgrade("Origin: http://a.example"), upgrade("sec-websocket-key: x"), upgrade() + FRAME,
        upgrade("X-Long: " + "x" * 2000), upgrade(version="1.0"), upgrade()[:-1], b"GET", b"",
    ]
    answers = []
    for impl in both_impls:
        reader, plain = impl.UpgradeReader(lambda: head), impl.UpgradeReader(lambda: head)
        got = []
        for limits in ((8192, 100), (100, 100), (8192, 4)):
            for data in heads * 2:
                fused, found = reader.read_accept(data, *limits), plain.read(data, *limits)
                if found is None:
                    assert fused is None, data
                else:
                    path, lines, key, leftover = found
                    assert fused == (path, impl.pack_lines(lines), plain.accept(key), leftover), data
                    assert impl.unpack_lines(fused[1]) == lines
                # (each implementation numbers its shapes itself: compared unpacked)
                got.append(fused and (fused[0], impl.unpack_lines(fused[1]), *fused[2:]))
        assert reader.read_accept(bytearray(upgrade())) is None
        with pytest.raises(TypeError):
            impl.UpgradeReader().read_accept(upgrade())  # no head(): no 101
        answers.append(got)
    assert answers[0] == answers[1]
    assert sum(a is not None for a in answers[0]) >= len(_QUICK)


# accept_101 and UpgradeReader.accept: the short cut's 101 (RFC 6455 4.2.2:
# base64(SHA-1(key + GUID))), hashed in C in the extension (two SHA-1 blocks,
# the second constant), with CPython's sha1 in the twin.

def _sha1_101(key: bytes, head: bytes) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
    return head + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"


def test_accept_101_rfc6455_1_3_example(impl):
    # RFC 6455 1.3: "dGhlIHNhbXBsZSBub25jZQ==" -> "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert impl.accept_101(KEY.encode(), b"H\r\n") == b"H\r\nSec-WebSocket-Accept: " + ACCEPT.encode() + b"\r\n\r\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=24, max_size=24), st.binary(max_size=300))
def test_accept_101_is_sha1_base64_of_any_24_bytes(impl, key, head):
    assert impl.accept_101(key, head) == _sha1_101(key, head)


@pytest.mark.parametrize("key", [b"", KEY.encode()[:-1], KEY.encode() + b"=", b" " + KEY.encode()])
def test_accept_101_takes_24_bytes_only(impl, key):
    with pytest.raises(ValueError):
        impl.accept_101(key, b"")
    with pytest.raises(TypeError):
        impl.accept_101(KEY, b"")  # str
    with pytest.raises(TypeError):
        impl.accept_101(KEY.encode(), None)


def test_upgrade_reader_accept_calls_head_at_most_once_a_second(impl):
    calls = []

    def head() -> bytes:
        calls.append(None)
        return b"HTTP/1.1 101 Switching Protocols\r\nX-Call: %d\r\n" % len(calls)

    reader = impl.UpgradeReader(head)
    keys = [base64.b64encode(bytes([i]) * 16) for i in range(200)]
    start = time.monotonic()
    answers = [reader.accept(key) for key in keys]
    elapsed = time.monotonic() - start
    # a loop of microseconds: one second boundary at most, unless the machine
    # stalled this process for longer (then one more per second it took)
    assert 1 <= len(calls) <= 2 + int(elapsed)
    for key, answer in zip(keys, answers):
        assert answer in [_sha1_101(key, head) for head in
                          (b"HTTP/1.1 101 Switching Protocols\r\nX-Call: %d\r\n" % n
                           for n in range(1, len(calls) + 1))]
    with pytest.raises(TypeError):
        impl.UpgradeReader().accept(KEY.encode())  # no head(): no 101


def test_server_upgrade_reader_answers_as_accept_101():
    # what the server writes on the short cut (Date of the same second: retried across a boundary)
    reader = _hs.upgrade_reader()
    for _ in range(3):
        got, expected = reader.accept(KEY.encode()), _hs.accept_101(KEY.encode())
        if got == expected:
            break
    assert got == expected and got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert got.endswith(b"\r\nSec-WebSocket-Accept: " + ACCEPT.encode() + b"\r\n\r\n")


class _FakeParser:
    """Stands for httptools' HttpRequestParser: feed_data raises or returns what it is told."""

    def __init__(self, outcome):
        self.outcome = outcome

    def __call__(self, protocol):
        return self

    def feed_data(self, data):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _upgrade_module(impl):
    return sys.modules[impl.UpgradeReader.__module__]


@pytest.fixture
def feed_data_path():
    """The extension's UpgradeReader on httptools' feed_data (as the twin,
    and as where llhttp's C API is not exported), not on llhttp directly."""
    try:
        module = _upgrade_module(_codec_load("cython"))
    except ImportError:  # no extension: the twin always calls feed_data
        module = None
    was = module.llhttp_direct() if module is not None else False
    if module is not None:
        module.llhttp_direct(False)
    yield
    if module is not None:
        module.llhttp_direct(was)


def test_extension_calls_llhttp_directly(both_impls):
    """The extension finds llhttp's C API in httptools' parser module: the
    head is parsed with no feed_data call (a feed_data that would fail is
    never reached), and the answers are the twin's."""
    cy, py = both_impls
    module = _upgrade_module(cy)
    assert module.llhttp_direct() is True
    assert _upgrade_module(py).llhttp_direct() is False
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "HttpRequestParser", _FakeParser(RuntimeError("feed_data called")))
        reader = cy.UpgradeReader()
        for data in _QUICK + [upgrade(version="1.0"), b"GARBAGE\r\n\r\n", upgrade("Content-Length: 0"),
                              upgrade().replace(b"GET /ws", b"GET  /ws"), SAMPLE + FRAME]:
            assert reader.read(data) == py.UpgradeReader().read(data), data
        assert reader._parser is None  # no httptools parser made
    # Turned off, read() goes through feed_data again; back on, directly.
    assert module.llhttp_direct(False) is False
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, "HttpRequestParser", _FakeParser(RuntimeError("feed_data called")))
            with pytest.raises(RuntimeError, match="feed_data called"):
                cy.UpgradeReader().read(SAMPLE)
    finally:
        assert module.llhttp_direct(True) is True


@pytest.mark.parametrize("outcome", [
    None,  # feed_data returned: no upgrade
    httptools.HttpParserUpgrade(len(SAMPLE) + 1),  # an upgrade, not where the head ends
    httptools.HttpParserUpgrade(len(SAMPLE) - 1),
    httptools.HttpParserUpgrade(2 ** 70),
    httptools.HttpParserUpgrade("x"),
    httptools.HttpParserUpgrade(-1),
    httptools.HttpParserError("bad"),
    httptools.HttpParserInvalidMethodError("bad method"),
])
def test_upgrade_reader_feed_data_outcomes_not_taken(impl, monkeypatch, feed_data_path, outcome):
    monkeypatch.setattr(_upgrade_module(impl), "HttpRequestParser", _FakeParser(outcome))
    reader = impl.UpgradeReader()
    assert reader.read(SAMPLE) is None
    assert reader._parser is None  # dropped: the next head gets a new one
    assert sys.exc_info() == (None, None, None)


def test_upgrade_reader_takes_the_upgrade_where_the_head_ends(impl, monkeypatch, feed_data_path):
    expected = impl.UpgradeReader().read(SAMPLE)
    assert expected is not None
    fake = _FakeParser(httptools.HttpParserUpgrade(len(SAMPLE)))
    monkeypatch.setattr(_upgrade_module(impl), "HttpRequestParser", fake)
    reader = impl.UpgradeReader()
    assert reader.read(SAMPLE) == expected
    assert reader._parser is fake  # kept for the next head


def test_upgrade_reader_lets_other_errors_out(impl, monkeypatch, feed_data_path):
    monkeypatch.setattr(_upgrade_module(impl), "HttpRequestParser", _FakeParser(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        impl.UpgradeReader().read(SAMPLE)
