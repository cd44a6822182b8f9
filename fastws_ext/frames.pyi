"""RFC 6455 frame codec: the incremental parser and the frame builder.

The same API, with the same behaviour byte for byte, is in fastws._py.frames
(the readable reference); tests/test_frames_differential.py proves it.
"""
from typing import Callable, Tuple, Union

from .limit import Limiter

Buffer = Union[bytes, bytearray, memoryview]

# The opcodes are fastws.constants.OP_* (one definition for both builds).

class FrameParser:
    """Incremental parser: bytes in, in any chunking; complete messages out.

    ``on_message(data)`` is called once per complete data message: ``str`` for
    a text message (UTF-8 validated), ``bytes`` for a binary one; fragmented
    messages are reassembled.  ``on_control(opcode, payload)`` is called for
    each PING, PONG and CLOSE frame (control frames may arrive between the
    fragments of a message).  A CLOSE payload has been validated: it is empty,
    or a valid close code (fastws.exceptions.is_valid_close_code) followed by a
    UTF-8 reason.  Once a CLOSE frame has been delivered, ``closed`` is True
    and every later byte (including the rest of the current ``feed``) is
    ignored.

    ``expect_masked``: True on the server (client frames MUST be masked), False
    on the client (server frames MUST NOT be masked).  ``max_size``: the
    largest message, in bytes, summed over fragments, checked from each frame
    header before its payload is buffered; None means no limit.

    Errors: ``feed`` raises fastws.exceptions.FrameError (1002),
    InvalidUTF8 (1007) or MessageTooBig (1009) on the first violation, and the
    parser is then ``failed``: later ``feed`` calls return at once.  Invalid
    UTF-8 is found on the first invalid byte, even in the middle of a frame whose
    payload has not fully arrived (fail fast); a frame that fails it is not
    counted in ``frames_received``.  If a callback raises, the exception
    propagates out of ``feed``; the frame that was being delivered is consumed
    and the rest stays buffered for the next ``feed``.  A callback may not call
    ``feed``, ``get_buffer`` or ``buffer_updated`` of its own parser
    (RuntimeError).

    ``inflate``: permessage-deflate (RFC 7692) is in use.  RSV1 may then be set
    on the first frame of a data message (never on a control or continuation
    frame: FrameError); such a message is reassembled compressed (its
    compressed size limited to ``compressed_limit(max_size)``), then
    ``inflate(compressed: bytes) -> bytes`` is called once with the whole
    message and must append the 0x00 0x00 0xff 0xff tail, inflate and enforce
    max_size while inflating; a ProtocolError it raises fails the parser like
    the parser's own errors.  A compressed text message is UTF-8 validated
    after inflating.  Without ``inflate`` any RSV bit fails the connection.

    ``limiter``: the connection's rate limits (fastws_ext.limit.Limiter, in
    the twin fastws._py.limit.Limiter), or None. Each data message is counted
    (``Limiter.count``; in the extension a C call) just before ``on_message``: over a
    limit the ProtocolError("rate limit", 1008) propagates as a callback's
    would, and every later data message is dropped without ``on_message``.

    Bytes come in through ``feed`` (asyncio.Protocol.data_received) or through
    ``get_buffer``/``buffer_updated`` (asyncio.BufferedProtocol), in any mix.
    """

    def __init__(
        self,
        on_message: Callable[[Union[str, bytes]], object],
        on_control: Callable[[int, bytes], object],
        *,
        expect_masked: bool,
        max_size: Union[int, None] = 1048576,
        inflate: Union[Callable[[bytes], bytes], None] = None,
        limiter: Union[Limiter, None] = None,
    ) -> None: ...
    def feed(self, data: Buffer) -> None: ...
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view to read the next bytes into (asyncio.BufferedProtocol).

        ``sizehint`` is ignored.  Between frames, in a header, a control frame
        or a small data frame, the view is the scratch buffer of the calling
        thread (256 KiB, shared by every parser of the thread): an idle
        connection holds no read buffer.  In the payload of a data frame with
        at least 64 KiB still to come (Cython only; the pure-Python twin always
        lends the scratch), the view is where that payload goes (the result
        ``bytes`` of a single-frame binary message, or the message buffer),
        limited to the rest of the frame, so the socket is read straight into
        the message.

        The view is valid until the next call of any method of this parser
        (and, for the scratch, of any parser of the thread); do not keep it.
        Raises RuntimeError if called from one of this parser's callbacks, or
        while another parser of the thread is inside ``buffer_updated``.  A
        closed or failed parser still lends the scratch (what is read is then
        ignored)."""
    def buffer_updated(self, nbytes: int) -> None:
        """The first ``nbytes`` of the last ``get_buffer()`` view were filled.

        Exactly ``feed(bytes(view[:nbytes]))``: the same callbacks, exceptions
        and state afterwards, for any nbytes from 0 to len(view).  Nothing
        refers to the scratch buffer once it returns, even if a callback
        raised (what is left is kept by the parser, as ``feed`` keeps it).
        Raises RuntimeError if there was no ``get_buffer()`` since the last
        call of any other method, if the scratch was lent again in between,
        or from one of this parser's callbacks; ValueError if nbytes is out
        of range.  Returns at once (ignoring the bytes) if closed or failed."""
    def wants_direct(self) -> bool:
        """True while ``get_buffer()`` would lend the destination of the
        current data frame's payload itself (in its payload, nothing else
        buffered, at least 64 KiB still to come): reading through
        ``get_buffer``/``buffer_updated`` then costs no copy of those bytes.
        The pure-Python twin never lends directly and always says False."""
    def release(self) -> None:
        """Free internal buffers that hold no data (call when idle); cancels an
        outstanding ``get_buffer()``."""
    @property
    def closed(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete frame plus a partial fragmented message
        (never the shared scratch buffer)."""
    @property
    def reserved(self) -> int:
        """Bytes of memory held for unparsed input and the message in progress,
        allocated rather than used (never the shared scratch buffer). Never
        sized from a frame's declared length alone: at most 64 KiB beyond
        what has arrived, growing geometrically as the payload comes, so a
        header announcing 16 MiB followed by 15 bytes holds about 64 KiB."""
    @property
    def at_rest(self) -> bool:
        """Between messages: no bytes held, no frame or message begun (a new
        parser in its place would read the rest of the stream the same; a
        frame's header alone, or an empty first fragment, is not at rest)."""
    @property
    def messages_received(self) -> int:
        """Complete data messages delivered to on_message so far (counted just
        before the callback)."""
    @property
    def frames_received(self) -> int:
        """Complete frames parsed so far."""
    @property
    def activity(self) -> int:
        """``frames_received`` plus the data payload bytes taken so far: the
        keepalive's liveness counter (it grows while a large frame's payload
        trickles in, when no frame completes and no pong can come).
        Unspecified once the parser has failed."""
    max_size: Union[int, None]

