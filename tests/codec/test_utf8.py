"""RFC 3629 UTF-8 validation, as RFC 6455 8.1 requires of text messages.

Both implementations (the ``impl`` fixture) are checked against:

* the classic boundary cases, with the exact byte at which each invalid one
  must fail;
* CPython's strict decoder (``bytes.decode('utf-8')``) on generated streams;
* a fail-fast reference: the first byte after which no valid continuation
  exists. It is computed from CPython's incremental decoder plus a search for a
  completion of the bytes it holds back, because the incremental decoder alone
  is late on surrogates: it holds ``ED A0`` back as incomplete, although only
  a surrogate (U+D800-DFFF, invalid per RFC 3629 3) can follow.

and against each other (a differential test over random chunkings).
"""
from __future__ import annotations

import array
import codecs
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# ``impl`` is a stateless codec, so sharing it across generated examples is fine.
HYPO = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- References ---------------------------------------------------------------

# One byte from each range a UTF8-tail may be restricted to (RFC 3629 4).
_TAIL_CLASSES = (0x80, 0x90, 0xA0, 0xBF)
_COMPLETIONS = [bytes(c) for n in (1, 2, 3) for c in itertools.product(_TAIL_CLASSES, repeat=n)]


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def first_dead(data: bytes) -> int | None:
    """Index of the first byte after which no valid continuation exists."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for i in range(len(data)):
        try:
            decoder.decode(data[i : i + 1], final=False)
        except UnicodeDecodeError:
            return i
        pending, _ = decoder.getstate()
        if pending and not any(decodes(pending + tail) for tail in _COMPLETIONS):
            return i
    return None


# -- Cases --------------------------------------------------------------------

VALID = "valid"
TRUNCATED = "truncated"  # every byte could still be continued; not complete

# (id, bytes, VALID / TRUNCATED / index of the first byte that must fail)
CASES = [
    # RFC 3629 3 boundaries of each encoding length
    ("U+0000", b"\x00", VALID),
    ("U+007F", b"\x7f", VALID),
    ("U+0080", b"\xc2\x80", VALID),
    ("U+07FF", b"\xdf\xbf", VALID),
    ("U+0800", b"\xe0\xa0\x80", VALID),
    ("U+D7FF", b"\xed\x9f\xbf", VALID),
    ("U+E000", b"\xee\x80\x80", VALID),
    ("U+FFFD", b"\xef\xbf\xbd", VALID),
    ("U+FFFF", b"\xef\xbf\xbf", VALID),
    ("U+10000", b"\xf0\x90\x80\x80", VALID),
    ("U+10FFFF", b"\xf4\x8f\xbf\xbf", VALID),
    ("empty", b"", VALID),
    ("mixed", "a\u00e9\u20ac\U0001f600z".encode(), VALID),
    # above U+10FFFF
    ("U+110000", b"\xf4\x90\x80\x80", 1),
    ("U+13FFFF", b"\xf4\xbf\xbf\xbf", 1),
    ("F5", b"\xf5\x80\x80\x80", 0),
    ("F7", b"\xf7\xbf\xbf\xbf", 0),
    ("F8 5-byte form", b"\xf8\x88\x80\x80\x80", 0),
    ("FC 6-byte form", b"\xfc\x84\x80\x80\x80\x80", 0),
    ("FE", b"\xfe", 0),
    ("FF", b"\xff", 0),
    # overlong forms
    ("overlong C0 80", b"\xc0\x80", 0),
    ("overlong C1 BF", b"\xc1\xbf", 0),
    ("overlong E0 80 80", b"\xe0\x80\x80", 1),
    ("overlong E0 9F BF", b"\xe0\x9f\xbf", 1),
    ("overlong F0 80 80 80", b"\xf0\x80\x80\x80", 1),
    ("overlong F0 8F BF BF", b"\xf0\x8f\xbf\xbf", 1),
    # surrogates U+D800-DFFF
    ("surrogate ED A0 80", b"\xed\xa0\x80", 1),
    ("surrogate ED BF BF", b"\xed\xbf\xbf", 1),
    ("CESU-8 pair", b"\xed\xa0\xbd\xed\xb2\xa9", 1),
    ("surrogate after text", b"abc\xed\xb0\x80", 4),
    # continuation bytes where a character must start
    ("lone 80", b"\x80", 0),
    ("lone BF", b"\xbf", 0),
    ("text then 80", b"hello\x80", 5),
    ("extra tail", b"\xc2\x80\x80", 2),
    ("extra tail after 4", b"\xf0\x90\x80\x80\x80", 4),
    # a character cut by the next one
    ("C2 then ASCII", b"\xc2A", 1),
    ("E2 82 then ASCII", b"\xe2\x82A", 2),
    ("F0 90 80 then ASCII", b"\xf0\x90\x80A", 3),
    ("two leads", b"\xe2\xe2\x82\xac", 1),
    # truncated: not invalid until the stream ends
    ("truncated C2", b"\xc2", TRUNCATED),
    ("truncated E0 A0", b"\xe0\xa0", TRUNCATED),
    ("truncated ED 9F", b"\xed\x9f", TRUNCATED),
    ("truncated F0 90 80", b"\xf0\x90\x80", TRUNCATED),
    ("truncated F4 8F BF", b"\xf4\x8f\xbf", TRUNCATED),
    ("truncated after text", b"abc\xe2\x82", TRUNCATED),
]


def _ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("name,data,expected", CASES, ids=_ids(CASES))
def test_rfc3629_cases_reference(name, data, expected):
    """The table itself agrees with CPython and the fail-fast reference."""
    assert decodes(data) == (expected == VALID)
    assert first_dead(data) == (expected if isinstance(expected, int) else None)


@pytest.mark.parametrize("name,data,expected", CASES, ids=_ids(CASES))
def test_rfc3629_cases(impl, name, data, expected):
    assert impl.validate_utf8(data) is (expected == VALID)
    v = impl.Utf8Validator()
    assert v.feed(data) is (not isinstance(expected, int))
    assert v.complete() is (expected == VALID)
    # byte by byte: True up to the failing byte, False from it on
    v = impl.Utf8Validator()
    results = [v.feed(data[i : i + 1]) for i in range(len(data))]
    fail = expected if isinstance(expected, int) else len(data)
    assert results == [True] * fail + [False] * (len(data) - fail)
    assert v.complete() is (expected == VALID)


@pytest.mark.parametrize("name,data,expected", CASES, ids=_ids(CASES))
def test_rfc3629_cases_every_split(impl, name, data, expected):
    """Two pieces, cut at every point: same decision, at the right piece."""
    fail = expected if isinstance(expected, int) else None
    for cut in range(len(data) + 1):
        v = impl.Utf8Validator()
        assert v.feed(data[:cut]) is (fail is None or fail >= cut)
        assert v.feed(data[cut:]) is (fail is None)
        assert v.complete() is (expected == VALID)


@pytest.mark.parametrize("name,data,expected", CASES, ids=_ids(CASES))
def test_cases_inside_ascii_at_every_alignment(impl, name, data, expected):
    """Around the 8/32-byte ASCII fast path: the case placed at every offset in
    a run of ASCII, so the first non-ASCII byte lands in every word lane."""
    for pad in range(0, 41):
        stream = b"x" * pad + data + b"y" * 40
        ok = impl.validate_utf8(stream)
        assert ok is (expected == VALID), pad
        v = impl.Utf8Validator()
        assert v.feed(stream) is (expected == VALID)


# -- Generated streams ------------------------------------------------------

_FRAGMENTS = [bytes([b]) for b in (
    0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
    0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
)]

# Near-valid streams: valid text, interesting single bytes, random bytes, and
# long ASCII runs (to reach the word-at-a-time path).
utf8ish = st.lists(
    st.one_of(
        st.text(max_size=6).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from(_FRAGMENTS),
        st.binary(max_size=3),
        st.integers(0, 70).map(lambda n: b"a" * n),
    ),
    max_size=24,
).map(b"".join)
streams = st.one_of(utf8ish, st.binary(max_size=64),
                    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")))


@HYPO
@given(data=streams)
def test_agrees_with_cpython_decode(impl, data):
    assert impl.validate_utf8(data) is decodes(data)
    v = impl.Utf8Validator()
    v.feed(data)
    assert v.complete() is decodes(data)


@HYPO
@given(data=streams)
def test_fail_fast_position_byte_by_byte(impl, data):
    """RFC 6455 8.1 / 5.6: fail on the first byte after which the message can
    no longer be valid UTF-8, not later."""
    v = impl.Utf8Validator()
    results = [v.feed(data[i : i + 1]) for i in range(len(data))]
    dead = first_dead(data)
    fail = len(data) if dead is None else dead
    assert results == [True] * fail + [False] * (len(data) - fail)
    assert v.complete() is decodes(data)


@HYPO
@given(data=streams)
def test_every_split_point_same_decision(impl, data):
    dead = first_dead(data)
    valid = decodes(data)
    for cut in range(len(data) + 1):
        v = impl.Utf8Validator()
        assert v.feed(data[:cut]) is (dead is None or dead >= cut)
        assert v.feed(data[cut:]) is (dead is None)
        assert v.complete() is valid


@HYPO
@given(data=streams, cuts=st.lists(st.integers(0, 200), max_size=10),
       kinds=st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1))
def test_differential_random_chunking(both_impls, data, cuts, kinds):
    """Both implementations, fed the same random pieces, agree at every step."""
    cy, py = both_impls
    vc, vp = cy.Utf8Validator(), py.Utf8Validator()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for n, (start, end) in enumerate(zip(bounds, bounds[1:])):
        piece = kinds[n % len(kinds)](data[start:end])
        assert vc.feed(piece) is vp.feed(piece), (start, end)
        assert vc.complete() is vp.complete()
    assert vc.complete() is vp.complete() is decodes(data)
    assert cy.validate_utf8(data) is py.validate_utf8(data)


@HYPO
@given(data=streams)
def test_python_twin_automaton_alone(data):
    """The twin's plain automaton (without CPython's decoder in front) is the
    reference on its own."""
    from fastws._py import utf8 as twin

    state = twin.ACCEPT
    fail = None
    for i, byte in enumerate(data):
        state = twin._dfa(state, [byte])
        if state == twin.REJECT:
            fail = i
            break
    assert fail == first_dead(data)
    assert (state == twin.ACCEPT) is decodes(data)


def _lead_second_streams():
    """Every lead byte x every second byte, completed with enough 80s for the
    lead's length (so E0 A0 80 and F0 90 80 80 are valid, E0 80 80 is not)."""
    for lead in range(0x100):
        tail = b"" if lead < 0xE0 else b"\x80" if lead < 0xF0 else b"\x80\x80"
        for second in range(0x100):
            data = bytes([lead, second]) + tail
            yield data, decodes(data)


