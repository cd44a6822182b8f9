"""Equivalence proven, not hoped: the Cython parser and its pure-Python twin
are fed the same random streams, cut at the same random points, and must
deliver the same events, raise the same error (class, close code, reason) on
the same feed, and report the same state after every feed.

The streams are valid frames (random opcode, FIN, masking, payloads rich in
UTF-8 edge cases, lengths across the 7/16/64-bit encodings), some of them
invalid on purpose (reserved opcodes, RSV bits, fragmented or long control
frames, bad close codes), a third of them with permessage-deflate negotiated
(compressed messages with RSV1, one zlib stream with context takeover), then
randomly corrupted: bits flipped, bytes
overwritten, inserted, or the stream truncated.
"""
from __future__ import annotations

import os
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastws import deflate
from fastws.exceptions import ProtocolError
from fastws.options import Options

EXAMPLES = int(os.environ.get("FASTWS_DIFF_EXAMPLES", "400"))

# UTF-8 building blocks: whole code points of every length, the pieces of
# split ones, and bytes that are never valid.
VALID_UTF8 = [
    b"a", b"hello ", b"\x00", b"\x7f",
    "\u00e9".encode(), "\u20ac".encode(), "\U0001f600".encode(), "\U0010ffff".encode(),
    "\ud7ff".encode(), "\ue000".encode(), "\u0800".encode(), "\U00010000".encode(),
]
INVALID_UTF8 = [
    "\u20ac".encode()[:1], "\u20ac".encode()[1:], "\U0001f600".encode()[:2], "\U0001f600".encode()[2:],
    b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\xfe",
]
CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 0]
KEYS = [b"\x00\x00\x00\x00", b"\x37\xfa\x21\x3d", b"\xff\xff\xff\xff"]


