"""The asyncio.BufferedProtocol read path: FrameParser.get_buffer / buffer_updated.

Contract (fastws_ext/frames.pyi): ``buffer_updated(n)`` behaves exactly as
``feed(bytes(view[:n]))`` where ``view`` is what the last ``get_buffer``
returned.  The differential test drives both implementations through a random
mix of feed() and get_buffer()/buffer_updated() calls (random read sizes,
abandoned get_buffer() calls as after EAGAIN) and compares every event and
every state with feed() alone over the same pieces.  The unit tests pin the
memory rules: no connection holds the scratch buffer after buffer_updated(),
and a large payload is read straight into the message.
"""
from __future__ import annotations

import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_frames_differential import EXAMPLES, Boom, encode_frame, make_inflate, streams

from fastws._py.frames import build_frame
from fastws.exceptions import InvalidUTF8, MessageTooBig, ProtocolError

KEY = b"\x37\xfa\x21\x3d"
SCRATCH = 256 * 1024
DIRECT_MIN = 64 * 1024  # the Cython parser's threshold for direct reads


def make_parser(impl, events, raise_at=(), **kwargs):
    def record(event):
        events.append(event)
        if len(events) - 1 in raise_at:
            raise Boom()

    kwargs.setdefault("expect_masked", True)
    return impl.FrameParser(
        lambda data: record(("message", type(data).__name__, data)),
        lambda opcode, payload: record(("control", opcode, payload)),
        **kwargs,
    )


def read_into(parser, data):
    """What an event loop does: one get_buffer(), one read, buffer_updated().
    Returns how many bytes of data the view took."""
    view = parser.get_buffer(-1)
    n = min(len(view), len(data))
    view[:n] = data[:n]
    parser.buffer_updated(n)
    return n


def _call(parser, events, index, action):
    try:
        action()
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


def run_mixed(codec, expect_masked, max_size, chunks, raise_at, rng, compressing=False):
    """Deliver the chunks through a random mix of feed() and buffered reads.
    Returns (history, pieces): the pieces are the calls as made, for a feed()
    only replay."""
    events, pieces = [], []
    parser = make_parser(codec, events, raise_at, expect_masked=expect_masked, max_size=max_size,
                         inflate=make_inflate(compressing, max_size))

    def step(piece, how):
        index = len(pieces)
        pieces.append(piece)
        if how == "feed":
            _call(parser, events, index, lambda: parser.feed(piece))
        else:
            view = how

            def action():
                view[: len(piece)] = piece
                parser.buffer_updated(len(piece))

            _call(parser, events, index, action)

    for chunk in [*chunks, b"", b""]:
        rest = memoryview(chunk)
        while True:
            want = len(rest) if rng.random() < 0.3 else rng.randint(0, len(rest))
            roll = rng.random()
            if roll < 0.3:
                step(bytes(rest[:want]), "feed")
            else:
                if roll < 0.4:
                    parser.get_buffer(rng.choice([-1, 1, 65536]))  # abandoned, as after EAGAIN
                view = parser.get_buffer(rng.choice([-1, 1, 65536]))
                if roll > 0.95 and len(rest):
                    # get_buffer() and then feed() after all: the lend is void.
                    step(bytes(rest[:want]), "feed")
                else:
                    want = min(want, len(view))
                    step(bytes(rest[:want]), view)
            rest = rest[want:]
            if not rest:
                break
    return events, pieces


def run_feed(codec, expect_masked, max_size, pieces, raise_at, compressing=False):
    events = []
    parser = make_parser(codec, events, raise_at, expect_masked=expect_masked, max_size=max_size,
                         inflate=make_inflate(compressing, max_size))
    for index, piece in enumerate(pieces):
        _call(parser, events, index, lambda: parser.feed(piece))
    return events


def check_mixed(both_impls, stream, seed):
    expect_masked, max_size, chunks, raise_at, *compressing = stream
    compressing = bool(compressing and compressing[0])
    for codec in both_impls:
        got, pieces = run_mixed(codec, expect_masked, max_size, chunks, raise_at, random.Random(seed), compressing)
        for reference in both_impls:
            assert got == run_feed(reference, expect_masked, max_size, pieces, raise_at, compressing), \
                (codec.name, reference.name)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(streams(), st.integers(0, 2**32))
