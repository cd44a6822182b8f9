"""RFC 6455 5.3 (client-to-server masking), both implementations.

Every test runs against the Cython extension and its pure-Python twin (the
``impl`` fixture), and the answers are checked against a byte-wise reference
written here, straight from the RFC:

    j                   = i MOD 4
    transformed-octet-i = original-octet-i XOR masking-key-octet-j
"""
from __future__ import annotations

import array
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = b"\x37\xfa\x21\x3d"
MAX_LEN = 1024
GUARD = 0xA5  # fills the bytes around the window: they must stay untouched
# ``impl`` is a stateless codec, so sharing it across generated examples is fine.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def reference_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """RFC 6455 5.3, one octet at a time; the piece starts at key byte ``offset``."""
    return bytes(b ^ key[(offset + i) % 4] for i, b in enumerate(data))


PAYLOAD = os.urandom(MAX_LEN)
# Masking is position by position, so the reference for length n is a prefix.
REFERENCE = {offset: reference_mask(PAYLOAD, KEY, offset) for offset in range(4)}


def test_rfc6455_5_3_exhaustive_length_offset_alignment(impl):
    """Lengths 0..1024 x key offsets 0..3 x buffer alignments 0..7, in place.

    The window is a memoryview slice of a larger bytearray, so the word loop
    sees every misalignment and every tail length; the guard bytes on both
    sides catch any write outside the window."""
    mask = impl.mask
    for offset in range(4):
        expected_all = REFERENCE[offset]
        for align in range(8):
            backing = bytearray([GUARD]) * (align + MAX_LEN + 16)
            for n in range(MAX_LEN + 1):
                backing[align : align + n] = PAYLOAD[:n]
                window = memoryview(backing)[align : align + n]
                assert mask(window, KEY, offset) == (offset + n) % 4
                window.release()
                assert backing[align : align + n] == expected_all[:n], (n, offset, align)
                assert backing[:align] == bytes([GUARD]) * align
                assert backing[align + n : align + n + 16] == bytes([GUARD]) * 16


def test_rfc6455_5_3_masked_copy_exhaustive(impl):
    """``masked`` returns a new bytes, leaves its input alone, for every case."""
    masked = impl.masked
    for offset in range(4):
        expected_all = REFERENCE[offset]
        for align in range(8):
            source = bytes(align) + PAYLOAD
            view = memoryview(source)
            for n in range(0, MAX_LEN + 1, 7):
                out = masked(view[align : align + n], KEY, offset)
                assert type(out) is bytes
                assert out == expected_all[:n]
            assert source[align:] == PAYLOAD


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 8, 9, 31, 32, 33, 100])
def test_pieces_with_running_offset_equal_whole(impl, length):
    """A payload unmasked in two pieces at every cut point, passing the
    returned offset on, equals the payload unmasked whole."""
    payload = PAYLOAD[:length]
    whole = bytearray(payload)
    impl.mask(whole, KEY)
    assert bytes(whole) == reference_mask(payload, KEY)
    for cut in range(length + 1):
        buf = bytearray(payload)
        view = memoryview(buf)
        offset = impl.mask(view[:cut], KEY, 0)
        assert offset == cut % 4
        assert impl.mask(view[cut:], KEY, offset) == length % 4
        view.release()
        assert buf == whole, cut
        head = impl.masked(payload[:cut], KEY, 0)
        assert head + impl.masked(payload[cut:], KEY, cut % 4) == whole


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(payload=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8),
       key=st.binary(min_size=4, max_size=4))
def test_pieces_many_cuts(impl, payload, cuts, key):
    buf = bytearray(payload)
    bounds = sorted({0, len(payload), *(c for c in cuts if c <= len(payload))})
    offset = 0
    with memoryview(buf) as view:
        for start, end in zip(bounds, bounds[1:]):
            offset = impl.mask(view[start:end], key, offset)
    assert offset == len(payload) % 4
    assert bytes(buf) == reference_mask(payload, key)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE_OK)
@given(payload=st.binary(max_size=2000), key=st.binary(min_size=4, max_size=4),
       offset=st.integers(0, 3))
