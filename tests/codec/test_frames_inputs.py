"""The codec never mutates the objects it is given.

bytes objects are immutable, and CPython shares some of them across the whole
interpreter (every 1-byte bytes object is a singleton): unmasking one in place
corrupts unrelated code. This was a real bug (feeding a 1-byte chunk that held
a masked payload byte rewrote the b'Q'-style singleton).
"""
from __future__ import annotations

import os

import pytest


def _frames(impl):
    out = []
    for op, payload in ((2, b"Q"), (1, b"hi"), (2, os.urandom(300)), (9, b"p"), (1, "é".encode())):
        out.append(impl.build_frame(op, payload, mask_key=os.urandom(4)))
    return b"".join(out)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100000])
def test_feed_never_mutates_input(impl, chunk):
    stream = _frames(impl)
    chunks = [bytes(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    snapshots = [bytes(bytearray(c)) for c in chunks]
    got = []
    parser = impl.FrameParser(got.append, lambda op, p: got.append((op, p)), expect_masked=True)
    for c in chunks:
        parser.feed(c)
    assert chunks == snapshots
    assert got[0] == b"Q" and got[1] == "hi" and got[3] == (9, b"p") and got[4] == "é"


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_feed_accepts_any_buffer_and_leaves_it(impl, kind):
    frame = impl.build_frame(2, b"payload", mask_key=b"abcd")
    data = {"bytes": bytes(frame), "bytearray": bytearray(frame), "memoryview": memoryview(bytearray(frame))}[kind]
    before = bytes(data)
    got = []
    impl.FrameParser(got.append, lambda *a: None, expect_masked=True).feed(data)
    assert got == [b"payload"] and bytes(data) == before


def test_build_frame_never_mutates_payload(impl):
    for payload in (b"Q", b"abc" * 100, bytearray(b"xyz"), "text"):
        before = payload[:] if not isinstance(payload, str) else payload
        impl.build_frame(2 if not isinstance(payload, str) else 1, payload, mask=True)
        assert payload == before
