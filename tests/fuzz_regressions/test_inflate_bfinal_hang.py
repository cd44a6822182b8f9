"""Inputs the fuzzers found (bench/fuzz), kept as regression tests.

permessage-deflate inflate looped forever on a compressed message that ends
its deflate stream (BFINAL) with bytes behind it, when it inflates to at
least one step (64 KiB with the default max_size) : zlib leaves the bytes
after the end in ``unconsumed_tail`` and returns nothing more, and the step
loop waited for that tail to empty. One such message (the 4-byte tail that
inflate appends is enough) held the event loop for good. Found by
bench/fuzz/frames.py (a timeout, through both parsers).
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import pytest

from fastws import deflate
from fastws.exceptions import MessageTooBig
from fastws.options import Options

# 70000 zero bytes, deflated with BFINAL (Z_FINISH), then 4 more bytes.
BFINAL_70000 = bytes.fromhex(
    "edc13101000000c2a0f54f6d094fa000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000080b70100000000"
)


def inflater(max_size=2**20):
    params = deflate.DeflateParams(Options(compression="deflate", max_size=max_size), 15, 15, False, False)
    return deflate.PerMessageDeflate(params).inflate


@pytest.mark.timeout(20)
def test_bfinal_message_over_one_step_inflates():
    inflate = inflater()
    assert inflate(BFINAL_70000) == b"\x00" * 70000
    assert inflate(BFINAL_70000[:-4]) == b"\x00" * 70000  # a fresh inflater after the stream's end


@pytest.mark.timeout(20)
def test_bfinal_message_over_max_size_is_1009():
    with pytest.raises(MessageTooBig):
        inflater(65536)(BFINAL_70000)


@pytest.mark.timeout(20)
def test_parsers_deliver_it(both_impls):
    frame = bytes([0xC2, 0x80 | len(BFINAL_70000)]) + b"\x00\x00\x00\x00" + BFINAL_70000
    for codec in both_impls:
        got = []
        parser = codec.FrameParser(got.append, lambda *a: None, expect_masked=True, inflate=inflater())
        parser.feed(frame)
        assert got == [b"\x00" * 70000] and parser.at_rest