def compressed_limit(max_size: int) -> int:
    """The most compressed bytes a message may have when max_size limits its
    inflated size: max_size + max_size // 8 + 1024."""

def build_frame(
    opcode: int,
    payload: Union[str, Buffer] = b"",
    *,
    fin: bool = True,
    mask: bool = False,
    mask_key: Union[bytes, None] = None,
    rsv: int = 0,
) -> bytes:
    """One complete frame (header + payload) in a single bytes object.

    ``str`` payloads are encoded as UTF-8.  ``mask=True`` (client side) masks
    the payload with a fresh key from a buffered os.urandom; ``mask_key``
    (4 bytes) masks with that key instead (tests).  ``rsv`` is the RSV bits
    already in place (0x40 = RSV1)."""

def build_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    mask_key: Union[bytes, None] = None,
    rsv: int = 0,
) -> bytes:
    """Only the header (2-14 bytes), for writing a large unmasked payload next to
    it without copying (transport.writelines([header, payload]))."""

def lone_control(data: bytes, expect_masked: bool) -> Union[Tuple[int, bytes], None]:
    """``(opcode, payload)`` (payload unmasked) if ``data`` is exactly one
    complete PING or PONG frame that plainly meets RFC 6455 5.2/5.5 (FIN, no
    RSV bits, MASK as expected, length <= 125, nothing around it); else None,
    and a real parser must take the bytes (it applies the rules and their
    close codes). Lets an idle connection answer keepalive without a parser."""

def counters() -> Tuple[int, int, int, int]:
    """``(messages_received, bytes_received, messages_sent, bytes_sent)`` of this
    process, server side, for /metrics: data messages delivered and frame bytes
    fed by parsers with ``expect_masked=True``, and unmasked data frames made by
    build_frame/build_header (payload bytes; one message per final frame).
    Plain C counters: no per-connection memory, no Python work per message."""
