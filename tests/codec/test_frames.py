"""RFC 6455 section 5 framing: the parser and the builder, against both
implementations (the ``impl`` fixture: Cython and the pure-Python twin)."""
from __future__ import annotations

import struct

import pytest

from fastws.exceptions import FrameError, InvalidUTF8, MessageTooBig

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 5.7

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Recorder:
    """A parser plus the list of events it delivered."""

    def __init__(self, impl, *, expect_masked=True, **kwargs):
        self.events = []
        self.parser = impl.FrameParser(
            lambda data: self.events.append(("message", data)),
            lambda opcode, payload: self.events.append(("control", opcode, payload)),
            expect_masked=expect_masked,
            **kwargs,
        )

    def feed(self, data, chunk=None):
        if chunk is None:
            self.parser.feed(data)
        else:
            for i in range(0, len(data), chunk):
                self.parser.feed(data[i : i + chunk])
        return self.events

    def feed_bytewise(self, data):
        for i in range(len(data)):
            self.parser.feed(data[i : i + 1])
        return self.events


def frame(impl, opcode, payload=b"", *, fin=True, masked=True, rsv=0):
    return impl.build_frame(opcode, payload, fin=fin, mask=masked, rsv=rsv)


def raw(b0, b1, rest=b""):
    return bytes([b0, b1]) + rest


# -- constants ----------------------------------------------------------


def test_opcodes(impl):
    """RFC 6455 5.2 opcodes, defined once (fastws.constants), as both builds frame them."""
    from fastws import constants as c

    assert (c.OP_CONTINUATION, c.OP_TEXT, c.OP_BINARY) == (0x0, 0x1, 0x2)
    assert (c.OP_CLOSE, c.OP_PING, c.OP_PONG) == (0x8, 0x9, 0xA)
    for op in (c.OP_TEXT, c.OP_BINARY, c.OP_CLOSE, c.OP_PING, c.OP_PONG):
        assert impl.build_frame(op, b"")[0] == 0x80 | op


# -- RFC 6455 5.7 examples, byte for byte --------------------------------

RFC_EXAMPLES = [
    # (name, wire bytes, expect_masked, expected events)
    ("single-frame unmasked text", bytes.fromhex("810548656c6c6f"), False, [("message", "Hello")]),
    (
        "single-frame masked text",
        bytes.fromhex("818537fa213d7f9f4d5158"),
        True,
        [("message", "Hello")],
    ),
    (
        "fragmented unmasked text",
        bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"),
        False,
        [("message", "Hello")],
    ),
    ("unmasked ping", bytes.fromhex("890548656c6c6f"), False, [("control", 0x9, b"Hello")]),
    (
        "masked pong",
        bytes.fromhex("8a8537fa213d7f9f4d5158"),
        True,
        [("control", 0xA, b"Hello")],
    ),
]


@pytest.mark.parametrize("name,wire,expect_masked,events", RFC_EXAMPLES, ids=[e[0] for e in RFC_EXAMPLES])
@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_rfc_5_7_parse(impl, name, wire, expect_masked, events, chunk):
    rec = Recorder(impl, expect_masked=expect_masked)
    assert rec.feed(wire, chunk) == events
    assert rec.parser.buffered == 0


