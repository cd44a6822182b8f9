"""Incremental UTF-8 validation (RFC 3629, as RFC 6455 8.1 requires).

Same API in fastws._py.utf8. Rejects overlong forms, surrogates (U+D800-DFFF),
code points above U+10FFFF, and stray continuation bytes, on the first byte
that makes the stream invalid (a truncated sequence is not invalid until the
stream ends: see ``complete``).
"""
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

class Utf8Validator:
    def __init__(self) -> None: ...
    def feed(self, data: Buffer) -> bool:
        """Validate the next piece of the stream. False as soon as the stream can
        no longer be valid; once False, always False until ``reset()``."""
    def complete(self) -> bool:
        """True if everything fed so far is valid and ends on a code point
        boundary (a message may end here)."""
    def reset(self) -> None: ...

def validate_utf8(data: Buffer) -> bool:
    """Is ``data`` complete, valid UTF-8?"""