def encode_frame(b0, payload, masked, key, long_len=False):
    """A frame written by hand, so that any header can be produced."""
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
    stream = (key * (n // 4 + 1))[:n]  # RFC 6455 5.3, written independently of fastws
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + body


def rare(draw, one_in):
    return draw(st.integers(0, one_in - 1)) == 0


@st.composite
def text_payload(draw):
    pieces = VALID_UTF8 + INVALID_UTF8 if rare(draw, 4) else VALID_UTF8
    data = b"".join(draw(st.lists(st.sampled_from(pieces), max_size=12)))
    if rare(draw, 15):
        data += b"x" * draw(st.sampled_from([126, 300, 65536]))
    return data


@st.composite
def binary_payload(draw):
    size = draw(st.integers(0, 40) | st.sampled_from([0, 125, 126, 127, 1000, 65535, 65536, 70000]))
    head = draw(st.binary(min_size=min(size, 16), max_size=min(size, 16)))
    return head + b"\x5a" * (size - len(head))


@st.composite
def control_payload(draw, opcode):
    if opcode != 0x8 or rare(draw, 4):
        return draw(st.sampled_from([b"x" * 125, b"x" * 126])) if rare(draw, 12) else draw(st.binary(max_size=8))
    code = draw(st.sampled_from([1000, 1001, 3000, 4999]) if draw(st.booleans()) else st.sampled_from(CLOSE_CODES))
    return struct.pack("!H", code) + draw(text_payload().filter(lambda t: len(t) < 100))


@st.composite
def frame(draw, expect_masked, opcode, payload, fin, rsv=0):
    """One frame, now and then broken: RSV bits, wrong masking, 64-bit length."""
    rsv = draw(st.sampled_from([0x10, 0x20, 0x40])) if rare(draw, 40) else rsv
    masked = expect_masked if not rare(draw, 40) else not expect_masked
    key = draw(st.sampled_from(KEYS) | st.binary(min_size=4, max_size=4))
    return encode_frame((0x80 if fin else 0) | rsv | opcode, payload, masked, key, rare(draw, 30))


@st.composite
def streams(draw):
    """Messages (1-4 fragments, control frames between them) and control
    frames, some invalid frames, then bytes corrupted; cut at random points."""
    expect_masked = draw(st.booleans())
    # permessage-deflate negotiated: some messages compressed (RSV1 on the
    # first frame), one zlib stream with context takeover across them.
    compressing = rare(draw, 3)
    zc = zlib.compressobj(6, zlib.DEFLATED, -15)
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind < 6:  # a data message, maybe fragmented, maybe with controls inside
            opcode = draw(st.sampled_from([0x1, 0x2]))
            data = draw(text_payload() if opcode == 0x1 else binary_payload())
            rsv1 = 0
            if compressing and draw(st.booleans()):
                data = (zc.compress(data) + zc.flush(zlib.Z_SYNC_FLUSH))[:-4]
                rsv1 = 0x40
            cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
            for i, piece in enumerate(pieces):
                parts.append(draw(frame(expect_masked, opcode if i == 0 else 0x0, piece, i == len(pieces) - 1,
                                        rsv1 if i == 0 else 0)))
                if i < len(pieces) - 1 and rare(draw, 3):
                    op = draw(st.sampled_from([0x9, 0xA]))
                    parts.append(draw(frame(expect_masked, op, draw(control_payload(op)), True)))
        elif kind < 9:  # a control frame
            op = draw(st.sampled_from([0x8, 0x9, 0xA]))
            parts.append(draw(frame(expect_masked, op, draw(control_payload(op)), not rare(draw, 20))))
        else:  # any opcode (reserved ones too), any FIN
            op = draw(st.integers(0, 15))
            parts.append(draw(frame(expect_masked, op, draw(binary_payload()), draw(st.booleans()))))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(1, 3)) if rare(draw, 3) else 0):
        if not data:
            break
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(data) - 1))
        if op == 0:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[i] = draw(st.integers(0, 255))
        elif op == 2:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[i:]
    data = bytes(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    max_size = draw(st.sampled_from([None, 1048576, 1048576, 65536, 200, 10, 0]))
    raise_at = draw(st.sets(st.integers(0, 12), max_size=2))
    return expect_masked, max_size, chunks, raise_at, compressing


class Boom(Exception):
    pass


def make_inflate(compressing, max_size):
    """A fresh permessage-deflate inflater for one parser (None: not negotiated)."""
    if not compressing:
        return None
    params = deflate.DeflateParams(Options(compression="deflate"), 15, 15, False, False)
    params.limit = 0 if max_size is None else max_size + 1
    params.step = 0 if max_size is None else max(65536, params.limit >> 4)
    return deflate.PerMessageDeflate(params).inflate


def run(codec, expect_masked, max_size, chunks, raise_at, compressing=False):
    """The full observable history of one parser over the chunks."""
    events = []
    inflate = make_inflate(compressing, max_size)

    def record(event):
        events.append(event)
        if len(events) - 1 in raise_at:
            raise Boom()

    parser = codec.FrameParser(
        lambda data: record(("message", type(data).__name__, data)),
        lambda opcode, payload: record(("control", opcode, payload)),
        expect_masked=expect_masked,
        max_size=max_size,
        inflate=inflate,
    )
    # A final empty feed delivers what a raising callback left buffered.
    for index, chunk in enumerate([*chunks, b"", b""]):
        try:
            parser.feed(chunk)
        except Boom:
            events.append(("boom", index))
        except ProtocolError as exc:
            events.append(("error", index, type(exc).__name__, exc.code, exc.reason))
        events.append(("state", index, parser.buffered, parser.closed, parser.failed, parser.frames_received,
                       # activity is the keepalive's liveness counter: once the parser
                       # has failed (the connection is closing) it is unspecified, and
                       # the builds differ in how much of a bad chunk they took
                       None if parser.failed else parser.activity, parser.at_rest,
                       parser.messages_received))
    return events


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(streams())
def test_cython_and_twin_agree(both_impls, stream):
    cython, python = both_impls
    assert run(cython, *stream) == run(python, *stream)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.lists(st.binary(max_size=20), max_size=8))
def test_cython_and_twin_agree_on_noise(both_impls, expect_masked, chunks):
    cython, python = both_impls
    assert run(cython, expect_masked, 100, chunks, set()) == run(python, expect_masked, 100, chunks, set())


def test_byte_by_byte_agrees(both_impls):
    """A long valid stream fed one byte at a time, then in odd-sized chunks."""
    cython, python = both_impls
    key = b"\x01\x02\x03\x04"
    text = "a€😀é".encode()
    data = b"".join(
        [
            encode_frame(0x01, text[:5], True, key),
            encode_frame(0x89, b"ping", True, key),
            encode_frame(0x80, text[5:], True, key),
            encode_frame(0x82, bytes(range(256)) * 3, True, key),
            encode_frame(0x81, text * 40, True, key, long_len=True),
            encode_frame(0x88, b"\x03\xe8bye", True, key),
        ]
    )
    for size in (1, 2, 3, 7, 13, 139, 257):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        a = run(cython, True, None, chunks, set())
        assert a == run(python, True, None, chunks, set())
        assert [e for e in a if e[0] in ("message", "control")][-1] == ("control", 8, b"\x03\xe8bye"), (size, a)
