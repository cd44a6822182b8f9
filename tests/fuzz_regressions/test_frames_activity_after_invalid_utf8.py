"""Inputs the fuzzers found (bench/fuzz), kept as regression tests.

After invalid UTF-8 in a text frame whose header was split over two feeds
(the extension's top-up path), the extension's ``activity`` counts only the
payload up to byte 256 of the second feed, the twin the whole payload the feed
holds. ``activity`` is the keepalive's liveness counter: once the parser has
failed (the connection is closing) it is unspecified, and the builds need not
agree on it; everything else they report must agree, feed for feed. Found by
bench/fuzz/frames.py. See docs/development.md#fuzzing.
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


CASES = [(split, bad_at) for split in (0, 1, 2, 3) for bad_at in (0, 100, 299)]


@pytest.mark.parametrize("split, bad_at", CASES)
def test_activity_after_invalid_utf8_agrees(both_impls, split, bad_at):
    payload = bytearray(b"a" * 300)
    payload[bad_at] = 0xFF
    frame = b"\x81\x7e\x01\x2c" + bytes(payload)  # one text frame, 300 bytes (16-bit length)
    chunks = [frame[:split], frame[split:]] if split else [frame]
    cython, python = (activity(codec, chunks) for codec in both_impls)
    assert python == (300, 0, True)
    assert cython[1:] == python[1:]  # both failed, no frame counted
    assert 0 <= cython[0] <= 300      # activity: unspecified after the failure, but bounded