def test_rfc_5_7_build(impl):
    assert impl.build_frame(OP_TEXT, "Hello") == bytes.fromhex("810548656c6c6f")
    assert impl.build_frame(OP_TEXT, b"Hello", mask_key=KEY) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert impl.build_frame(OP_TEXT, "Hel", fin=False) == bytes.fromhex("010348656c")
    assert impl.build_frame(OP_CONT, "lo") == bytes.fromhex("80026c6f")
    assert impl.build_frame(OP_PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert impl.build_frame(OP_PONG, b"Hello", mask_key=KEY) == bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_rfc_5_7_binary_256(impl):
    # "256 bytes binary message in a single unmasked frame: 0x82 0x7E 0x0100"
    payload = bytes(range(256))
    wire = impl.build_frame(OP_BINARY, payload)
    assert wire[:4] == bytes([0x82, 0x7E, 0x01, 0x00]) and wire[4:] == payload
    assert impl.build_header(OP_BINARY, 256) == bytes([0x82, 0x7E, 0x01, 0x00])
    assert Recorder(impl, expect_masked=False).feed(wire, 7) == [("message", payload)]


def test_rfc_5_7_binary_64k(impl):
    # "64KiB binary message in a single unmasked frame:
    #  0x82 0x7F 0x0000000000010000"
    payload = bytes(range(256)) * 256
    header = bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
    wire = impl.build_frame(OP_BINARY, payload)
    assert wire[:10] == header and wire[10:] == payload
    assert impl.build_header(OP_BINARY, 65536) == header
    assert Recorder(impl, expect_masked=False).feed(wire, 1000) == [("message", payload)]


# -- builder --------------------------------------------------------------


@pytest.mark.parametrize("length,header_size", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_build_minimal_length_encoding(impl, length, header_size):
    # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length"
    assert len(impl.build_frame(OP_BINARY, bytes(length))) == header_size + length
    assert len(impl.build_frame(OP_BINARY, bytes(length), mask=True)) == header_size + 4 + length
    assert len(impl.build_header(OP_BINARY, length)) == header_size
    assert len(impl.build_header(OP_BINARY, length, mask_key=KEY)) == header_size + 4


def test_build_header_64bit(impl):
    assert impl.build_header(OP_BINARY, 2**63 - 1)[2:] == b"\x7f" + b"\xff" * 7
    with pytest.raises(ValueError):
        impl.build_header(OP_BINARY, 2**63)
    with pytest.raises(ValueError):
        impl.build_header(OP_BINARY, -1)


def test_build_header_flags(impl):
    assert impl.build_header(OP_TEXT, 5, fin=False) == b"\x01\x05"
    assert impl.build_header(OP_TEXT, 5, rsv=0x40) == b"\xc1\x05"
    assert impl.build_header(OP_TEXT, 5, mask_key=KEY) == b"\x81\x85" + KEY


def test_build_masked_fresh_keys(impl):
    # RFC 6455 5.3: "The masking key needs to be unpredictable"
    frames = [impl.build_frame(OP_BINARY, b"abcd", mask=True) for _ in range(3000)]
    keys = {f[2:6] for f in frames}
    assert len(keys) > 2900  # 3000 draws crossing a refill of the key buffer
    for f in frames[:50]:
        rec = Recorder(impl)
        assert rec.feed(f) == [("message", b"abcd")]


@pytest.mark.parametrize("payload", [b"xyz", bytearray(b"xyz"), memoryview(b"__xyz__")[2:5], "xyz"])
def test_build_payload_types(impl, payload):
    assert impl.build_frame(OP_BINARY, payload) == b"\x82\x03xyz"
    assert impl.build_frame(OP_BINARY, payload, mask_key=b"\0\0\0\0") == b"\x82\x83\0\0\0\0xyz"


def test_build_str_is_utf8(impl):
    assert impl.build_frame(OP_TEXT, "é€😀") == b"\x81\x09" + "é€😀".encode()
    with pytest.raises(UnicodeEncodeError):
        impl.build_frame(OP_TEXT, "\ud800")


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((3, b""), {}, "opcode"),
        ((0xB, b""), {}, "opcode"),
        ((16, b""), {}, "opcode"),
        ((OP_PING, b"x" * 126), {}, "125"),
        ((OP_CLOSE, b""), {"fin": False}, "fragmented"),
        ((OP_TEXT, b""), {"rsv": 0x80}, "rsv"),
        ((OP_TEXT, b""), {"rsv": 0x01}, "rsv"),
        ((OP_TEXT, b""), {"mask_key": b"abc"}, "4 bytes"),
    ],
)
def test_build_invalid_arguments(impl, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        impl.build_frame(*args, **kwargs)


def test_build_control_125(impl):
    assert len(impl.build_frame(OP_PING, b"x" * 125)) == 127
    with pytest.raises(ValueError, match="125"):
        impl.build_header(OP_PONG, 126)


# -- parser: messages -----------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_fragmented_with_interleaved_ping(impl, chunk):
    # RFC 6455 5.4: "Control frames MAY be injected in the middle of a
    # fragmented message."
    wire = (
        frame(impl, OP_TEXT, "Hel", fin=False)
        + frame(impl, OP_PING, b"p1")
        + frame(impl, OP_CONT, "lo, ", fin=False)
        + frame(impl, OP_PONG, b"")
        + frame(impl, OP_PING, b"p2")
        + frame(impl, OP_CONT, "world")
        + frame(impl, OP_BINARY, b"\x00\xff")
    )
    assert Recorder(impl).feed(wire, chunk) == [
        ("control", OP_PING, b"p1"),
        ("control", OP_PONG, b""),
        ("control", OP_PING, b"p2"),
        ("message", "Hello, world"),
        ("message", b"\x00\xff"),
    ]


@pytest.mark.parametrize("chunk", [None, 1])
def test_code_point_split_across_frames(impl, chunk):
    euro = "€".encode()  # 3 bytes
    wire = (
        frame(impl, OP_TEXT, b"a" + euro[:1], fin=False)
        + frame(impl, OP_CONT, euro[1:2], fin=False)
        + frame(impl, OP_CONT, euro[2:] + b"b")
    )
    assert Recorder(impl).feed(wire, chunk) == [("message", "a€b")]


def test_zero_length_frames_and_messages(impl):
    wire = (
        frame(impl, OP_TEXT, b"")
        + frame(impl, OP_BINARY, b"")
        + frame(impl, OP_BINARY, b"", fin=False)
        + frame(impl, OP_CONT, b"", fin=False)
        + frame(impl, OP_CONT, b"")
        + frame(impl, OP_TEXT, b"", fin=False)
        + frame(impl, OP_CONT, b"x")
        + frame(impl, OP_PING, b"")
        + frame(impl, OP_CLOSE, b"")
    )
    for chunk in (None, 1, 3):
        rec = Recorder(impl)
        assert rec.feed(wire, chunk) == [
            ("message", ""),
            ("message", b""),
            ("message", b""),
            ("message", "x"),
            ("control", OP_PING, b""),
            ("control", OP_CLOSE, b""),
        ]
        assert rec.parser.frames_received == 9
        assert rec.parser.closed


def test_unmasked_zero_length_header_only_feed(impl):
    rec = Recorder(impl, expect_masked=False)
    rec.feed(b"\x82\x00")
    assert rec.events == [("message", b"")]


def test_message_types(impl):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_TEXT, "héllo") + frame(impl, OP_BINARY, "héllo"))
    assert rec.events == [("message", "héllo"), ("message", "héllo".encode())]
    assert type(rec.events[0][1]) is str and type(rec.events[1][1]) is bytes