LEAD_SECOND = list(_lead_second_streams())


def test_lead_second_byte_ranges_twin_automaton():
    """The twin's automaton alone, over every lead x second byte, agrees with CPython."""
    from fastws._py import utf8 as twin

    for data, valid in LEAD_SECOND:
        assert (twin._dfa(twin.ACCEPT, data) == twin.ACCEPT) is valid, data


def test_lead_second_byte_ranges(impl):
    validate = impl.validate_utf8
    for data, valid in LEAD_SECOND:
        assert validate(data) is valid, data


# -- State and API ----------------------------------------------------------


def test_invalid_stays_invalid_until_reset(impl):
    v = impl.Utf8Validator()
    assert v.feed(b"ok \xe2\x82") is True
    assert not v.complete()
    assert v.feed(b"\xff") is False
    assert v.feed(b"plain ascii") is False
    assert v.feed(b"") is False
    assert not v.complete()
    v.reset()
    assert v.complete()
    assert v.feed(b"\xe2\x82\xac") is True
    assert v.complete()


def test_reset_mid_code_point(impl):
    v = impl.Utf8Validator()
    assert v.feed(b"\xf0\x90")
    v.reset()
    assert v.feed(b"\x80") is False  # a new message cannot start with a tail


def test_empty_feed(impl):
    v = impl.Utf8Validator()
    assert v.feed(b"") is True
    assert v.complete()
    assert v.feed(b"\xc3") and v.feed(b"") and not v.complete()
    assert v.feed(b"\xa9") and v.complete()


