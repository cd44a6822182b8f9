"""RFC 6455 frame codec in pure Python: the readable reference.

Same API and behaviour, byte for byte and feed for feed, as fastws_ext.frames
(the contract is fastws_ext/frames.pyi; tests/test_frames_differential.py
compares every callback and exception). The parser is a two-state machine,
HEADER (wait for and check the 2-14 byte header; a control frame is read
whole) and PAYLOAD (unmask and append as bytes arrive; text is validated as
it grows). Errors are checked in stream order, and within a header in the
order of its fields, so both implementations raise the same error. Unlike
the extension, this twin copies large payloads rather than reading them
straight into the message.
See docs/design/codec.md#the-parser.
"""
from __future__ import annotations

import os
import threading

from fastws.exceptions import FrameError, InvalidUTF8, MessageTooBig, ProtocolError, is_valid_close_code

from ..constants import (MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
                         OP_TEXT, RSV1)
from .mask import mask as _mask
from .mask import masked as _masked
from .utf8 import Utf8Validator, validate_utf8

__all__ = ["FrameParser", "build_frame", "build_header", "lone_control", "counters"]

_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))

# RFC 6455 5.5: "All control frames MUST have a payload length of 125 bytes or
# less and MUST NOT be fragmented." (MAX_CONTROL_PAYLOAD)

# RSV1-3 bits of the first header byte.  Without an extension no RSV bit may
# be set; with permessage-deflate (RFC 7692, the ``inflate`` argument) RSV1
# may be set on the first frame of a data message: the message is compressed.
_RSV_MASK = 0x70
# A compressed message in progress is marked by this bit in _msg_opcode (so
# the UTF-8 checks, which compare with OP_TEXT, skip its compressed bytes).
_COMPRESSED = 0x40


def compressed_limit(max_size):
    """The most compressed bytes a message may have: max_size (which limits the
    inflated size) plus room for incompressible data and deflate's framing
    (5 bytes per 16 KiB stored block), so a valid message is never refused
    for its compressed size while an endless stream of empty blocks is."""
    return max_size + (max_size >> 3) + 1024

# Parser states.
_HEADER = 0
_PAYLOAD = 1

# get_buffer(): the size of the scratch buffer (see fastws_ext.frames).
_SCRATCH_SIZE = 256 * 1024


# Process-wide server-side counters for /metrics (fastws/metrics.py): what
# server parsers (expect_masked) received and what unmasked data frames
# build_frame/build_header made. [rx messages, rx bytes, tx messages, tx bytes]
_COUNTS = [0, 0, 0, 0]


def counters():
    """``(messages_received, bytes_received, messages_sent, bytes_sent)`` of this
    process, server side; see fastws_ext/frames.pyi."""
    return tuple(_COUNTS)


def _count_tx(opcode, length, fin, masked):
    if not masked and opcode <= OP_BINARY:
        _COUNTS[3] += length
        if fin:
            _COUNTS[2] += 1


class _Scratch(threading.local):
    """The scratch buffer of one thread: ``view`` (allocated on first use),
    ``busy`` while a buffer_updated() of this thread parses it, and ``gen``,
    bumped each time it is lent."""

    def __init__(self):
        self.view = None
        self.busy = False
        self.gen = 0


_scratch = _Scratch()