def test_non_minimal_length_accepted(impl):
    # A 16-bit length for a 5-byte payload: RFC 6455 5.2 asks senders for the
    # minimal encoding; we accept a longer one, like most peers.
    rec = Recorder(impl, expect_masked=False)
    rec.feed(b"\x82\x7e\x00\x05hello" + b"\x82\x7f" + (5).to_bytes(8, "big") + b"world")
    assert rec.events == [("message", b"hello"), ("message", b"world")]


def test_large_message_16mib(impl):
    payload = bytes(range(256)) * (16 * 4096)  # 16 MiB
    wire = impl.build_frame(OP_BINARY, payload, mask=True)
    rec = Recorder(impl, max_size=None)
    rec.feed(wire, 65536)
    assert len(rec.events) == 1 and rec.events[0][1] == payload
    assert rec.parser.buffered == 0


def test_large_text_message_fragmented(impl):
    text = ("aé€😀" * 50000)
    data = text.encode()
    wire = b"".join(
        impl.build_frame(OP_TEXT if i == 0 else OP_CONT, data[i : i + 9999], fin=i + 9999 >= len(data), mask=True)
        for i in range(0, len(data), 9999)
    )
    rec = Recorder(impl, max_size=None)
    rec.feed(wire, 4097)
    assert rec.events == [("message", text)]


