"""A connection's handshake field lines, kept small (same API in fastws._py.headpack;
see docs/design/memory.md#the-request-headers).

``pack_lines(block)``: the field lines as received, as an int (the shape's
number above the Sec-WebSocket-Key's 128 bits, for a value of one space and a
canonical base64 key) or b"\\0", a shape's number (2 bytes) and the value,
when the process knows the shape (at most SHAPES_MAX of at most SHAPE_MAX_LEN
bytes); otherwise ``block``.
``unpack_lines`` gives the lines back, byte for byte.
"""

SHAPES_MAX: int
SHAPE_MAX_LEN: int

def pack_lines(block: bytes) -> int | bytes: ...
def unpack_lines(packed: int | bytes) -> bytes: ...
