"""Inputs the fuzzers found (bench/fuzz), kept as regression tests.

After invalid UTF-8 in a text frame whose header was split over two feeds
(the extension's top-up path), the extension's ``activity`` counts only the
payload up to byte 256 of the second feed, the twin the whole payload the feed
holds (as both do when the header is not split). Only the keepalive counter
of a connection that is failing anyway; but the two must agree, feed for
feed (docs/design/codec.md#two-implementations-one-behaviour). Found by
bench/fuzz/frames.py. Expected to fail until fastws_ext/frames.pyx is fixed.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import pytest

from fastws.exceptions import InvalidUTF8


def activity(codec, chunks):
    parser = codec.FrameParser(lambda m: None, lambda o, p: None, expect_masked=False, max_size=None)
    for chunk in chunks:
        try:
            parser.feed(chunk)
        except InvalidUTF8:
            pass
    return parser.activity, parser.frames_received, parser.failed


KNOWN = pytest.mark.xfail(strict=True, reason="fastws_ext/frames.pyx counts activity up to byte 256 of the "
                          "top-up feed (remove this mark with the fix)")
CASES = [
    pytest.param(split, bad_at, marks=KNOWN) if split and bad_at < 256 - 4 + split else (split, bad_at)
    for split in (0, 1, 2, 3)
    for bad_at in (0, 100, 299)
]


@pytest.mark.parametrize("split, bad_at", CASES)
def test_activity_after_invalid_utf8_agrees(both_impls, split, bad_at):
    payload = bytearray(b"a" * 300)
    payload[bad_at] = 0xFF
    frame = b"\x81\x7e\x01\x2c" + bytes(payload)  # one text frame, 300 bytes (16-bit length)
    chunks = [frame[:split], frame[split:]] if split else [frame]
    cython, python = (activity(codec, chunks) for codec in both_impls)
    assert python == (300, 0, True)
    assert cython == python