def test_65536_fragments(impl):
    # No cap on the number of fragments.
    n = 65536
    wire = impl.build_frame(OP_BINARY, b"a", fin=False, mask_key=KEY)
    wire += impl.build_frame(OP_CONT, b"b", fin=False, mask_key=KEY) * (n - 2)
    wire += impl.build_frame(OP_CONT, b"c", mask_key=KEY)
    rec = Recorder(impl)
    rec.feed(wire, 65536)
    assert rec.events == [("message", b"a" + b"b" * (n - 2) + b"c")]
    assert rec.parser.frames_received == n


# -- parser: violations (RFC 6455 5.1-5.5, 7.4, 8.1) ----------------------

V = [
    # (id, wire builder(impl), expect_masked, exception class, reason)
    ("unmasked frame", lambda i: i.build_frame(OP_TEXT, "x"), True, FrameError, "unmasked frame"),
    ("masked frame", lambda i: i.build_frame(OP_TEXT, "x", mask=True), False, FrameError, "masked frame"),
    ("rsv1", lambda i: frame(i, OP_TEXT, "x", rsv=0x40), True, FrameError, "RSV bits set"),
    ("rsv2", lambda i: frame(i, OP_BINARY, "x", rsv=0x20), True, FrameError, "RSV bits set"),
    ("rsv3", lambda i: frame(i, OP_PING, "x", rsv=0x10), True, FrameError, "RSV bits set"),
    *[
        (f"opcode {op}", (lambda op: lambda i: raw(0x80 | op, 0x80, KEY))(op), True, FrameError, f"reserved opcode {op}")
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
    ],
    ("control 126", lambda i: raw(0x89, 0xFE, b"\x00\x7e" + KEY + bytes(126)), True, FrameError, "control frame too long"),
    ("control 127", lambda i: raw(0x8A, 0xFF, bytes(8) + KEY), True, FrameError, "control frame too long"),
    ("fragmented ping", lambda i: raw(0x09, 0x80, KEY), True, FrameError, "fragmented control frame"),
    ("fragmented close", lambda i: raw(0x08, 0x80, KEY), True, FrameError, "fragmented control frame"),
    ("continuation first", lambda i: frame(i, OP_CONT, "x"), True, FrameError, "unexpected continuation frame"),
    (
        "text inside message",
        lambda i: frame(i, OP_TEXT, "a", fin=False) + frame(i, OP_TEXT, "b"),
        True,
        FrameError,
        "expected continuation frame",
    ),
    (
        "binary inside message",
        lambda i: frame(i, OP_BINARY, "a", fin=False) + frame(i, OP_PING, "") + frame(i, OP_BINARY, "b"),
        True,
        FrameError,
        "expected continuation frame",
    ),
    ("64-bit top bit", lambda i: raw(0x82, 0xFF, b"\x80" + bytes(7) + KEY), True, FrameError, "frame length top bit set"),
    ("close 1 byte", lambda i: raw(0x88, 0x81, KEY + b"\x03"), True, FrameError, "close frame payload of 1 byte"),
    *[
        (f"close code {c}", (lambda c: lambda i: frame(i, OP_CLOSE, struct.pack("!H", c)))(c), True, FrameError, f"invalid close code {c}")
        for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    ],
    ("close reason", lambda i: frame(i, OP_CLOSE, b"\x03\xe8\xff"), True, InvalidUTF8, "invalid UTF-8"),
    ("close reason truncated", lambda i: frame(i, OP_CLOSE, b"\x03\xe8" + "€".encode()[:2]), True, InvalidUTF8, "invalid UTF-8"),
    ("text invalid", lambda i: frame(i, OP_TEXT, b"ab\xffcd"), True, InvalidUTF8, "invalid UTF-8"),
    ("text surrogate", lambda i: frame(i, OP_TEXT, b"\xed\xa0\x80"), True, InvalidUTF8, "invalid UTF-8"),
    ("text overlong", lambda i: frame(i, OP_TEXT, b"\xc0\xaf"), True, InvalidUTF8, "invalid UTF-8"),
    ("text > U+10FFFF", lambda i: frame(i, OP_TEXT, b"\xf4\x90\x80\x80"), True, InvalidUTF8, "invalid UTF-8"),
    ("text truncated", lambda i: frame(i, OP_TEXT, "€".encode()[:2]), True, InvalidUTF8, "invalid UTF-8"),
    (
        "text truncated at end of fragments",
        lambda i: frame(i, OP_TEXT, b"a", fin=False) + frame(i, OP_CONT, "€".encode()[:2]),
        True,
        InvalidUTF8,
        "invalid UTF-8",
    ),
    (
        "text invalid across fragments",
        lambda i: frame(i, OP_TEXT, b"\xe2", fin=False) + frame(i, OP_CONT, b"\x28\xa1"),
        True,
        InvalidUTF8,
        "invalid UTF-8",
    ),
    ("too big", lambda i: frame(i, OP_BINARY, bytes(11)), True, MessageTooBig, "message too big (11 > 10 bytes)"),
    (
        "too big across fragments",
        lambda i: frame(i, OP_TEXT, "12345", fin=False) + frame(i, OP_CONT, "123456"),
        True,
        MessageTooBig,
        "message too big (11 > 10 bytes)",
    ),
]