def test_buffered_reads_agree_with_feed(both_impls, stream, seed):
    check_mixed(both_impls, stream, seed)


@st.composite
def large_streams(draw):
    """Messages that take the direct path: 64 KiB-1 MiB, text or binary,
    single-frame or fragmented, masked or not, some invalid UTF-8 deep inside."""
    expect_masked = draw(st.booleans())
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        opcode = draw(st.sampled_from([0x1, 0x2]))
        size = draw(st.sampled_from([DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 1, 200_000, 300_000, 1 << 20]))
        if opcode == 0x1:
            unit = "a€😀é".encode()
            data = (unit * (size // len(unit) + 1))[:size]
            if draw(st.integers(0, 4)) == 0:
                at = draw(st.integers(0, size - 1))
                data = data[:at] + b"\xff" + data[at + 1 :]
        else:
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        cuts = sorted(draw(st.lists(st.integers(0, size), max_size=2)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, size])]
        key = draw(st.binary(min_size=4, max_size=4))
        for i, piece in enumerate(pieces):
            fin = i == len(pieces) - 1
            parts.append(encode_frame((0x80 if fin else 0) | (opcode if i == 0 else 0), piece, expect_masked, key))
            if not fin and draw(st.booleans()):
                parts.append(encode_frame(0x89, b"ping", expect_masked, key))
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    max_size = draw(st.sampled_from([None, 1 << 20, 1 << 21, 250_000]))
    raise_at = draw(st.sets(st.integers(0, 6), max_size=1))
    return expect_masked, max_size, chunks, raise_at


@settings(max_examples=max(20, EXAMPLES // 8), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(large_streams(), st.integers(0, 2**32))
def test_buffered_large_messages_agree_with_feed(both_impls, stream, seed):
    check_mixed(both_impls, stream, seed)


# -- the scratch buffer -----------------------------------------------------


def test_scratch_not_held_after_a_raising_callback(impl):
    """A callback raises in buffer_updated(): the rest of the read is copied
    into the parser's own buffer, so another parser reading into the scratch
    afterwards changes nothing for the first."""
    wire = (
        impl.build_frame(1, "first", mask_key=KEY)
        + impl.build_frame(2, b"second" * 50, mask_key=KEY)
        + impl.build_frame(9, b"p", mask_key=KEY)
        + impl.build_frame(1, "fourth is split", mask_key=KEY)
    )
    events = []
    a = make_parser(impl, events, raise_at={0})
    head = wire[:-5]
    with pytest.raises(Boom):
        read_into(a, head)
    assert a.buffered == len(head) - len(impl.build_frame(1, "first", mask_key=KEY))
    # Another parser overwrites the whole scratch buffer.
    other = []
    b = make_parser(impl, other)
    view = b.get_buffer(-1)
    view[:] = b"\xff" * len(view)
    with pytest.raises(ProtocolError):
        b.buffer_updated(len(view))
    assert b.failed
    assert read_into(a, wire[-5:]) == 5
    assert [e[2] for e in events] == ["first", b"second" * 50, b"p", "fourth is split"]
    assert a.buffered == 0 and not a.failed


def test_incomplete_header_kept_by_the_parser(impl):
    events = []
    a = make_parser(impl, events)
    wire = impl.build_frame(2, b"x" * 300, mask_key=KEY)
    read_into(a, wire[:3])  # 2 of the 4 header bytes, then part of the key
    assert a.buffered == 3
    b = make_parser(impl, [])
    view = b.get_buffer(-1)
    view[:3] = b"\x00\x00\x00"
    with pytest.raises(ProtocolError):
        b.buffer_updated(3)  # unmasked frame
    read_into(a, wire[3:])
    assert events == [("message", "bytes", b"x" * 300)]


def test_get_buffer_in_a_callback_is_refused(impl):
    """Re-entry on the same parser, or another parser of the same thread
    taking the scratch buffer while it is parsed: RuntimeError, nothing
    corrupted."""
    other = impl.FrameParser(lambda m: None, lambda o, p: None, expect_masked=True)
    holder = {}
    seen = []

    def on_message(data):
        seen.append(data)
        for call in (lambda: holder["p"].get_buffer(-1), lambda: holder["p"].buffer_updated(1),
                     lambda: holder["p"].feed(b""), lambda: other.get_buffer(-1)):
            with pytest.raises(RuntimeError):
                call()

    p = holder["p"] = impl.FrameParser(on_message, lambda o, d: None, expect_masked=True)
    read_into(p, impl.build_frame(1, "a", mask_key=KEY) + impl.build_frame(1, "b", mask_key=KEY))
    assert seen == ["a", "b"]
    assert read_into(other, impl.build_frame(1, "c", mask_key=KEY))  # usable again


def test_scratch_lent_again_is_detected(impl):
    a = impl.FrameParser(lambda m: None, lambda o, p: None, expect_masked=True)
    b = impl.FrameParser(lambda m: None, lambda o, p: None, expect_masked=True)
    a.get_buffer(-1)
    b.get_buffer(-1)  # the loop would never do this: b's read overwrote a's
    with pytest.raises(RuntimeError):
        a.buffer_updated(1)
    with pytest.raises(RuntimeError):
        a.buffer_updated(1)  # no get_buffer() before it
    b.buffer_updated(0)


def test_buffer_updated_checks_its_argument(impl):
    p = impl.FrameParser(lambda m: None, lambda o, p: None, expect_masked=True)
    view = p.get_buffer(-1)
    with pytest.raises(ValueError):
        p.buffer_updated(len(view) + 1)
    view = p.get_buffer(-1)
    with pytest.raises(ValueError):
        p.buffer_updated(-1)


def test_scratch_is_per_thread(impl):
    """A loop in another thread gets its own scratch buffer."""
    events = []
    a = make_parser(impl, events)
    wire = impl.build_frame(2, b"m" * 1000, mask_key=KEY)
    view = a.get_buffer(-1)
    view[:600] = wire[:600]
    done = []

    def other():
        b = make_parser(impl, done)
        read_into(b, impl.build_frame(1, "from the thread", mask_key=KEY))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    a.buffer_updated(600)
    read_into(a, wire[600:])
    assert done == [("message", "str", "from the thread")]
    assert events == [("message", "bytes", b"m" * 1000)]


def test_idle_parser_holds_nothing(impl):
    events = []
    p = make_parser(impl, events)
    for size in (10, 1000, 100_000):
        read_into_all(p, impl.build_frame(2, b"z" * size, mask_key=KEY))
        assert p.buffered == 0
        p.release()
    assert [len(e[2]) for e in events] == [10, 1000, 100_000]


def read_into_all(parser, data, limit=None):
    data = memoryview(data)
    while data:
        view = parser.get_buffer(-1)
        n = min(len(view), len(data), limit or len(data))
        view[:n] = data[:n]
        parser.buffer_updated(n)
        data = data[n:]


# -- large payloads, straight into the message ---------------------------------


def _lent_sizes(impl, opcode, size, read, *, max_size=1 << 25, fragments=1, masked=True):
    """Read a message in reads of at most ``read`` bytes; returns (views'
    lengths, remaining payload at each get_buffer, the message)."""
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    if opcode == 1:
        payload = (b"abc\xc3\xa9" * (size // 5 + 1))[:size]
        while True:
            try:
                payload.decode()
                break
            except UnicodeDecodeError:
                payload = payload[:-1]
    step = -(-len(payload) // fragments)
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    wire = b"".join(
        impl.build_frame(opcode if i == 0 else 0, piece, fin=i == len(pieces) - 1,
                         mask_key=KEY if masked else None)
        for i, piece in enumerate(pieces)
    )
    events = []
    p = make_parser(impl, events, max_size=max_size, expect_masked=masked)
    lens = []
    data = memoryview(wire)
    while data:
        view = p.get_buffer(65536)
        lens.append(len(view))
        n = min(len(view), len(data), read)
        view[:n] = data[:n]
        p.buffer_updated(n)
        data = data[n:]
    assert p.buffered == 0
    assert events == [("message", "str" if opcode == 1 else "bytes", payload.decode() if opcode == 1 else payload)]
    return lens


@pytest.mark.parametrize("opcode", [1, 2])
@pytest.mark.parametrize("masked", [True, False])
def test_large_payload_read_directly(impl, opcode, masked):
    size = 1 << 20
    lens = _lent_sizes(impl, opcode, size, 256 * 1024, masked=masked)
    if impl.name == "python":
        assert set(lens) == {SCRATCH}  # the twin always copies from the scratch
        return
    header = 14 if masked else 10
    first = SCRATCH - header  # the first read takes the header and this much
    # Then views into the message itself, capped at the remaining payload of
    # the frame, and at what a destination grown geometrically as the payload
    # arrives can offer (FrameParser.reserved: never from the header alone):
    # at most max(64 KiB, received + 32 KiB), until less than DIRECT_MIN is
    # to come (the scratch again).
    assert lens[0] == SCRATCH
    received = first
    for n in lens[1:]:
        remaining = size - received
        if remaining < DIRECT_MIN:
            assert n == SCRATCH
        else:
            assert 0 < n <= remaining and n <= max(64 * 1024, received + 32 * 1024), (n, received)
        received += min(n, 256 * 1024, remaining)


def test_wants_direct_tracks_the_direct_lend(impl):
    """wants_direct() is True exactly when get_buffer() would lend the
    message itself (the adapter switches to get_buffer reads then)."""
    events = []
    parser = make_parser(impl, events, max_size=None)
    payload = os.urandom(DIRECT_MIN + 10)
    frame = build_frame(2, payload, mask_key=KEY)
    assert parser.wants_direct() is False  # between frames
    parser.feed(frame[:14 + 9])  # header and 9 bytes: DIRECT_MIN + 1 to come
    direct = impl.name == "cython"
    assert parser.wants_direct() is direct
    view = parser.get_buffer(-1)
    # The message itself (its first 64 KiB: reserved as the payload comes),
    # not the scratch.
    assert (len(view) != SCRATCH) is direct
    assert len(view) <= DIRECT_MIN + 1 or not direct
    parser.buffer_updated(0)
    parser.feed(frame[23:25])  # now less than DIRECT_MIN to come
    assert parser.wants_direct() is False
    parser.feed(frame[25:])
    assert parser.wants_direct() is False and events == [("message", "bytes", payload)]
    # A header cut in two is buffered bytes: never direct.
    parser.feed(frame[:3])
    assert parser.wants_direct() is False


@pytest.mark.parametrize("pieces, rest", [
    ([], True),                                   # nothing yet
    ([build_frame(1, b"hi", mask_key=KEY)], True),           # a whole message
    ([build_frame(2, b"x" * 300, mask_key=KEY)[:2]], False),  # a cut header
    ([build_frame(2, b"x" * 300, mask_key=KEY)[:8]], False),  # a header alone, no payload byte
    ([build_frame(2, b"x" * 300, mask_key=KEY)[:50]], False),  # inside the payload
    ([build_frame(1, b"", fin=False, mask_key=KEY)], False),   # an empty first fragment
    ([build_frame(1, b"a", fin=False, mask_key=KEY),
      build_frame(0, b"b", mask_key=KEY)], True),              # a fragmented message, done
    ([build_frame(1, b"a", fin=False, mask_key=KEY),
      build_frame(9, b"p", mask_key=KEY)], False),             # a ping inside a message
])
def test_at_rest(impl, pieces, rest):
    """at_rest: a new parser in this one's place would read the rest of the
    stream the same (the keepalive drops only such a parser)."""
    parser = make_parser(impl, [])
    for piece in pieces:
        parser.feed(piece)
    assert parser.at_rest is rest


def test_direct_view_capped_at_frame_end(impl):
    """The view never covers the next frame's header."""
    if impl.name == "python":
        pytest.skip("the twin always reads into the scratch buffer")
    size = 300_000
    wire = impl.build_frame(2, b"q" * size, mask_key=KEY) + impl.build_frame(9, b"after", mask_key=KEY)
    events = []
    p = make_parser(impl, events)
    view = p.get_buffer(-1)
    view[:1000] = wire[:1000]
    p.buffer_updated(1000)
    # Views into the message (which grows as the payload comes), each
    # ending at the latest at the end of the frame.
    at = 1000
    while 14 + size - at >= DIRECT_MIN:
        view = p.get_buffer(-1)
        assert DIRECT_MIN // 4 <= len(view) <= 14 + size - at
        n = len(view)
        view[:] = wire[at : at + n]
        p.buffer_updated(n)
        at += n
    while at < 14 + size:  # the scratch, up to the frame's end
        at += read_into(p, wire[at : 14 + size])
    assert events == [("message", "bytes", b"q" * size)]
    assert len(p.get_buffer(-1)) == SCRATCH
    # Below the threshold: the scratch buffer again.
    p.buffer_updated(0)
    read_into(p, wire[14 + size :])
    assert events[-1] == ("control", 9, b"after")
    small = impl.build_frame(2, b"s" * (DIRECT_MIN + 10), mask_key=KEY)
    read_into(p, small[:20])  # 6 payload bytes: DIRECT_MIN + 4 to come
    assert DIRECT_MIN // 2 < len(p.get_buffer(-1)) <= DIRECT_MIN + 4
    p.buffer_updated(0)
    read_into(p, small[20:30])  # DIRECT_MIN - 6 to come: below the threshold
    assert len(p.get_buffer(-1)) == SCRATCH


def test_stale_direct_view_is_released(impl):
    """A view lent for a direct read cannot write into the message once it is
    handed out (defence in depth: the loop never writes after buffer_updated)."""
    if impl.name == "python":
        pytest.skip("the twin lends no direct views")
    size = 200_000
    wire = impl.build_frame(2, b"r" * size, mask_key=KEY)
    events = []
    p = make_parser(impl, events)
    read_into(p, wire[:100])
    at = 100
    while not events:
        view = p.get_buffer(-1)
        assert len(view) <= len(wire) - at
        n = len(view)
        view[:] = wire[at : at + n]
        p.buffer_updated(n)
        at += n
    with pytest.raises(ValueError):
        view[0] = 0
    assert events == [("message", "bytes", b"r" * size)]


def test_direct_lend_then_feed(impl):
    """get_buffer() lends (and allocates) the destination, then feed() brings
    the bytes instead: the lend is void and the message is the same."""
    size = 100_000
    wire = impl.build_frame(2, b"f" * size, mask_key=KEY) + impl.build_frame(2, b"g" * (size * 2), mask_key=KEY)
    events = []
    p = make_parser(impl, events)
    p.feed(wire[:14])
    p.get_buffer(-1)
    p.feed(wire[14:])
    with pytest.raises(RuntimeError):
        p.buffer_updated(1)
    assert [e[2] for e in events] == [b"f" * size, b"g" * (size * 2)]


def test_text_fails_fast_in_a_direct_read(impl):
    """RFC 6455 8.1: invalid UTF-8 fails on the read that brings it, even deep
    inside a large frame read straight into the message."""
    size = 1 << 20
    payload = bytearray(b"a" * size)
    payload[300_000] = 0xFF
    wire = impl.build_frame(1, bytes(payload), mask_key=KEY)
    p = make_parser(impl, [])
    read_into(p, wire[:1000])
    read_into(p, wire[1000:200_000])
    assert not p.failed
    with pytest.raises(InvalidUTF8):
        read_into_all(p, wire[200_000:400_000])
    assert p.failed and p.buffered == 0


def test_text_truncated_code_point_at_the_end(impl):
    """The last frame of a text message ends inside a code point: 1007, and
    the frame is not counted, whichever path it took."""
    payload = b"x" * (DIRECT_MIN * 2) + "€".encode()[:2]
    wire = impl.build_frame(1, payload, mask_key=KEY)
    for feed in ("feed", "buffered"):
        p = make_parser(impl, [])
        with pytest.raises(InvalidUTF8):
            if feed == "feed":
                p.feed(wire)
            else:
                read_into(p, wire[:100])
                read_into_all(p, wire[100:])
        assert p.failed and p.frames_received == 0
    p = make_parser(impl, [])
    with pytest.raises(InvalidUTF8):
        p.feed(impl.build_frame(1, b"a\xe2\x82", mask_key=KEY))
    assert p.frames_received == 0


@pytest.mark.parametrize("opcode", [1, 2])
@pytest.mark.parametrize("fragments", [1, 5])
def test_16_mib_message_in_256_kib_reads(impl, opcode, fragments):
    size = 16 << 20
    payload = os.urandom(size) if opcode == 2 else b"\xe2\x82\xac" * (size // 3)
    step = -(-len(payload) // fragments)
    wire = b"".join(
        impl.build_frame(opcode if i == 0 else 0, payload[i : i + step], fin=i + step >= len(payload), mask_key=KEY)
        for i in range(0, len(payload), step)
    )
    events = []
    p = make_parser(impl, events, max_size=None)
    read_into_all(p, wire, 256 * 1024)
    assert len(events) == 1
    got = events[0][2]
    assert got == (payload.decode() if opcode == 1 else payload)
    assert p.buffered == 0


def test_one_byte_reads_everywhere(impl):
    wire = b"".join(
        [
            impl.build_frame(1, "é€😀" * 10, fin=False, mask_key=KEY),
            impl.build_frame(9, b"ping", mask_key=KEY),
            impl.build_frame(0, "x" * 200, mask_key=KEY),
            impl.build_frame(2, bytes(range(256)) * 300, mask_key=KEY),
            impl.build_frame(2, b"Q", mask_key=KEY),
            impl.build_frame(8, b"\x03\xe8bye", mask_key=KEY),
        ]
    )
    events = []
    p = make_parser(impl, events)
    read_into_all(p, wire, 1)
    assert [e[2] if e[0] == "message" else e[1:] for e in events] == [
        (9, b"ping"), "é€😀" * 10 + "x" * 200, bytes(range(256)) * 300, b"Q", (8, b"\x03\xe8bye")]
    assert p.closed and p.buffered == 0
    assert bytes([0x51]) == b"Q" and b"Q"[0] == 0x51  # the shared 1-byte object is intact


@pytest.mark.parametrize("max_size", [0, 1000, 100_000, 1 << 20])
def test_max_size_on_the_buffered_path(impl, max_size):
    """RFC 6455 10.4 / 1009: checked from the header, before any buffer for
    the payload is lent or allocated."""
    for size, fragments in ((1 << 20, 1), (1 << 20, 4), (1000, 1), (100_001, 1)):
        step = -(-size // fragments)
        wire = b"".join(
            impl.build_frame(2 if i == 0 else 0, b"m" * min(step, size - i), fin=i + step >= size, mask_key=KEY)
            for i in range(0, size, step)
        )
        events = []
        p = make_parser(impl, events, max_size=max_size)
        if size > max_size:
            with pytest.raises(MessageTooBig):
                read_into_all(p, wire, 256 * 1024)
            assert p.failed and p.buffered == 0
            # Whatever the loop still reads is ignored.
            view = p.get_buffer(-1)
            assert len(view) == SCRATCH
            p.buffer_updated(10)
        else:
            read_into_all(p, wire, 256 * 1024)
            assert events == [("message", "bytes", b"m" * size)]


# -- through a real event loop ---------------------------------------------------


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_through_a_real_buffered_protocol(impl, loop_kind):
    """The parser's methods as an asyncio.BufferedProtocol's, over a socket
    pair, on stock asyncio and on uvloop (which holds the view's buffer
    until buffer_updated() returns)."""
    import asyncio
    import socket

    import uvloop

    messages = [os.urandom(1 << 20), "small", os.urandom(10), "é" * 300_000, os.urandom(3 << 20), b""]
    wire = b"".join(impl.build_frame(1 if isinstance(m, str) else 2, m, mask=True) for m in messages)
    wire += impl.build_frame(8, b"\x03\xe8", mask=True)

    class Reader(asyncio.BufferedProtocol):
        def __init__(self, done):
            self.events = []
            self.done = done
            self.parser = impl.FrameParser(self.events.append, self.on_control, expect_masked=True, max_size=None)
            self.get_buffer = self.parser.get_buffer
            self.buffer_updated = self.parser.buffer_updated

        def on_control(self, opcode, payload):
            self.done.set_result(self.events)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        b.setblocking(False)
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Reader(done), sock=a)
        try:
            await loop.sock_sendall(b, wire)
            return await asyncio.wait_for(done, 30)
        finally:
            transport.close()
            b.close()

    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        got = loop.run_until_complete(main())
    finally:
        loop.close()
    assert got == messages