def test_buffer_kinds(impl):
    data = "h\u00e9llo w\u00f6rld \U0001f30d".encode()
    for kind in (bytes, bytearray, memoryview):
        assert impl.validate_utf8(kind(data))
        v = impl.Utf8Validator()
        assert v.feed(kind(data)) and v.complete()
    assert impl.validate_utf8(memoryview(b"xx" + data)[2:])
    assert impl.validate_utf8(array.array("B", data))
    buf = bytearray(b"abc")
    impl.Utf8Validator().feed(buf)
    buf.extend(b"d")  # the buffer export was released


@pytest.mark.parametrize("bad", ["text", 7, None])
def test_not_bytes_like_is_a_type_error(impl, bad):
    with pytest.raises(TypeError):
        impl.validate_utf8(bad)
    with pytest.raises(TypeError):
        impl.Utf8Validator().feed(bad)


def test_non_contiguous_is_a_type_error(impl):
    strided = memoryview(b"abcdef")[::2]
    with pytest.raises(TypeError, match="contiguous"):
        impl.validate_utf8(strided)
    with pytest.raises(TypeError, match="contiguous"):
        impl.Utf8Validator().feed(strided)


def test_large_messages(impl):
    """1 MiB (the Cython module releases the GIL above 64 KiB)."""
    ascii_ = b"a" * (1 << 20)
    mixed = ("plain text, \u043f\u0440\u0438\u0432\u0435\u0442, \u4f60\u597d, \U0001f389 " * 30000).encode()
    for data in (ascii_, mixed, bytearray(mixed), memoryview(mixed)):
        assert impl.validate_utf8(data)
        v = impl.Utf8Validator()
        assert v.feed(data) and v.complete()
    for bad_at in (0, 7, 8, 31, 32, 33, len(mixed) // 2, len(mixed) - 1):
        broken = bytearray(mixed)
        broken[bad_at] = 0xFF
        assert not impl.validate_utf8(broken)
        v = impl.Utf8Validator()
        assert v.feed(broken[:bad_at]) is True
        assert v.feed(memoryview(broken)[bad_at:]) is False
    truncated = mixed[:-2]  # ends inside the last emoji
    v = impl.Utf8Validator()
    assert v.feed(truncated) is True and not v.complete()
    assert not impl.validate_utf8(truncated)
