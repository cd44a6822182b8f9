"""The seed corpus of each fuzz target, written by ``run.py`` (and
``python bench/fuzz/seeds.py``) into bench/fuzz/corpus/<target>/: the RFC 6455
and RFC 7692 example frames, the valid and invalid heads and responses of
tests/protocol/test_handshake.py, compressed messages and JSON requests of
tests/apps, each with the target's config bytes in front.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = b"\x37\xfa\x21\x3d"


def frame(b0, payload=b"", masked=False, key=MASK, long_len=False):
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126 and not long_len:
        head = bytes([b0, mbit | n])
    elif n < 65536 and not long_len:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def compressed(*messages, wbits=15, final=False):
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = []
    for i, m in enumerate(messages):
        data = c.compress(m) + c.flush(zlib.Z_FINISH if final and i == len(messages) - 1 else zlib.Z_SYNC_FLUSH)
        out.append(data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data)
    return out


def frames_seeds():
    hello_c = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 7.2.3.1
    streams = {  # (stream, masked, compressed)
        "text": (frame(0x81, b"Hello"), False, False),  # RFC 6455 5.7
        "masked-text": (frame(0x81, b"Hello", True), True, False),
        "fragments": (frame(0x01, b"Hel") + frame(0x80, b"lo"), False, False),
        "ping-pong": (frame(0x89, b"Hello") + frame(0x8A, b"Hello", True), False, False),
        "masked-pong": (frame(0x8A, b"Hello", True), True, False),
        "binary-256": (frame(0x82, bytes(range(256))), False, False),
        "binary-64k-head": (frame(0x82, b"\x00" * 100, long_len=True)[:14] + b"\x00" * 100, False, False),
        "utf8-split": (frame(0x01, "a\u20ac".encode()[:2], True) + frame(0x89, b"", True)
                       + frame(0x80, "a\u20ac".encode()[2:] + "\U0001f600".encode(), True), True, False),
        "bad-utf8": (frame(0x81, b"\xed\xa0\x80", True), True, False),
        "close": (frame(0x88, b"\x03\xe8bye", True) + frame(0x81, b"after", True), True, False),
        "close-bad-code": (frame(0x88, b"\x03\xedx", True), True, False),
        "close-1-byte": (frame(0x88, b"\x03", True), True, False),
        "reserved-opcode": (frame(0x83, b"x", True), True, False),
        "rsv": (frame(0xA1, b"x", True), True, False),
        "long-control": (frame(0x89, b"x" * 126, True), True, False),
        "fragmented-control": (frame(0x09, b"x", True), True, False),
        "stray-continuation": (frame(0x80, b"x", True), True, False),
        "compressed-hello": (frame(0xC1, hello_c), False, True),
        "compressed-masked": (frame(0xC1, hello_c, True), True, True),
        "compressed-takeover": (b"".join(frame(0xC1, m, True) for m in compressed(b"Hello", b"Hello", b"x" * 300)),
                                True, True),
        "compressed-fragments": (frame(0x41, hello_c[:3], True) + frame(0x80, hello_c[3:], True), True, True),
        "compressed-bomb": (frame(0xC2, compressed(b"\x00" * 100000)[0], True), True, True),
        "rsv1-continuation": (frame(0x01, b"a", True) + frame(0xC0, b"b", True), True, True),
    }
    out = {}
    for name, (stream, masked, comp) in streams.items():
        for variant, (flags, limits, extra, cuts) in {
            "": (0, 0, 0, b""),
            "-cut": (0, 3, 2, b"\x01\x03"),
            "-buffer": (4 | 8, 1, 1, b"\x02"),
            "-raise": (0x10, 1 << 3 | 2, 1, b"\x05"),
            "-small": (0, 4, 0, b""),
        }.items():
            flags |= (1 if masked else 0) | (2 if comp else 0)
            out[name + variant] = bytes([flags, limits, (extra & ~7) | len(cuts)]) + cuts + stream
    return out


def upgrade_lines(*extra, drop=(), method="GET", version="1.1", path="/ws"):
    fields = [("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Key", KEY.decode()), ("Sec-WebSocket-Version", "13")]
    lines = [f"{method} {path} HTTP/{version}"] + [f"{n}: {v}" for n, v in fields if n.lower() not in drop]
    return ("\r\n".join(lines + list(extra)) + "\r\n\r\n").encode("latin-1")


SAMPLE = (  # RFC 6455 1.2
    b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"


def upgrade_seeds():
    heads = {
        "sample": SAMPLE, "sample-frame": SAMPLE + FRAME, "plain": upgrade_lines(),
        "extras": upgrade_lines("Origin: http://a", "User-Agent: x", "Sec-WebSocket-Extensions: permessage-deflate"),
        "firefox": upgrade_lines("Connection: keep-alive, Upgrade", drop=("connection",)),
        "lowercase": b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
                     b"sec-websocket-key:   " + KEY + b" \r\nsec-websocket-version: 13\r\n\r\n",
        "http10": upgrade_lines(version="1.0"), "post": upgrade_lines(method="POST"),
        "no-host": upgrade_lines(drop=("host",)), "two-hosts": upgrade_lines("Host: b"),
        "cl0": upgrade_lines("Content-Length: 0"), "te": upgrade_lines("Transfer-Encoding: chunked"),
        "two-versions": upgrade_lines("Sec-WebSocket-Version: 13"),
        "two-connections": upgrade_lines("Connection: Upgrade"),
        "h2c": upgrade_lines("Upgrade: h2c, websocket", drop=("upgrade",)),
        "bad-key": upgrade_lines("Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ=", drop=("sec-websocket-key",)),
        "empty-line-first": b"\r\n" + upgrade_lines(), "partial": upgrade_lines()[:-1],
        "plain-get": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "garbage": b"GARBAGE\r\n\r\n",
        "space-colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "obs-fold": b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n", "nul": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        "two-cl": b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "post-body": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "chunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "pipelined": upgrade_lines() + upgrade_lines(), "latin1": b"GET / HTTP/1.1\r\nHost: a\r\nZ: caf\xe9\r\n\r\n",
        "origin-null": upgrade_lines("Origin: null"), "two-origins": upgrade_lines("Origin: http://a", "Origin: http://b"),
        "protocols": upgrade_lines("Sec-WebSocket-Protocol: b, chat"),
        "deflate-params": upgrade_lines("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; "
                                        "server_max_window_bits=10, permessage-deflate"),
        "deflate-bad": upgrade_lines("Sec-WebSocket-Extensions: permessage-deflate; x=\"a"),
        "version-8": upgrade_lines("Sec-WebSocket-Version: 8", drop=("sec-websocket-version",)),
        "http2": upgrade_lines(version="2.0"),
    }
    out = {}
    for name, head in heads.items():
        out[name] = b"\x00" + head
        cut = min(len(head) // 2, 255)
        out[name + "-split"] = bytes([0x20 | 2, cut, 1]) + head
        out[name + "-small"] = bytes([0x40]) + head
    return out


def response_seeds():
    def resp(*lines, status="101 Switching Protocols"):
        return (f"HTTP/1.1 {status}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()

    good = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: " + ACCEPT.decode())
    bodies = {
        "good": resp(*good), "good-frame": resp(*good) + FRAME,
        "lower": resp("upgrade: WebSocket", "connection: keep-alive, upgrade", "sec-websocket-accept: " + ACCEPT.decode()),
        "no-upgrade": resp(*good[1:]), "h2c": resp("Upgrade: h2c", *good[1:]), "no-accept": resp(*good[:2]),
        "wrong-accept": resp(*good[:2], "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        "two-accepts": resp(*good, good[2]), "extension": resp(*good, "Sec-WebSocket-Extensions: permessage-deflate"),
        "deflate-params": resp(*good, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
                                      "client_max_window_bits=9; server_no_context_takeover"),
        "protocol": resp(*good, "Sec-WebSocket-Protocol: chat"), "protocols": resp(*good, "Sec-WebSocket-Protocol: chat, b"),
        "403": resp("Content-Length: 9", "X: y", status="403 Forbidden") + b"forbidden",
        "chunked": resp("Transfer-Encoding: chunked", status="500 Oops") + b"2\r\nab\r\n0\r\n\r\n",
        "until-close": resp(status="400 Bad Request") + b"until close",
        "interim": resp(status="100 Continue") + resp("Link: </x>", status="103 Early Hints") + resp(*good) + b"F",
        "204": resp(status="204 No Content"), "garbage": b"NOT HTTP\r\n\r\n", "partial": b"HTTP/1.1 101 Swi",
        "big-cl": resp("Content-Length: 100000", status="403 x"),
    }
    out = {}
    for name, body in bodies.items():
        out[name] = b"\x00" + body
        out[name + "-eof"] = b"\x08" + body
        out[name + "-offered"] = bytes([0x10 | 1, min(len(body) // 2, 255)]) + body
        out[name + "-small"] = bytes([0x80 | 0x08 | 0x40]) + body
        if len(body) < 256:  # the whole response in the first read, more behind it in a second
            out[name + "-more"] = bytes([0x01, len(body)]) + body + FRAME
    return out


def inflate_seeds():
    messages = {
        "hello": [bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])],
        "takeover": compressed(b"Hello", b"Hello", b"Hello world" * 20),
        "stored": [b"\x00\x05\x00\xfa\xffHello"],
        "bomb": compressed(b"\x00" * 100000),
        "final": compressed(b"abc", b"abc", final=True),
        "window9": compressed(b"abcdefgh" * 100, b"abcdefgh" * 100, wbits=9),
        "empty": [b"\x00"],
        "fixed-huffman": [zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED).compress(b"aaaa") + b"\x03\x00"],
    }
    out = {}
    for name, msgs in messages.items():
        sizes = bytes(len(m) for m in msgs[:-1] if len(m) < 256)
        body = b"".join(msgs)
        for variant, first in {"": 6 | 0 << 3, "-100": 6 | 1 << 3, "-4096": 6 | 4 << 3, "-none": 6 | 7 << 3,
                               "-w9": 0 | 2 << 3}.items():
            out[name + variant] = bytes([first, len(sizes)]) + sizes + body
            out[name + variant + "-nc"] = bytes([first, 8 | len(sizes)]) + sizes + body
    return out


def json_seeds():
    chat = [
        b'a{"type":"login","name":"bob"}\nb{"type":"login","name":"BOB"}\nb{"type":"login","name":"amy"}\n'
        b'a{"type":"message","text":"hi"}\nb{"type":"message","text":" "}\nx\nb{"type":"message","text":"x"}',
        b'a{"type":"message","text":"before login"}\na{"type":"login","name":"\\ud800"}\n'
        b'a{"type":"login","name":"a\\u202eb"}\na{"type":"login","name":"' + b"n" * 40 + b'"}',
        b'a{"type":"login","name":"z"}\na{"type":"message","text":"\\udfff"}\na{"type":"login","name":"z"}',
        b"a[1]\nanot json\na\"str\"\na{}\na{\"type\":1}\na{\"type\":\"nope\"}\n" + b"a[[[[[[[[[[[[\n" * 4,
        b"A\x00\x01binary\na{\"type\":\"login\",\"name\":\"late\"}",
        b"a" + b"[" * 5000,
    ]
    push = [
        b"p/ws?topics=a,b\na{\"type\":\"subscribe\",\"topic\":\"c\"}\na{\"type\":\"unsubscribe\",\"topic\":\"a\"}",
        b"p/ws\na{\"type\":\"subscribe\",\"topic\":\"bad topic\"}\na{\"type\":\"subscribe\",\"topic\":\"t\",\"since\":5}\n"
        b"a{\"type\":\"subscribe\",\"topic\":\"t\",\"since\":-1}\na{\"type\":\"publish\"}\nAbin",
        b"p/ws?topics=" + b",".join(b"t%d" % i for i in range(64)) + b"\na{\"type\":\"subscribe\",\"topic\":\"more\"}",
        b"p/ws?since=3&topics=a\na{}\np/other\nb{\"type\":\"subscribe\",\"topic\":\"x\"}",
        b"p/ws?topics=\na{\"type\":\"subscribe\",\"topic\":\"" + b"x" * 129 + b"\"}",
    ]
    out = {f"chat-{i}": b"\x00" + s for i, s in enumerate(chat)}
    out.update({f"push-{i}": b"\x01" + s for i, s in enumerate(push)})
    return out


SEEDS = {"frames": frames_seeds, "upgrade": upgrade_seeds, "response": response_seeds,
         "inflate": inflate_seeds, "json_apps": json_seeds}


def write(target: str) -> str:
    """Write ``target``'s seeds (file names: their content's SHA-1, so writing
    twice changes nothing); returns the directory."""
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    for data in SEEDS[target]().values():
        name = hashlib.sha1(data).hexdigest()
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
    return directory


if __name__ == "__main__":
    for target in SEEDS:
        print(write(target), len(os.listdir(os.path.join(CORPUS, target))))