@pytest.mark.parametrize("wire_of,expect_masked,exc,reason", [v[1:] for v in V], ids=[v[0] for v in V])
@pytest.mark.parametrize("chunk", [None, 1])
def test_violation(impl, wire_of, expect_masked, exc, reason, chunk):
    rec = Recorder(impl, expect_masked=expect_masked, max_size=10)
    wire = wire_of(impl)
    with pytest.raises(exc) as info:
        rec.feed(wire, chunk)
    assert type(info.value) is exc
    assert info.value.code == {FrameError: 1002, InvalidUTF8: 1007, MessageTooBig: 1009}[exc]
    assert info.value.reason == reason == str(info.value)
    assert rec.parser.failed and not rec.parser.closed
    assert rec.parser.buffered == 0
    # RFC 6455 7.1.7: after _Fail the WebSocket Connection_, no further data.
    n = len(rec.events)
    rec.parser.feed(frame(impl, OP_TEXT, "late", masked=expect_masked))
    assert len(rec.events) == n


def test_events_before_error_are_delivered(impl):
    rec = Recorder(impl)
    with pytest.raises(FrameError):
        rec.feed(frame(impl, OP_TEXT, "a") + frame(impl, OP_PING, b"p") + raw(0xC1, 0x80, KEY) + frame(impl, OP_TEXT, "z"))
    assert rec.events == [("message", "a"), ("control", OP_PING, b"p")]


def test_fail_fast_utf8_in_incomplete_frame(impl):
    # The invalid byte is reported on the feed that brings it, long before the
    # 100 KB frame is complete.
    wire = frame(impl, OP_TEXT, b"abc\xff" + b"x" * 100_000)
    rec = Recorder(impl, max_size=None)
    rec.feed(wire[:10])  # header (8) + "ab": still fine
    with pytest.raises(InvalidUTF8):
        rec.feed(wire[10:20])
    assert rec.parser.failed


def test_fail_fast_utf8_in_later_fragment(impl):
    wire = frame(impl, OP_TEXT, b"ok", fin=False) + frame(impl, OP_CONT, b"\xc3\x28" + bytes(1000))
    rec = Recorder(impl)
    cut = len(wire) - 1000
    with pytest.raises(InvalidUTF8):
        rec.feed(wire[:cut])


