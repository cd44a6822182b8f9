"""frames.lone_control: an idle connection's lone PING/PONG, without a parser.

It may only ever accept what a real parser accepts, as exactly one control
frame with the same opcode and payload; everything else must be left (None)
to the parser. Both implementations, and a hypothesis test against the
parser over random short byte strings and random valid control frames.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastws.exceptions import ProtocolError

PING, PONG = 0x9, 0xA


def _parse(impl, data, expect_masked):
    """What a fresh parser makes of data: ("ok", [(op, payload)...], messages) or ("error", code)."""
    controls, messages = [], []
    parser = impl.FrameParser(messages.append, lambda op, p: controls.append((op, bytes(p))),
                              expect_masked=expect_masked)
    try:
        parser.feed(data)
    except ProtocolError as exc:
        return ("error", exc.code)
    return ("ok", controls, messages, parser.buffered)


def _check(impl, data, expect_masked):
    got = impl.lone_control(data, expect_masked)
    if got is not None:
        opcode, payload = got
        assert opcode in (PING, PONG)
        assert _parse(impl, data, expect_masked) == ("ok", [(opcode, payload)], [], 0)
    return got


@pytest.mark.parametrize("opcode", [PING, PONG])
@pytest.mark.parametrize("length", [0, 1, 4, 125])
def test_valid_lone_frames(impl, opcode, length):
    payload = os.urandom(length)
    assert _check(impl, impl.build_frame(opcode, payload, mask=True), True) == (opcode, payload)
    assert _check(impl, impl.build_frame(opcode, payload), False) == (opcode, payload)


@pytest.mark.parametrize("data,masked", [
    (b"", True), (b"\x8a", True),
    (b"\x8a\x00", True),                    # unmasked from a client: the parser's 1002
    (b"\x8a\x80\x00\x00\x00", True),        # key cut short
    (b"\x0a\x80abcd", True),                # FIN clear: fragmented control (1002)
    (b"\xca\x80abcd", True),                # RSV1
    (b"\x88\x80abcd", True),                # close: the parser's business
    (b"\x81\x80abcd", True),                # text
    (b"\x8a\xfe\x00\x7eabcd", True),        # 16-bit length form
    (b"\x8a\x81abcdX" + b"\x8a\x80abcd", True),  # two frames
    (b"\x8a\x82abcdX", True),               # payload cut short
])
def test_everything_else_goes_to_the_parser(impl, data, masked):
    assert _check(impl, data, masked) is None


def test_not_bytes(impl):
    frame = impl.build_frame(PONG, b"", mask=True)
    assert impl.lone_control(bytearray(frame), True) is None
    assert impl.lone_control(memoryview(frame), True) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=140), masked=st.booleans())
def test_random_bytes_agree_with_the_parser(impl, data, masked):
    _check(impl, data, masked)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b0=st.integers(0, 255), length=st.integers(0, 127), masked=st.booleans(),
       mask_bit=st.booleans(), extra=st.binary(max_size=3), data=st.data())
def test_header_variants_agree_with_the_parser(both_impls, b0, length, masked, mask_bit, extra, data):
    payload = data.draw(st.binary(min_size=min(length, 125), max_size=min(length, 125)))
    frame = bytes([b0, (0x80 if mask_bit else 0) | length]) + (b"k3y!" if mask_bit else b"") + payload + extra
    c, p = both_impls
    assert _check(c, frame, masked) == _check(p, frame, masked)