def test_mask_twice_is_identity(impl, payload, key, offset):
    buf = bytearray(payload)
    impl.mask(buf, key, offset)
    assert impl.masked(buf, key, offset) == payload
    impl.mask(buf, key, offset)
    assert buf == payload


def test_large_payload_releases_gil_path(impl):
    """1 MiB (the Cython module releases the GIL above 64 KiB) plus a tail."""
    payload = os.urandom((1 << 20) + 5)
    buf = bytearray(payload)
    assert impl.mask(buf, KEY, 2) == ((1 << 20) + 5 + 2) % 4
    expected = impl.masked(payload, KEY, 2)
    assert buf == expected
    # Spot-check against the byte-wise reference.
    for i in (0, 1, 2, 3, 4097, 1 << 19, len(payload) - 1):
        assert buf[i] == payload[i] ^ KEY[(2 + i) % 4]


def test_accepts_buffer_kinds(impl):
    """Writable C-contiguous buffers of any item size are masked byte-wise."""
    arr = array.array("I", [1, 2, 3])
    raw = arr.tobytes()
    assert impl.mask(arr, KEY) == 0
    assert arr.tobytes() == reference_mask(raw, KEY)
    assert impl.masked(bytearray(raw), bytearray(KEY)) == reference_mask(raw, KEY)
    assert impl.masked(memoryview(raw), memoryview(KEY), 1) == reference_mask(raw, KEY, 1)
    assert impl.mask(bytearray(b"ab"), memoryview(KEY), True) == 3  # bool is an int


def test_bytearray_resizable_after_mask(impl):
    """The buffer export is released (a held export would forbid resizing)."""
    buf = bytearray(b"abcdef")
    impl.mask(buf, KEY)
    buf.extend(b"more")
    impl.mask(memoryview(buf)[2:], KEY)
    buf.extend(b"more")
    assert len(buf) == 14


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytes(8)])
def test_key_must_be_four_bytes(impl, key):
    with pytest.raises(ValueError, match="4 bytes"):
        impl.mask(bytearray(8), key)
    with pytest.raises(ValueError, match="4 bytes"):
        impl.masked(b"12345678", key)


@pytest.mark.parametrize("offset", [-1, 4, 100])
def test_offset_must_be_0_to_3(impl, offset):
    with pytest.raises(ValueError, match="offset"):
        impl.mask(bytearray(8), KEY, offset)
    with pytest.raises(ValueError, match="offset"):
        impl.masked(b"12345678", KEY, offset)


@pytest.mark.parametrize(
    "data",
    [b"read-only", memoryview(b"read-only"), memoryview(bytearray(8)).toreadonly()],
    ids=["bytes", "memoryview-of-bytes", "readonly-memoryview"],
)
def test_read_only_buffer_is_a_type_error(impl, data):
    with pytest.raises(TypeError, match="writable"):
        impl.mask(data, KEY)
    # masked() is fine with read-only input
    assert impl.masked(data, KEY) == reference_mask(bytes(data), KEY)


def test_non_contiguous_buffer_is_a_type_error(impl):
    strided = memoryview(bytearray(16))[::2]
    with pytest.raises(TypeError, match="contiguous"):
        impl.mask(strided, KEY)
    with pytest.raises(TypeError, match="contiguous"):
        impl.masked(strided, KEY)


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2, 3]])
def test_not_a_buffer_is_a_type_error(impl, data):
    with pytest.raises(TypeError):
        impl.mask(data, KEY)
    with pytest.raises(TypeError):
        impl.masked(data, KEY)


@pytest.mark.parametrize("key", ["abcd", 1234, None])
def test_key_not_a_buffer_is_a_type_error(impl, key):
    with pytest.raises(TypeError):
        impl.mask(bytearray(8), key)
    with pytest.raises(TypeError):
        impl.masked(b"12345678", key)


def test_offset_not_an_int_is_a_type_error(impl):
    with pytest.raises(TypeError):
        impl.mask(bytearray(8), KEY, 1.0)
    with pytest.raises(TypeError):
        impl.masked(b"12345678", KEY, "1")