def test_max_size_exactly(impl):
    rec = Recorder(impl, max_size=10)
    rec.feed(frame(impl, OP_BINARY, bytes(10)))
    rec.feed(frame(impl, OP_TEXT, "12345", fin=False) + frame(impl, OP_PING, b"") + frame(impl, OP_CONT, "67890"))
    assert rec.events == [("message", bytes(10)), ("control", OP_PING, b""), ("message", "1234567890")]
    with pytest.raises(MessageTooBig) as info:
        rec.feed(frame(impl, OP_BINARY, bytes(11)))
    assert info.value.code == 1009


def test_max_size_checked_from_header(impl):
    # The header alone is enough: the 1 MiB + 1 payload never has to arrive.
    rec = Recorder(impl)
    assert rec.parser.max_size == 1048576
    with pytest.raises(MessageTooBig, match=r"1048577 > 1048576"):
        rec.feed(impl.build_header(OP_BINARY, 1048577, mask_key=KEY))


def test_max_size_default_and_exact(impl):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_BINARY, bytes(1048576)), 65536)
    assert len(rec.events[0][1]) == 1048576


def test_max_size_none_and_setter(impl):
    rec = Recorder(impl, max_size=None)
    assert rec.parser.max_size is None
    rec.feed(frame(impl, OP_BINARY, bytes(2_000_000)))
    rec.parser.max_size = 5
    assert rec.parser.max_size == 5
    with pytest.raises(MessageTooBig):
        rec.feed(frame(impl, OP_BINARY, bytes(6)))
    with pytest.raises(ValueError):
        rec.parser.max_size = -1


def test_max_size_zero(impl):
    rec = Recorder(impl, max_size=0)
    rec.feed(frame(impl, OP_TEXT, "") + frame(impl, OP_PING, b"ping is not a message"))
    assert rec.events == [("message", ""), ("control", OP_PING, b"ping is not a message")]


def test_control_125(impl):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_PING, b"x" * 125))
    assert rec.events == [("control", OP_PING, b"x" * 125)]


# -- close, closed, failed, callbacks -------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x03\xe8", b"\x03\xe9bye", b"\x0f\xa0" + "€".encode(), b"\x13\x87" + b"r" * 123])
def test_close_valid(impl, payload):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_CLOSE, payload))
    assert rec.events == [("control", OP_CLOSE, payload)]
    assert rec.parser.closed and not rec.parser.failed


def test_closed_ignores_everything_after(impl):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_TEXT, "a") + frame(impl, OP_CLOSE, b"\x03\xe8") + frame(impl, OP_TEXT, "b") + b"\xff\xff")
    assert rec.events == [("message", "a"), ("control", OP_CLOSE, b"\x03\xe8")]
    assert rec.parser.closed and rec.parser.buffered == 0
    rec.feed(b"\x00garbage")
    rec.feed(frame(impl, OP_TEXT, "c"))
    assert len(rec.events) == 2 and not rec.parser.failed


def test_close_inside_fragmented_message(impl):
    rec = Recorder(impl)
    rec.feed(frame(impl, OP_TEXT, "part", fin=False) + frame(impl, OP_CLOSE, b""))
    assert rec.events == [("control", OP_CLOSE, b"")]
    assert rec.parser.closed and rec.parser.buffered == 0


class Boom(Exception):
    pass


@pytest.mark.parametrize("chunked", [False, True])
def test_callback_raising(impl, chunked):
    events = []

    def on_message(data):
        events.append(data)
        if data in ("boom", b"boom"):
            raise Boom(data)

    def on_control(opcode, payload):
        events.append((opcode, payload))
        if payload == b"boom":
            raise Boom(payload)

    parser = impl.FrameParser(on_message, on_control, expect_masked=True)
    wire = (
        frame(impl, OP_TEXT, "a")
        + frame(impl, OP_TEXT, "boom")
        + frame(impl, OP_PING, b"boom")
        + frame(impl, OP_BINARY, "boom")
        + frame(impl, OP_TEXT, "z")
    )
    if chunked:  # the raising frames are completed inside the buffered path
        parser.feed(wire[:3])
        wire = wire[3:]
    with pytest.raises(Boom):
        parser.feed(wire)
    assert events == ["a", "boom"]
    assert parser.buffered > 0 and not parser.failed
    with pytest.raises(Boom):
        parser.feed(b"")
    assert events[-1] == (OP_PING, b"boom")
    with pytest.raises(Boom):
        parser.feed(b"")
    assert events[-1] == b"boom"
    parser.feed(frame(impl, OP_TEXT, "after"))
    assert events[-2:] == ["z", "after"]
    assert parser.buffered == 0
    assert parser.frames_received == 6


