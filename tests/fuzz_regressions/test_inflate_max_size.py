"""Inputs the fuzzers found (bench/fuzz), kept as regression tests.

permessage-deflate inflate did not enforce ``max_size`` on a message whose
inflated size is over max_size but under one inflate step (max_size/16, at
least 64 KiB): the one-call fast path only checked the limit when it went on
to the loop. So with ``max_size`` under 64 KiB (``fastws push`` takes 4 KiB
from its subscribers) a compressed message of up to 64 KiB got through. Found
by bench/fuzz/inflate.py (and frames.py: the parser delivered it).
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import zlib

import pytest

from fastws import deflate
from fastws.exceptions import MessageTooBig
from fastws.options import Options

# bench/fuzz/inflate.py's minimized input: 5 bytes that inflate to 17.
FUZZED = b"\x0a\x0a\x9b\x8a\x0a"


def inflater(max_size):
    params = deflate.DeflateParams(Options(compression="deflate", max_size=max_size), 15, 12, False, False)
    return deflate.PerMessageDeflate(params).inflate


def compress(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_fuzzed_input_over_max_size_is_1009():
    assert len(inflater(None)(FUZZED)) == 17
    with pytest.raises(MessageTooBig) as info:
        inflater(10)(FUZZED)
    assert info.value.code == 1009
    assert len(inflater(17)(FUZZED)) == 17  # exactly max_size is fine


@pytest.mark.parametrize("max_size", [1, 100, 4096, 65534])
def test_one_byte_over_max_size_is_1009(max_size):
    with pytest.raises(MessageTooBig):
        inflater(max_size)(compress(b"x" * (max_size + 1)))
    assert inflater(max_size)(compress(b"x" * max_size)) == b"x" * max_size


def test_parser_never_delivers_a_compressed_message_over_max_size(both_impls):
    payload = compress(b"y" * 300)
    frame = bytes([0xC2, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload
    for codec in both_impls:
        got = []
        parser = codec.FrameParser(got.append, lambda *a: None, expect_masked=True, max_size=200,
                                   inflate=inflater(200))
        with pytest.raises(MessageTooBig):
            parser.feed(frame)
        assert got == [] and parser.failed