class FrameParser:
    """Incremental RFC 6455 parser: bytes in, in any chunking; messages out.

    See fastws_ext/frames.pyi for the contract.
    """

    __slots__ = (
        "_on_message",
        "_limiter",
        "_on_control",
        "_expect_masked",
        "_max_size",
        "_buf",
        "_pos",
        "_state",
        "_fin",
        "_remaining",
        "_key",
        "_key_offset",
        "_msg_opcode",
        "_inflate",
        "_rsv_allowed",
        "_msg",
        "_utf8",
        "_closed",
        "_failed",
        "_frames",
        "_payload_read",
        "_messages",
        "_busy",
        "_lent",
    )

    def __init__(self, on_message, on_control, *, expect_masked, max_size=1048576, inflate=None,
                 limiter=None):
        self._on_message = on_message
        # Rate limits (fastws._py.limit.Limiter): each data message is
        # counted before on_message, and dropped after a refusal; None: off.
        self._limiter = limiter
        # permessage-deflate: inflate(compressed bytes) -> bytes, raising a
        # ProtocolError (1007 bad data, 1009 over max_size); None: no extension.
        self._inflate = inflate
        self._rsv_allowed = RSV1 if inflate is not None else 0
        self._on_control = on_control
        self._expect_masked = bool(expect_masked)
        self.max_size = max_size
        self._buf = bytearray()  # received bytes not parsed yet
        self._pos = 0  # parse position in _buf during feed()
        self._state = _HEADER
        # The data frame whose payload is being read (state PAYLOAD).
        self._fin = False
        self._remaining = 0  # payload bytes still to come
        self._key = None  # masking key, or None
        self._key_offset = 0  # running key offset (RFC 6455 5.3: j = i MOD 4)
        # The message being assembled: opcode 0 when none is in progress.
        self._msg_opcode = 0
        self._msg = bytearray()  # unmasked payload so far
        self._utf8 = Utf8Validator()
        self._closed = False
        self._failed = False
        self._frames = 0
        self._payload_read = 0  # data payload bytes taken (activity: with _frames)
        self._messages = 0
        self._busy = False  # inside feed(): no re-entry
        self._lent = None  # the scratch generation the last get_buffer() lent

    # -- public surface -------------------------------------------------

    @property
    def max_size(self):
        return self._max_size

    @max_size.setter
    def max_size(self, value):
        if value is not None:
            value = int(value)
            if value < 0:
                raise ValueError(f"max_size must be >= 0 or None, not {value}")
        self._max_size = value

    @property
    def closed(self):
        return self._closed

    @property
    def failed(self):
        return self._failed

    @property
    def buffered(self):
        return len(self._buf) + len(self._msg)

    @property
    def reserved(self):
        """Bytes allocated for unparsed input and the message in progress
        (the bytearrays grow as bytes arrive, never from a declared length)."""
        return self._buf.__alloc__() + self._msg.__alloc__()

    @property
    def at_rest(self):
        """Between messages: no bytes held, no frame or message begun (a new
        parser in its place would read the rest of the stream the same)."""
        return self._state == _HEADER and not self._buf and not self._msg_opcode

    @property
    def messages_received(self):
        """Complete data messages delivered so far."""
        return self._messages

    @property
    def frames_received(self):
        return self._frames

    @property
    def activity(self):
        """Frames parsed plus data payload bytes taken: grows with every
        frame and with every payload byte of a frame still coming in.
        Unspecified once the parser has failed (the builds take different
        amounts of a bad chunk before they notice)."""
        return self._frames + self._payload_read

    def wants_direct(self):
        """Whether get_buffer() would lend the payload's own destination: the
        extension's parser does for large frames; this one always lends the
        scratch buffer, so never."""
        return False

    def release(self):
        """Free internal buffers that hold no data (call when idle)."""
        if self._busy:
            return
        self._lent = None
        if not self._buf:
            self._buf = bytearray()
        if not self._msg:
            self._msg = bytearray()

    def feed(self, data):
        if self._closed or self._failed:
            return
        if self._busy:
            raise RuntimeError("FrameParser.feed() called from one of its callbacks")
        self._lent = None
        if self._expect_masked:
            _COUNTS[1] += len(data)
        self._buf += data
        self._pos = 0
        self._busy = True
        try:
            self._advance()
        finally:
            self._busy = False
            if self._closed or self._failed:
                self._drop_everything()
            else:
                # Keep what was not parsed (an incomplete frame, or the rest of
                # the stream after a callback raised) for the next feed().
                del self._buf[: self._pos]
                self._pos = 0

    # -- asyncio.BufferedProtocol: get_buffer, then buffer_updated ---------

    def get_buffer(self, sizehint=-1):
        """A writable memoryview for the next read; see fastws_ext/frames.pyi."""
        if self._busy:
            raise RuntimeError("FrameParser.get_buffer() called from one of its callbacks")
        scratch = _scratch
        if scratch.busy:
            raise RuntimeError("FrameParser.get_buffer() called while another parser "
                               "of this thread parses the scratch buffer")
        if scratch.view is None:
            scratch.view = memoryview(bytearray(_SCRATCH_SIZE))
        scratch.gen += 1
        self._lent = scratch.gen
        return scratch.view

    def buffer_updated(self, nbytes):
        """The first nbytes of the last get_buffer() view were received:
        the same as feed(bytes(view[:nbytes]))."""
        lent, self._lent = self._lent, None
        if self._closed or self._failed:
            return
        if self._busy:
            raise RuntimeError("FrameParser.buffer_updated() called from one of its callbacks")
        if lent is None:
            raise RuntimeError("FrameParser.buffer_updated() without get_buffer() before it")
        scratch = _scratch
        if not 0 <= nbytes <= _SCRATCH_SIZE:
            raise ValueError(f"buffer_updated({nbytes}): the buffer holds {_SCRATCH_SIZE} bytes")
        if lent != scratch.gen or scratch.busy:
            raise RuntimeError("FrameParser.buffer_updated(): the scratch buffer was "
                               "lent again since get_buffer()")
        data = bytes(scratch.view[:nbytes])
        scratch.busy = True
        try:
            self.feed(data)
        finally:
            scratch.busy = False

    # -- the state machine ---------------------------------------------

    def _advance(self):
        """Parse as much of _buf as possible, delivering events in stream order."""
        while not self._closed:
            if self._state == _HEADER:
                if not self._parse_header():
                    return
            elif not self._read_payload():
                return

    def _parse_header(self):
        """One frame header at _pos; False if more bytes are needed.

        A control frame is delivered here, whole; a data frame switches the
        parser to PAYLOAD.
        """
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos

        # 1. RFC 6455 5.2: the first two bytes hold FIN, RSV1-3, the opcode,
        #    MASK and the 7-bit payload length.
        if avail < 2:
            return False
        b0 = buf[pos]
        b1 = buf[pos + 1]
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        control = opcode >= 0x8

        # 2. RFC 6455 5.2: RSV1-3 "MUST be 0 unless an extension is negotiated
        #    that defines meanings for non-zero values."
        if b0 & _RSV_MASK & ~self._rsv_allowed:
            raise self._fail(FrameError("RSV bits set"))

        # 3. RFC 6455 5.2: "If an unknown opcode is received, the receiving
        #    endpoint MUST _Fail the WebSocket Connection_" (3-7 and 0xB-0xF
        #    are reserved).
        if opcode not in _OPCODES:
            raise self._fail(FrameError(f"reserved opcode {opcode}"))

        # 4. RFC 6455 5.4 fragmentation: control frames "MUST NOT be
        #    fragmented"; a continuation frame needs a message in progress, and
        #    a new data message cannot start before the last one is finished.
        if control:
            if not fin:
                raise self._fail(FrameError("fragmented control frame"))
        elif opcode == OP_CONTINUATION:
            if not self._msg_opcode:
                raise self._fail(FrameError("unexpected continuation frame"))
        elif self._msg_opcode:
            raise self._fail(FrameError("expected continuation frame"))

        # 4b. RFC 7692 6: RSV1 (compressed) only on the first frame of a data
        #     message; never on a control frame (6.1) or a continuation frame.
        if b0 & RSV1 and (control or opcode == OP_CONTINUATION):
            raise self._fail(FrameError("RSV1 set on a control frame" if control
                                        else "RSV1 set on a continuation frame"))

        # 5. RFC 6455 5.1: "a client MUST mask all frames that it sends to the
        #    server" and "A server MUST NOT mask any frames that it sends to the
        #    client"; either side MUST fail the connection otherwise.
        if masked != self._expect_masked:
            raise self._fail(FrameError("unmasked frame" if self._expect_masked else "masked frame"))

        # 6. RFC 6455 5.5: "All control frames MUST have a payload length of
        #    125 bytes or less"; RFC 6455 5.5.1: a close body, if any, starts
        #    with a 2-byte status code, so 1 byte is never valid.
        if control:
            if length > MAX_CONTROL_PAYLOAD:
                raise self._fail(FrameError("control frame too long"))
            if opcode == OP_CLOSE and length == 1:
                raise self._fail(FrameError("close frame payload of 1 byte"))

        # 7. RFC 6455 5.2: payload length 126 means a 16-bit length follows, 127
        #    a 64-bit one whose "most significant bit MUST be 0"; then the
        #    4-byte masking key if MASK is set.  (The RFC asks senders for the
        #    minimal encoding; like most peers we accept a longer one.)
        size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
        if avail < size:
            return False
        if length == 126:
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        elif length == 127:
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise self._fail(FrameError("frame length top bit set"))
        key = bytes(buf[pos + size - 4 : pos + size]) if masked else None

        # 8. Control frames are read whole and delivered at once, even between
        #    the fragments of a message (RFC 6455 5.4: "Control frames MAY be
        #    injected in the middle of a fragmented message").
        if control:
            if avail < size + length:
                return False
            payload = bytes(buf[pos + size : pos + size + length])
            if key is not None:
                payload = _masked(payload, key)
            if opcode == OP_CLOSE:
                self._check_close(payload)
            self._frames += 1
            self._pos = pos + size + length
            if opcode == OP_CLOSE:
                # Everything after a close frame is ignored (RFC 6455 5.5.1:
                # the endpoint "MUST NOT send any more data frames").
                self._closed = True
            self._on_control(opcode, payload)
            return True

        # 9. Data frame: enforce max_size from the header, before buffering the
        #    payload, on the message so far plus this frame.
        #    A compressed message is limited by its compressed size here (see
        #    compressed_limit) and by its inflated size while it is inflated.
        total = len(self._msg) + length
        if self._max_size is not None:
            compressed = b0 & RSV1 if opcode != OP_CONTINUATION else self._msg_opcode & _COMPRESSED
            limit = compressed_limit(self._max_size) if compressed else self._max_size
            if total > limit:
                raise self._fail(MessageTooBig(f"message too big ({total} > {limit} bytes)"))
        if opcode != OP_CONTINUATION:
            self._msg_opcode = opcode | (_COMPRESSED if b0 & RSV1 else 0)
        self._fin = fin
        self._remaining = length
        self._key = key
        self._key_offset = 0
        self._pos = pos + size
        self._state = _PAYLOAD
        return True

    def _read_payload(self):
        """Take the data payload bytes that have arrived; False if more are needed."""
        buf = self._buf
        pos = self._pos
        take = min(self._remaining, len(buf) - pos)
        if take:
            part = buf[pos : pos + take]  # a copy
            self._payload_read += take  # taken, valid or not
            if self._key is not None:
                self._key_offset = _mask(part, self._key, self._key_offset)
            # RFC 6455 8.1: text data MUST be UTF-8; checked on every byte as
            # it arrives so that an invalid one fails the connection at once.
            if self._msg_opcode == OP_TEXT and not self._utf8.feed(part):
                raise self._fail(InvalidUTF8("invalid UTF-8"))
            self._msg += part
            self._pos = pos + take
            self._remaining -= take
        if self._remaining:
            return False

        # The frame is complete.  A text message may not end inside a code
        # point (checked before the frame is counted, as an invalid byte is).
        opcode = self._msg_opcode
        if self._fin and opcode == OP_TEXT and not self._utf8.complete():
            raise self._fail(InvalidUTF8("invalid UTF-8"))
        if self._fin and opcode & _COMPRESSED:
            # RFC 7692 7.2.2: append 0x00 0x00 0xff 0xff and inflate the whole
            # message as one stream (inflate does it, bounded by max_size);
            # RFC 6455 8.1: the inflated text must be UTF-8.
            try:
                data = self._inflate(bytes(self._msg))
            except ProtocolError as exc:
                raise self._fail(exc) from None
            if type(data) is not bytes:
                data = bytes(data)
            if opcode == OP_TEXT | _COMPRESSED:
                try:
                    data = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._fail(InvalidUTF8("invalid UTF-8")) from None
            self._frames += 1
            self._state = _HEADER
            self._key = None
            self._msg = bytearray()
            self._msg_opcode = 0
            self._messages += 1
            limiter = self._limiter
            if limiter is not None and limiter.count(data):
                return True  # refused before: dropped
            self._on_message(data)
            return True
        self._frames += 1
        self._state = _HEADER
        self._key = None
        if not self._fin:
            return True
        # The message is complete.
        data = bytes(self._msg)
        self._msg = bytearray()
        self._msg_opcode = 0
        self._utf8.reset()
        self._messages += 1
        if self._expect_masked:
            _COUNTS[0] += 1
        if opcode == OP_TEXT:
            data = data.decode("utf-8")
        limiter = self._limiter
        if limiter is not None and limiter.count(data):
            return True  # refused before: dropped
        self._on_message(data)
        return True

    def _check_close(self, payload):
        """RFC 6455 5.5.1 / 7.4: an empty body, or a valid code and a UTF-8 reason."""
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise self._fail(FrameError(f"invalid close code {code}"))
            if not validate_utf8(payload[2:]):
                raise self._fail(InvalidUTF8("invalid UTF-8"))

    def _fail(self, exc):
        """Enter the failed state; returns exc for ``raise self._fail(...)``."""
        self._failed = True
        return exc

    def _drop_everything(self):
        self._buf = bytearray()
        self._msg = bytearray()
        self._pos = 0
        self._remaining = 0
        self._msg_opcode = 0
        self._utf8.reset()