def test_callback_raising_on_close(impl):
    def on_control(opcode, payload):
        raise Boom()

    parser = impl.FrameParser(lambda m: None, on_control, expect_masked=True)
    with pytest.raises(Boom):
        parser.feed(frame(impl, OP_CLOSE, b"") + frame(impl, OP_TEXT, "x"))
    assert parser.closed and parser.buffered == 0
    parser.feed(b"")


def test_reentrant_feed_refused(impl):
    holder = {}

    def on_message(data):
        holder["p"].feed(b"")

    holder["p"] = p = impl.FrameParser(on_message, lambda o, d: None, expect_masked=True)
    with pytest.raises(RuntimeError):
        p.feed(frame(impl, OP_TEXT, "x"))


# -- buffering --------------------------------------------------------------


def test_buffered_and_release(impl):
    rec = Recorder(impl)
    p = rec.parser
    assert p.buffered == 0
    rec.feed(b"\x81")
    assert p.buffered == 1
    rec.feed(b"\x85" + KEY[:2])
    assert p.buffered == 4
    rec.feed(KEY[2:] + b"\x7f\x9f")  # header complete, 2 payload bytes taken
    assert p.buffered == 2
    p.release()
    assert p.buffered == 2
    rec.feed(bytes.fromhex("4d5158"))
    assert rec.events == [("message", "Hello")]
    assert p.buffered == 0
    p.release()
    rec.feed(frame(impl, OP_PING, b"again"))
    assert rec.events[-1] == ("control", OP_PING, b"again")


def test_buffered_partial_control(impl):
    rec = Recorder(impl)
    wire = frame(impl, OP_PING, b"x" * 100)
    rec.feed(wire[:50])
    assert rec.parser.buffered == 50
    rec.feed(wire[50:])
    assert rec.parser.buffered == 0 and rec.parser.frames_received == 1


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_buffer_types(impl, kind):
    rec = Recorder(impl)
    rec.feed(kind(frame(impl, OP_BINARY, b"hi")))
    assert rec.events == [("message", b"hi")]


def test_every_cut_point(impl):
    wire = (
        frame(impl, OP_TEXT, "é" * 70, fin=False)
        + frame(impl, OP_PING, b"ping")
        + frame(impl, OP_CONT, "€" * 50)
        + frame(impl, OP_BINARY, bytes(300))
        + frame(impl, OP_CLOSE, b"\x03\xe8ok")
    )
    expected = Recorder(impl).feed(wire)
    assert len(expected) == 4
    for a in range(len(wire)):
        for b in (a, a + 1, (a + len(wire)) // 2):
            rec = Recorder(impl)
            rec.feed(wire[:a])
            rec.feed(wire[a:b])
            rec.feed(wire[b:])
            assert rec.events == expected, (a, b)


def test_one_byte_payloads_do_not_touch_shared_bytes(impl):
    # Regression: CPython shares the 1-byte bytes objects; unmasking into one
    # of them in place would corrupt every b"x" of the interpreter.
    before = [bytes([i]) for i in range(256)]
    rec = Recorder(impl)
    for i in range(256):
        rec.feed(impl.build_frame(OP_PING, bytes([i]), mask_key=b"\xff\xff\xff\xff"))
        rec.feed(impl.build_frame(OP_BINARY, bytes([i]), mask_key=b"\x5a\x5a\x5a\x5a"))
    assert rec.events == [e for i in range(256) for e in (("control", OP_PING, bytes([i])), ("message", bytes([i])))]
    assert [bytes([i]) for i in range(256)] == before
    assert all(bytes([i])[0] == i for i in range(256))
