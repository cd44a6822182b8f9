"""Incremental UTF-8 validation (RFC 3629): the pure-Python twin of fastws_ext.utf8.

RFC 6455 8.1: invalid UTF-8 in a text message fails the connection. The
reference is a small automaton over the grammar of RFC 3629 4 (``_CLASSES``):
it fails on the first byte after which no valid continuation exists, exactly
like the Cython module. For speed, CPython's strict decoder checks a piece
first and the automaton looks only at the tail, or takes over at the first
invalid sequence: the decoder never decides on its own (it accepts ``ED A0``
as incomplete, which can only become a surrogate).
See docs/design/codec.md#utf-8.
"""
from __future__ import annotations

from codecs import utf_8_decode

__all__ = ["Utf8Validator", "validate_utf8"]

# -- The automaton ----------------------------------------------------------

# States (the Cython module encodes them differently; only ACCEPT is shared).
ACCEPT = 0  # at a code point boundary
REJECT = 1  # no valid continuation exists; absorbing
NEED_1 = 2  # one UTF8-tail (%x80-BF) to go
NEED_2 = 3  # two to go
NEED_3 = 4  # three to go
AFTER_E0 = 5  # %xE0: needs %xA0-BF (else overlong)
AFTER_ED = 6  # %xED: needs %x80-9F (else a surrogate, U+D800-DFFF)
AFTER_F0 = 7  # %xF0: needs %x90-BF (else overlong)
AFTER_F4 = 8  # %xF4: needs %x80-8F (else above U+10FFFF)
_N_STATES = 9

# RFC 3629 4:
#   UTF8-1 = %x00-7F
#   UTF8-2 = %xC2-DF UTF8-tail
#   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
#            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
#   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
#            %xF4 %x80-8F 2( UTF8-tail )
# Each byte range, with the transitions it allows (any other state -> REJECT).
_CLASSES = (
    ((0x00, 0x7F), {ACCEPT: ACCEPT}),
    ((0x80, 0x8F), {NEED_1: ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2, AFTER_ED: NEED_1, AFTER_F4: NEED_2}),
    ((0x90, 0x9F), {NEED_1: ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2, AFTER_ED: NEED_1, AFTER_F0: NEED_2}),
    ((0xA0, 0xBF), {NEED_1: ACCEPT, NEED_2: NEED_1, NEED_3: NEED_2, AFTER_E0: NEED_1, AFTER_F0: NEED_2}),
    ((0xC0, 0xC1), {}),  # would be overlong
    ((0xF5, 0xFF), {}),  # would be above U+10FFFF
    ((0xC2, 0xDF), {ACCEPT: NEED_1}),
    ((0xE0, 0xE0), {ACCEPT: AFTER_E0}),
    ((0xE1, 0xEC), {ACCEPT: NEED_2}),
    ((0xED, 0xED), {ACCEPT: AFTER_ED}),
    ((0xEE, 0xEF), {ACCEPT: NEED_2}),
    ((0xF0, 0xF0), {ACCEPT: AFTER_F0}),
    ((0xF1, 0xF3), {ACCEPT: NEED_3}),
    ((0xF4, 0xF4), {ACCEPT: AFTER_F4}),
)


def _build_next() -> tuple[bytes, ...]:
    """``_NEXT[state][byte]``: the state after ``byte``."""
    rows = [bytearray([REJECT]) * 256 for _ in range(_N_STATES)]
    covered = set()
    for (first, last), goes_to in _CLASSES:
        for byte in range(first, last + 1):
            covered.add(byte)
            for state, after in goes_to.items():
                rows[state][byte] = after
    assert len(covered) == 256, "byte classes must cover 00-FF"
    return tuple(bytes(row) for row in rows)


_NEXT = _build_next()


def _dfa(state: int, data) -> int:
    """Run the automaton from ``state`` over ``data`` (iterable of ints).

    The plain reference: one step per byte, stops as soon as it rejects."""
    nxt = _NEXT
    for byte in data:
        state = nxt[state][byte]
        if state == REJECT:
            return REJECT
    return state


def _advance(state: int, view: memoryview) -> int:
    """The state after ``view``: the automaton's answer, computed faster."""
    n = len(view)
    i = 0
    # Finish a code point left open by the previous piece.
    nxt = _NEXT
    while state != ACCEPT and i < n:
        state = nxt[state][view[i]]
        i += 1
        if state == REJECT:
            return REJECT
    if i == n:
        return state
    # At a boundary: let CPython's decoder vouch for what it can consume.
    try:
        _, consumed = utf_8_decode(view[i:], "strict", False)
    except UnicodeDecodeError as exc:
        # Everything before exc.start is complete and valid: ACCEPT there.
        return _dfa(ACCEPT, view[i + exc.start :])
    return _dfa(ACCEPT, view[i + consumed :])


def _byte_view(obj) -> memoryview:
    """A 1-D unsigned-byte view of a C-contiguous buffer, or TypeError."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not {type(obj).__name__!r}") from None
    if not view.c_contiguous:
        view.release()
        raise TypeError("a C-contiguous buffer is required")
    if view.format == "B" and view.ndim == 1:
        return view
    with view:
        return view.cast("B")


# -- Python API -------------------------------------------------------------


class Utf8Validator:
    """Incremental UTF-8 validator for one text message (RFC 3629)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = ACCEPT

    def feed(self, data) -> bool:
        """Validate the next piece of the stream. False as soon as the stream can
        no longer be valid; once False, always False until ``reset()``."""
        with _byte_view(data) as view:
            if self._state == REJECT:
                return False
            self._state = _advance(self._state, view)
        return self._state != REJECT

    def complete(self) -> bool:
        """True if everything fed so far is valid and ends on a code point
        boundary (a message may end here)."""
        return self._state == ACCEPT

    def reset(self) -> None:
        """Forget the stream: ready for the next message."""
        self._state = ACCEPT

    def __repr__(self) -> str:
        if self._state == REJECT:
            status = "invalid"
        elif self._state == ACCEPT:
            status = "complete"
        else:
            status = "inside a code point"
        return f"<Utf8Validator {status}>"


def validate_utf8(data) -> bool:
    """Is ``data`` complete, valid UTF-8?"""
    with _byte_view(data) as view:
        return _advance(ACCEPT, view) == ACCEPT