# -- building frames -----------------------------------------------------

_KEYS_SIZE = 4096
_keys = b""
_keys_pos = _KEYS_SIZE


def _fresh_key():
    """4 random bytes (RFC 6455 5.3: the masking key MUST be unpredictable),
    drawn from a buffer of os.urandom refilled when used up."""
    global _keys, _keys_pos
    if _keys_pos >= len(_keys):
        _keys = os.urandom(_KEYS_SIZE)
        _keys_pos = 0
    key = _keys[_keys_pos : _keys_pos + 4]
    _keys_pos += 4
    return key


def _check_args(opcode, length, fin, mask_key, rsv):
    if opcode not in _OPCODES:
        raise ValueError(f"invalid opcode {opcode!r}")
    if rsv & ~_RSV_MASK:
        raise ValueError(f"rsv must use only the bits 0x70, not {rsv:#x}")
    if opcode >= 0x8:
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload too long ({length} > 125 bytes)")
        if not fin:
            raise ValueError("control frames cannot be fragmented (fin=False)")
    if length < 0 or length >> 63:
        raise ValueError(f"invalid payload length {length}")
    if mask_key is not None and len(mask_key) != 4:
        raise ValueError("mask_key must be 4 bytes")


def _header(opcode, length, fin, mask_key, rsv):
    head = bytearray()
    head.append((0x80 if fin else 0) | rsv | opcode)
    mbit = 0x80 if mask_key is not None else 0
    # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the
    # length".
    if length < 126:
        head.append(mbit | length)
    elif length < 65536:
        head.append(mbit | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(mbit | 127)
        head += length.to_bytes(8, "big")
    if mask_key is not None:
        head += mask_key
    return head


def build_header(opcode, length, *, fin=True, mask_key=None, rsv=0):
    """Only the header (2-14 bytes); see fastws_ext/frames.pyi."""
    if mask_key is not None:
        mask_key = bytes(mask_key)
    _check_args(opcode, length, fin, mask_key, rsv)
    _count_tx(opcode, length, fin, mask_key is not None)
    return bytes(_header(opcode, length, fin, mask_key, rsv))


def build_frame(opcode, payload=b"", *, fin=True, mask=False, mask_key=None, rsv=0):
    """One complete frame (header + payload); see fastws_ext/frames.pyi."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    else:
        payload = memoryview(payload).cast("B")
    if mask_key is not None:
        mask_key = bytes(mask_key)
    elif mask:
        mask_key = _fresh_key()
    _check_args(opcode, len(payload), fin, mask_key, rsv)
    frame = _header(opcode, len(payload), fin, mask_key, rsv)
    start = len(frame)
    frame += payload
    if mask_key is not None:
        _mask(memoryview(frame)[start:], mask_key)
    _count_tx(opcode, len(payload), fin, mask_key is not None)
    return bytes(frame)


def lone_control(data, expect_masked):
    """``(opcode, payload)`` if ``data`` is exactly one complete, valid PING or
    PONG frame, else None.

    The keepalive path of an idle connection whose parser has been released:
    its pong (or the peer's ping) is handled without making a parser. Only the
    case where every RFC 6455 5.2/5.5 rule is plainly met is taken: FIN set,
    RSV bits 0, opcode 0x9 or 0xA, MASK as expected, a 7-bit length of at
    most 125 (5.5: "All control frames MUST have a payload length of 125
    bytes or less"), and nothing before or after the frame. Anything else,
    valid or not, returns None and goes to a real parser, which applies the
    rules and their close codes.
    """
    if type(data) is not bytes or not 2 <= len(data) <= 131:
        return None
    b0, b1 = data[0], data[1]
    if b0 != 0x80 | OP_PING and b0 != 0x80 | OP_PONG:
        return None
    if bool(b1 & 0x80) != bool(expect_masked):
        return None
    length = b1 & 0x7F
    head = 6 if expect_masked else 2
    if length > 125 or len(data) != head + length:
        return None
    payload = data[head:]
    if expect_masked:
        payload = _masked(payload, data[2:6])
    return b0 & 0x0F, payload
