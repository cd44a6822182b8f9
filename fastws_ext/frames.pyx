"""RFC 6455 frame codec: the incremental parser and the frame builder.

The contract is fastws_ext/frames.pyi, and fastws._py.frames is the readable
reference with the same behaviour, feed for feed: this module is the same
state machine (HEADER, PAYLOAD) with the same numbered steps, plus the work
that makes it fast: headers read from a ``const unsigned char*``, chunks
parsed where they are (only an incomplete tail under 140 bytes is copied;
``TOPUP`` completes it), one copy for a whole single-frame message. The
BufferedProtocol path lends a per-thread scratch buffer between frames, and
in a data frame with at least DIRECT_MIN bytes to come lets the socket read
straight into the message, unmasked and validated where it lands.
See docs/design/codec.md#the-parser and #direct-reads-of-large-frames.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.ref cimport PyObject, Py_DECREF, Py_INCREF
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from fastws_ext.constants cimport (MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION,
                                   OP_PING, OP_PONG, OP_TEXT, RSV1)
from fastws_ext.limit cimport Limiter, limit_count
from fastws_ext.mask cimport mask_copy, mask_inplace
from fastws_ext.utf8 cimport Utf8Validator, utf8_valid

import os

from fastws.exceptions import FrameError, InvalidUTF8, MessageTooBig, ProtocolError, is_valid_close_code

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject** bytes, Py_ssize_t newsize) except -1
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    enum: PyBUF_WRITE
    ctypedef struct PyMemoryViewObject:
        Py_ssize_t exports            # buffers exported by this memoryview

# The scratch buffer, one per thread: an event loop runs in one thread, and a
# callback may let another thread's loop run (the GIL is released), so a
# process-wide buffer could be overwritten while it is parsed.  Allocated on
# first use; freed when the thread exits (POSIX; kept until the process exits
# elsewhere).  fastws_scratch_busy: a buffer_updated() of this thread is
# parsing it.  fastws_scratch_gen: bumped each time it is lent, so that a
# buffer_updated() can tell that another get_buffer() came in between.
cdef extern from *:
    """
    #include <stdlib.h>
    #if defined(_MSC_VER)
    #  define FASTWS_TLS __declspec(thread)
    #else
    #  define FASTWS_TLS __thread
    #endif
    static FASTWS_TLS unsigned char *fastws_scratch_mem = NULL;
    static FASTWS_TLS int fastws_scratch_busy = 0;
    static FASTWS_TLS unsigned long long fastws_scratch_gen = 0;
    #if !defined(_WIN32)
    #include <pthread.h>
    static pthread_key_t fastws_scratch_key;
    static pthread_once_t fastws_scratch_once = PTHREAD_ONCE_INIT;
    static int fastws_scratch_key_ok = 0;
    static void fastws_scratch_key_init(void) {
        fastws_scratch_key_ok = pthread_key_create(&fastws_scratch_key, free) == 0;
    }
    #endif
    static unsigned char *fastws_scratch(Py_ssize_t size) {
        if (fastws_scratch_mem == NULL) {
            fastws_scratch_mem = (unsigned char *)malloc((size_t)size);
    #if !defined(_WIN32)
            if (fastws_scratch_mem != NULL) {
                pthread_once(&fastws_scratch_once, fastws_scratch_key_init);
                if (fastws_scratch_key_ok)
                    pthread_setspecific(fastws_scratch_key, fastws_scratch_mem);
            }
    #endif
        }
        return fastws_scratch_mem;
    }
    """
    unsigned char* fastws_scratch_mem
    int fastws_scratch_busy
    unsigned long long fastws_scratch_gen
    unsigned char* fastws_scratch(Py_ssize_t size) nogil

# Opcodes (RFC 6455 5.2), RSV1, MAX_CONTROL_PAYLOAD (RFC 6455 5.5: "All
# control frames MUST have a payload length of 125 bytes or less and MUST NOT
# be fragmented.") come from fastws/constants.py through constants.pxd.

cdef enum:
    # RSV1-3 bits of the first header byte.  Without an extension none may be
    # set; with permessage-deflate (RFC 7692, the ``inflate`` argument) RSV1
    # may be set on the first frame of a data message: it is compressed.
    RSV_MASK = 0x70
    # A compressed message in progress has this bit in _msg_opcode (so the
    # UTF-8 checks and the binary fast paths, which compare with OP_TEXT and
    # OP_BINARY, leave its compressed bytes alone).
    COMPRESSED = 0x40
    # Parser states (HEADER, PAYLOAD) and DIRECT_MIN: in frames.pxd.
    # Bytes of a new chunk appended to a non-empty buffer before parsing goes
    # on in the chunk itself: more than the largest unit ever left buffered
    # (a control frame: 6 + 125 bytes).
    TOPUP = 256
    # Without max_size, a result is allocated from the header only up to this
    # size (a peer could announce 2**62 bytes); larger messages grow as they
    # arrive.
    PREALLOC_UNBOUNDED = 16 * 1024 * 1024
    # A message's memory is never reserved from its header alone: the first
    # reservation is at most this much (or what has arrived), then it grows
    # geometrically as payload arrives (a peer may announce 16 MiB and send
    # 15 bytes); a message buffer above it is freed when its message ends.
    RESERVE_FIRST = 64 * 1024
    # get_buffer(): the scratch buffer's size (uvloop's own read buffer is
    # 256 KiB too: one read takes what a fast peer has sent since the last).
    SCRATCH_SIZE = 256 * 1024
    # What the last get_buffer() lent.
    LENT_NONE = 0
    LENT_SCRATCH = 1
    LENT_DIRECT = 2


def compressed_limit(max_size):
    """The most compressed bytes a message may have (see fastws._py.frames)."""
    return max_size + (max_size >> 3) + 1024


cdef inline bint _is_opcode(int opcode) noexcept nogil:
    return opcode <= OP_BINARY or OP_CLOSE <= opcode <= OP_PONG


cdef inline bytes _payload_bytes(const unsigned char* src, Py_ssize_t n, const unsigned char* key):
    """A new bytes object holding src[0:n], unmasked with key (if not NULL)."""
    cdef bytes out
    if key == NULL:
        return PyBytes_FromStringAndSize(<const char*>src, n)
    # Allocate with NULL: PyBytes_FromStringAndSize(src, 1) returns CPython's
    # shared 1-byte singleton, which must never be written to.
    out = PyBytes_FromStringAndSize(NULL, n)
    mask_copy(<unsigned char*>PyBytes_AS_STRING(out), src, n, key, 0)
    return out


# Process-wide server-side counters for /metrics (fastws/metrics.py), at no
# per-connection cost: what server parsers (expect_masked) received and what
# unmasked data frames build_frame/build_header made. See counters().
cdef unsigned long long _rx_bytes = 0
cdef unsigned long long _rx_messages = 0
cdef unsigned long long _tx_bytes = 0
cdef unsigned long long _tx_messages = 0


cdef inline void _count_rx_message() noexcept:
    global _rx_messages
    _rx_messages += 1


cdef inline void _count_tx(int opcode, Py_ssize_t length, bint fin, bint masked) noexcept:
    global _tx_bytes, _tx_messages
    if not masked and opcode <= OP_BINARY:
        _tx_bytes += <unsigned long long>length
        if fin:
            _tx_messages += 1


def counters():
    """``(messages_received, bytes_received, messages_sent, bytes_sent)`` of this
    process, server side: data messages and frame bytes fed to parsers that
    expect masked frames, and data frames (payload bytes; a message per final
    frame) built unmasked; see frames.pyi."""
    return _rx_messages, _rx_bytes, _tx_messages, _tx_bytes


cdef class FrameParser:
    """Incremental RFC 6455 parser: bytes in, in any chunking; messages out.

    See fastws_ext/frames.pyi for the contract.
    """

    def __cinit__(self):
        self._buf = NULL
        self._msg = NULL

    def __init__(self, on_message, on_control, *, expect_masked, max_size=1048576, inflate=None,
                 Limiter limiter=None):
        self._on_message = on_message
        self._limiter = limiter
        self._inflate = inflate
        self._rsv_allowed = RSV1 if inflate is not None else 0
        self._on_control = on_control
        self._expect_masked = bool(expect_masked)
        self.max_size = max_size
        self._utf8 = Utf8Validator()
        self._state = HEADER

    def __dealloc__(self):
        if self._lent_view is not None:
            self._forget_lend()
        free(self._buf)
        free(self._msg)

    # -- public surface -------------------------------------------------

    @property
    def max_size(self):
        return None if self._max_size < 0 else self._max_size

    @max_size.setter
    def max_size(self, value):
        if value is not None:
            value = int(value)
            if value < 0:
                raise ValueError(f"max_size must be >= 0 or None, not {value}")
            self._max_size = min(value, (1 << 63) - 1)
        else:
            self._max_size = -1

    @property
    def closed(self):
        return self._closed

    @property
    def failed(self):
        return self._failed

    @property
    def buffered(self):
        return self._buf_len + self._msg_len

    @property
    def reserved(self):
        """Bytes of memory this parser holds for unparsed input and the
        message in progress (allocated, not only used); see frames.pyi."""
        return self._buf_cap + self._msg_cap + (0 if self._out is None else PyBytes_GET_SIZE(self._out))

    @property
    def at_rest(self):
        return self._state == HEADER and self._buf_len == 0 and self._msg_opcode == 0

    @property
    def messages_received(self):
        return self._messages

    @property
    def frames_received(self):
        return self._frames

    @property
    def activity(self):
        return parser_activity(self)

    def wants_direct(self):
        """True while get_buffer() would lend the destination of the current
        data frame's payload (see frames.pyi)."""
        return parser_wants_direct(self)

    def release(self):
        """Free internal buffers that hold no data (call when idle)."""
        if self._busy:
            return
        self._forget_lend()
        if self._buf_len == 0 and self._buf != NULL:
            free(self._buf)
            self._buf = NULL
            self._buf_cap = 0
        if self._msg_len == 0 and self._msg != NULL:
            free(self._msg)
            self._msg = NULL
            self._msg_cap = 0

    def feed(self, data):
        self.feed_object(data)

    cdef int feed_object(self, object data) except -1:
        """``feed`` for C callers (fastws_ext.conn's data_received)."""
        cdef Py_buffer view
        if self._closed or self._failed:
            return 0
        if self._busy:
            raise RuntimeError("FrameParser.feed() called from one of its callbacks")
        if self._lent:
            self._forget_lend()
        global _rx_bytes
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        if self._expect_masked:
            _rx_bytes += view.len
        self._busy = True
        try:
            self._feed(<const unsigned char*>view.buf, view.len)
        finally:
            self._busy = False
            PyBuffer_Release(&view)
            if self._closed or self._failed:
                self._drop()
        return 0

    # -- asyncio.BufferedProtocol: get_buffer, then buffer_updated ---------

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """A writable memoryview for the next read; see frames.pyi."""
        global fastws_scratch_gen
        cdef unsigned char* mem
        if self._busy:
            raise RuntimeError("FrameParser.get_buffer() called from one of its callbacks")
        if fastws_scratch_busy:
            raise RuntimeError("FrameParser.get_buffer() called while another parser "
                               "of this thread parses the scratch buffer")
        self._forget_lend()
        if self._state == PAYLOAD and self._buf_len == 0 and self._remaining >= DIRECT_MIN:
            return self._lend_direct()
        mem = fastws_scratch(SCRATCH_SIZE)
        if mem == NULL:
            raise MemoryError()
        fastws_scratch_gen += 1
        self._lent = LENT_SCRATCH
        self._lent_ptr = mem
        self._lent_len = SCRATCH_SIZE
        self._lent_gen = fastws_scratch_gen
        return PyMemoryView_FromMemory(<char*>mem, SCRATCH_SIZE, PyBUF_WRITE)

    def buffer_updated(self, Py_ssize_t nbytes):
        """The first nbytes of the last get_buffer() view were received:
        the same as feed(bytes(view[:nbytes])); see frames.pyi."""
        global fastws_scratch_busy, _rx_bytes
        cdef int lent = self._lent
        self._lent = LENT_NONE
        if self._closed or self._failed:
            return
        if self._busy:
            raise RuntimeError("FrameParser.buffer_updated() called from one of its callbacks")
        if lent == LENT_NONE:
            raise RuntimeError("FrameParser.buffer_updated() without get_buffer() before it")
        if nbytes < 0 or nbytes > self._lent_len:
            raise ValueError(f"buffer_updated({nbytes}): the buffer holds {self._lent_len} bytes")
        if self._expect_masked:
            _rx_bytes += nbytes
        if lent == LENT_SCRATCH:
            if (self._lent_ptr != fastws_scratch_mem or self._lent_gen != fastws_scratch_gen
                    or fastws_scratch_busy):
                raise RuntimeError("FrameParser.buffer_updated(): the scratch buffer was "
                                   "lent again since get_buffer()")
            fastws_scratch_busy = 1
            self._busy = True
            try:
                # Whatever is left of the scratch (an incomplete header or
                # frame, or the rest after a raising callback) is copied into
                # _buf by _feed, so nothing refers to the scratch afterwards.
                self._feed(self._lent_ptr, nbytes)
            finally:
                fastws_scratch_busy = 0
                self._busy = False
                if self._closed or self._failed:
                    self._drop()
            return
        self._forget_lend()
        self._busy = True
        try:
            self._read_direct(nbytes)
        finally:
            self._busy = False
            if self._closed or self._failed:
                self._drop()

    cdef object _lend_direct(self):
        """Lend the destination of the current data frame's remaining payload
        (PAYLOAD, nothing buffered, at least DIRECT_MIN bytes to come)."""
        cdef unsigned char* dst
        cdef Py_ssize_t size
        cdef uint64_t want
        cdef Py_ssize_t room
        # The view covers the free room of the destination. When that room is
        # under RESERVE_FIRST / 4 (and the frame needs more), the destination
        # first grows to max(RESERVE_FIRST, twice what has arrived), within
        # the frame: geometrically as the payload comes, never from the
        # header alone.
        want = <uint64_t>(self._msg_len * 2 if self._msg_len > RESERVE_FIRST // 2 else RESERVE_FIRST)
        if want > <uint64_t>self._msg_len + self._remaining:
            want = <uint64_t>self._msg_len + self._remaining
        want -= <uint64_t>self._msg_len
        if self._out is not None or (
                self._msg_len == 0 and self._fin and self._msg_opcode == OP_BINARY
                and (self._max_size >= 0 or self._remaining <= PREALLOC_UNBOUNDED)):
            # As in _read_payload: the result of a single-frame binary message
            # is written in place, and handed out only once complete.
            room = 0 if self._out is None else PyBytes_GET_SIZE(self._out) - self._msg_len
            if room < RESERVE_FIRST // 4 and <uint64_t>room < self._remaining:
                self._out_reserve(<Py_ssize_t>want)
            size = PyBytes_GET_SIZE(self._out) - self._msg_len
            if size <= 0 or <uint64_t>size > self._remaining:
                raise SystemError("FrameParser: result buffer out of step with the frame")
            dst = <unsigned char*>PyBytes_AS_STRING(self._out) + self._msg_len
        else:
            room = self._msg_cap - self._msg_len
            if room < RESERVE_FIRST // 4 and <uint64_t>room < self._remaining:
                self._msg_reserve(self._msg_len + <Py_ssize_t>want)
            size = self._msg_cap - self._msg_len
            if <uint64_t>size > self._remaining:
                size = <Py_ssize_t>self._remaining
            dst = self._msg + self._msg_len
        view = PyMemoryView_FromMemory(<char*>dst, size, PyBUF_WRITE)
        self._lent = LENT_DIRECT
        self._lent_ptr = dst
        self._lent_len = size
        self._lent_view = view
        return view

    cdef int _read_direct(self, Py_ssize_t n) except -1:
        """n payload bytes arrived at _lent_ptr, where they belong: what
        _read_payload does with them after its memcpy."""
        cdef unsigned char* dst = self._lent_ptr
        if n == 0:
            return 0
        self._payload_read += <unsigned long long>n  # taken, valid or not
        if self._masked:
            self._key_offset = mask_inplace(dst, n, self._key, self._key_offset)
        # RFC 6455 8.1: text MUST be UTF-8; checked as the bytes arrive.
        if self._msg_opcode == OP_TEXT and not self._utf8.feed_ptr(dst, n):
            raise self._fail(InvalidUTF8("invalid UTF-8"))
        self._msg_len += n
        self._remaining -= <uint64_t>n
        if self._remaining == 0:
            self._end_frame()
        return 0

    cdef int _forget_lend(self) except -1:
        """Whatever get_buffer() lent is no longer valid.  The view of a
        direct lend is also released, so that a stale one cannot write into
        a message once it is handed out, unless a buffer is still exported
        from it (uvloop holds one until buffer_updated() returns): then it is
        released at the next call."""
        self._lent = LENT_NONE
        if self._lent_view is not None and (<PyMemoryViewObject*>self._lent_view).exports == 0:
            self._lent_view.release()
            self._lent_view = None
        return 0

    # -- feeding: where the bytes to parse are ---------------------------

    cdef int _feed(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t old = self._buf_len, added, off = 0
        if old:
            # Complete the buffered unit with the head of the chunk.
            added = n if (old >= TOPUP or n < TOPUP) else TOPUP
            self._buf_append(data, added)
            self._pos = 0
            try:
                self._parse(self._buf, old + added)
            except BaseException:
                off = self._settle(old, added, data, n)
                if off < n:
                    self._buf_append(data + off, n - off)
                raise
            off = self._settle(old, added, data, n)
            if off >= n:
                return 0
        # Parse the chunk where it is; keep only what is left of it.
        self._pos = off
        try:
            self._parse(data, n)
        finally:
            if not (self._closed or self._failed) and self._pos < n:
                self._buf_append(data + self._pos, n - self._pos)
        return 0

    cdef Py_ssize_t _settle(self, Py_ssize_t old, Py_ssize_t added,
                            const unsigned char* data, Py_ssize_t n) except -1:
        """After parsing _buf (old bytes + ``added`` from the chunk): where to
        go on in the chunk, or n if everything left is in _buf."""
        cdef Py_ssize_t used = self._pos
        if self._closed or self._failed:
            return n
        if used >= old:
            # Every byte buffered before was used; the rest of _buf is the
            # chunk itself, so go on there.
            self._buf_len = 0
            return used - old
        # Still inside the old bytes: the chunk was too short to complete the
        # unit (or a callback raised), so keep everything.
        self._buf_len = old + added - used
        memmove(self._buf, self._buf + used, self._buf_len)
        if added < n:
            self._buf_append(data + added, n - added)
        return n

    cdef int _parse(self, const unsigned char* data, Py_ssize_t n) except -1:
        """Parse data[_pos:n], delivering events in stream order."""
        while not self._closed:
            if self._state == HEADER:
                if not self._parse_header(data, n):
                    return 0
            elif not self._read_payload(data, n):
                return 0
        return 0

    # -- the state machine (same steps as fastws._py.frames) ------------

    cdef int _parse_header(self, const unsigned char* data, Py_ssize_t n) except -1:
        """One frame header at _pos: 0 if more bytes are needed, else 1."""
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t size
        cdef const unsigned char* p = data + pos
        cdef unsigned char b0, b1
        cdef int opcode
        cdef bint fin, masked, control
        cdef uint64_t length, total, limit
        cdef bytes payload

        # 1. RFC 6455 5.2: FIN, RSV1-3, opcode, MASK, 7-bit payload length.
        if avail < 2:
            return 0
        b0 = p[0]
        b1 = p[1]
        fin = (b0 & 0x80) != 0
        opcode = b0 & 0x0F
        masked = (b1 & 0x80) != 0
        length = b1 & 0x7F
        control = opcode >= OP_CLOSE

        # 2. RFC 6455 5.2: RSV1-3 "MUST be 0 unless an extension is negotiated
        #    that defines meanings for non-zero values."
        if b0 & RSV_MASK & ~self._rsv_allowed:
            raise self._fail(FrameError("RSV bits set"))

        # 3. RFC 6455 5.2: "If an unknown opcode is received, the receiving
        #    endpoint MUST _Fail the WebSocket Connection_".
        if not _is_opcode(opcode):
            raise self._fail(FrameError(f"reserved opcode {opcode}"))

        # 4. RFC 6455 5.4: control frames "MUST NOT be fragmented"; continuation
        #    only inside a message; no new message inside a message.
        if control:
            if not fin:
                raise self._fail(FrameError("fragmented control frame"))
        elif opcode == OP_CONTINUATION:
            if not self._msg_opcode:
                raise self._fail(FrameError("unexpected continuation frame"))
        elif self._msg_opcode:
            raise self._fail(FrameError("expected continuation frame"))

        # 4b. RFC 7692 6: RSV1 only on the first frame of a data message.
        if b0 & RSV1 and (control or opcode == OP_CONTINUATION):
            raise self._fail(FrameError("RSV1 set on a control frame" if control
                                        else "RSV1 set on a continuation frame"))

        # 5. RFC 6455 5.1: clients MUST mask, servers MUST NOT.
        if masked != self._expect_masked:
            raise self._fail(FrameError("unmasked frame" if self._expect_masked else "masked frame"))

        # 6. RFC 6455 5.5: control payload <= 125 bytes; RFC 6455 5.5.1: a close
        #    body starts with a 2-byte code, so 1 byte is never valid.
        if control:
            if length > MAX_CONTROL_PAYLOAD:
                raise self._fail(FrameError("control frame too long"))
            if opcode == OP_CLOSE and length == 1:
                raise self._fail(FrameError("close frame payload of 1 byte"))

        # 7. RFC 6455 5.2: 16-bit or 64-bit extended length (whose "most
        #    significant bit MUST be 0"), then the masking key.
        size = 2
        if length == 126:
            size = 4
        elif length == 127:
            size = 10
        if masked:
            size += 4
        if avail < size:
            return 0
        if length == 126:
            length = (<uint64_t>p[2] << 8) | p[3]
        elif length == 127:
            length = ((<uint64_t>p[2] << 56) | (<uint64_t>p[3] << 48) |
                      (<uint64_t>p[4] << 40) | (<uint64_t>p[5] << 32) |
                      (<uint64_t>p[6] << 24) | (<uint64_t>p[7] << 16) |
                      (<uint64_t>p[8] << 8) | <uint64_t>p[9])
            if length >> 63:
                raise self._fail(FrameError("frame length top bit set"))
        if masked:
            memcpy(self._key, p + size - 4, 4)

        # 8. Control frames: read whole, delivered at once (RFC 6455 5.4:
        #    "Control frames MAY be injected in the middle of a fragmented
        #    message").
        if control:
            if <uint64_t>avail < size + length:
                return 0
            payload = _payload_bytes(p + size, <Py_ssize_t>length,
                                     self._key if masked else NULL)
            if opcode == OP_CLOSE:
                self._check_close(payload)
            self._frames += 1
            self._pos = pos + size + <Py_ssize_t>length
            if opcode == OP_CLOSE:
                self._closed = True  # every later byte is ignored
            self._on_control(opcode, payload)
            return 1

        # 9. Data frame: max_size from the header, before any payload is kept.
        #    A compressed message: its compressed size here (compressed_limit),
        #    its inflated size while inflating.
        if self._max_size >= 0:
            total = <uint64_t>self._msg_len + length
            limit = <uint64_t>self._max_size
            if (b0 & RSV1) if opcode != OP_CONTINUATION else (self._msg_opcode & COMPRESSED):
                limit = limit + (limit >> 3) + 1024
            if total > limit:
                raise self._fail(MessageTooBig(
                    f"message too big ({total} > {limit} bytes)"))
        if opcode != OP_CONTINUATION:
            self._msg_opcode = opcode | (COMPRESSED if b0 & RSV1 else 0)
        self._fin = fin
        self._masked = masked
        self._remaining = length
        self._key_offset = 0
        self._pos = pos + size
        self._state = PAYLOAD
        return 1

    cdef int _read_payload(self, const unsigned char* data, Py_ssize_t n) except -1:
        """Take the data payload bytes that are here: 0 if more are needed."""
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t take
        cdef unsigned char* dst
        cdef const unsigned char* src
        cdef object result
        cdef int opcode = self._msg_opcode

        if self._fin and self._msg_len == 0 and self._remaining <= <uint64_t>avail and opcode < COMPRESSED:
            # Fast path: this frame is the whole message (or the rest of one
            # whose earlier fragments were empty) and all of it is here; no
            # byte of it has been seen yet, so the validator is at its start.
            take = <Py_ssize_t>self._remaining
            self._payload_read += <unsigned long long>take  # taken, valid or not
            if opcode == OP_BINARY:
                if self._out is None:
                    result = _payload_bytes(data + pos, take, self._key if self._masked else NULL)
                else:
                    # get_buffer() allocated it (then feed() came instead).
                    self._out_reserve(take)
                    result = self._out
                    self._out = None
                    if self._masked:
                        mask_copy(<unsigned char*>PyBytes_AS_STRING(result), data + pos, take, self._key, 0)
                    else:
                        memcpy(PyBytes_AS_STRING(result), data + pos, take)
            else:
                if self._masked:
                    self._msg_reserve(take)
                    mask_copy(self._msg, data + pos, take, self._key, 0)
                    src = self._msg
                else:
                    src = data + pos
                try:
                    # Strict UTF-8 (RFC 3629): the same verdict as the validator
                    # followed by complete(), on the same feed.
                    result = PyUnicode_DecodeUTF8(<const char*>src, take, NULL)
                except UnicodeDecodeError:
                    raise self._fail(InvalidUTF8("invalid UTF-8")) from None
            self._pos = pos + take
            self._remaining = 0
            self._frames += 1
            self._state = HEADER
            self._msg_opcode = 0
            self._messages += 1
            if self._expect_masked:
                _count_rx_message()
            if self._limiter is not None and limit_count(self._limiter, result):
                return 1  # refused before: dropped
            self._on_message(result)
            return 1

        take = <Py_ssize_t>self._remaining if self._remaining <= <uint64_t>avail else avail
        if take:
            self._payload_read += <unsigned long long>take  # taken, valid or not
            if self._out is not None or (
                    self._msg_len == 0 and self._fin and opcode == OP_BINARY
                    and (self._max_size >= 0 or self._remaining <= PREALLOC_UNBOUNDED)):
                # A single-frame binary message that spans feeds: its length
                # is known (and within max_size), so every byte is copied
                # once, into the result, which grows as the payload arrives.
                self._out_reserve(take)
                dst = <unsigned char*>PyBytes_AS_STRING(self._out) + self._msg_len
            else:
                self._msg_reserve(self._msg_len + take)
                dst = self._msg + self._msg_len
            if self._masked:  # copied and unmasked in one pass
                self._key_offset = mask_copy(dst, data + pos, take, self._key, self._key_offset)
            else:
                memcpy(dst, data + pos, take)
            # RFC 6455 8.1: text MUST be UTF-8; checked as the bytes arrive.
            if opcode == OP_TEXT and not self._utf8.feed_ptr(dst, take):
                raise self._fail(InvalidUTF8("invalid UTF-8"))
            self._msg_len += take
            self._pos = pos + take
            self._remaining -= <uint64_t>take
        if self._remaining:
            return 0
        self._end_frame()
        return 1

    cdef int _end_frame(self) except -1:
        """The current data frame's payload is all here: deliver the message
        if the frame is its last."""
        cdef object result
        cdef int opcode = self._msg_opcode
        # RFC 6455 8.1: a text message may not end inside a code point;
        # checked before the frame is counted, as an invalid byte is.
        if self._fin and opcode == OP_TEXT and not self._utf8.complete():
            raise self._fail(InvalidUTF8("invalid UTF-8"))
        if self._fin and opcode & COMPRESSED:
            # RFC 7692 7.2.2: inflate the whole message as one stream (inflate
            # appends 0x00 0x00 0xff 0xff and stops at max_size); RFC 6455
            # 8.1: the inflated text must be UTF-8.
            try:
                result = self._inflate(PyBytes_FromStringAndSize(<const char*>self._msg, self._msg_len))
            except ProtocolError as exc:
                raise self._fail(exc) from None
            if type(result) is not bytes:
                result = bytes(result)
            if opcode == (OP_TEXT | COMPRESSED):
                try:
                    result = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(result), PyBytes_GET_SIZE(result), NULL)
                except UnicodeDecodeError:
                    raise self._fail(InvalidUTF8("invalid UTF-8")) from None
            self._frames += 1
            self._state = HEADER
            self._msg_len = 0
            self._msg_opcode = 0
            self._msg_shrink()
            self._messages += 1
            if self._limiter is not None and limit_count(self._limiter, result):
                return 0  # refused before: dropped
            self._on_message(result)
            return 0
        self._frames += 1
        self._state = HEADER
        if not self._fin:
            return 0
        if opcode == OP_TEXT:
            try:
                result = PyUnicode_DecodeUTF8(<const char*>self._msg, self._msg_len, NULL)
            except UnicodeDecodeError:
                raise self._fail(InvalidUTF8("invalid UTF-8")) from None
        elif self._out is not None:
            result = self._out
            self._out = None
        else:
            result = PyBytes_FromStringAndSize(<const char*>self._msg, self._msg_len)
        self._msg_len = 0
        self._msg_opcode = 0
        self._msg_shrink()
        self._utf8.reset()
        self._messages += 1
        if self._expect_masked:
            _count_rx_message()
        if self._limiter is not None and limit_count(self._limiter, result):
            return 0  # refused before: dropped
        self._on_message(result)
        return 0

    cdef int _check_close(self, bytes payload) except -1:
        """RFC 6455 5.5.1 / 7.4: an empty body, or a valid code and a UTF-8 reason."""
        cdef Py_ssize_t n = len(payload)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
        cdef int code
        if n >= 2:
            code = (p[0] << 8) | p[1]
            if not is_valid_close_code(code):
                raise self._fail(FrameError(f"invalid close code {code}"))
            if not utf8_valid(p + 2, n - 2):
                raise self._fail(InvalidUTF8("invalid UTF-8"))
        return 0

    cdef object _fail(self, exc):
        """Enter the failed state; returns exc for ``raise self._fail(...)``."""
        self._failed = True
        return exc

    # -- buffers ----------------------------------------------------------

    cdef int _buf_append(self, const unsigned char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t need = self._buf_len + n, cap
        cdef unsigned char* mem
        if n <= 0:
            return 0
        if need > self._buf_cap:
            cap = self._buf_cap * 2
            if cap < need:
                cap = need
            if cap < TOPUP:
                cap = TOPUP
            mem = <unsigned char*>realloc(self._buf, cap)
            if mem == NULL:
                raise MemoryError()
            self._buf = mem
            self._buf_cap = cap
        memcpy(self._buf + self._buf_len, data, n)
        self._buf_len = need
        return 0

    cdef int _msg_reserve(self, Py_ssize_t size) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char* mem
        if size <= self._msg_cap:
            return 0
        cap = self._msg_cap * 2
        if cap < size:
            cap = size
        if cap < 1024:
            cap = 1024
        mem = <unsigned char*>realloc(self._msg, cap)
        if mem == NULL:
            raise MemoryError()
        self._msg = mem
        self._msg_cap = cap
        return 0

    cdef int _out_reserve(self, Py_ssize_t need) except -1:
        """Room for ``need`` more bytes (at most what remains of the frame) in
        _out, the result of a single-frame binary message, made if None. It
        grows geometrically from RESERVE_FIRST and never beyond the frame's
        length, so it is exactly that long once every byte is in."""
        cdef Py_ssize_t final = self._msg_len + <Py_ssize_t>self._remaining
        cdef Py_ssize_t want = self._msg_len + need, cap = 0, new
        cdef PyObject* obj
        if self._out is not None:
            cap = PyBytes_GET_SIZE(self._out)
            if want <= cap:
                return 0
        new = cap * 2
        if new < want:
            new = want
        if new < RESERVE_FIRST:
            new = RESERVE_FIRST
        if new > final:
            new = final
        if self._out is None:
            # With NULL: never the shared 1-byte object.
            self._out = PyBytes_FromStringAndSize(NULL, new)
            return 0
        # Nothing else refers to _out (it is handed out only once complete;
        # a direct lend's view points into it without a reference, and was
        # forgotten before this), so it may be resized in place.
        obj = <PyObject*>self._out
        Py_INCREF(self._out)
        self._out = None
        _PyBytes_Resize(&obj, new)  # on failure: obj freed, MemoryError
        self._out = <bytes>obj
        Py_DECREF(<object>obj)
        return 0

    cdef void _msg_shrink(self) noexcept:
        """A message ended: a large message buffer is not kept for the next."""
        if self._msg_cap > RESERVE_FIRST:
            free(self._msg)
            self._msg = NULL
            self._msg_cap = 0

    cdef void _drop(self) noexcept:
        """Closed or failed: nothing more will be parsed."""
        self._lent = LENT_NONE
        free(self._buf)
        free(self._msg)
        self._buf = NULL
        self._msg = NULL
        self._buf_len = self._buf_cap = 0
        self._msg_len = self._msg_cap = 0
        self._out = None
        self._remaining = 0
        self._msg_opcode = 0
        self._utf8.reset()


# -- building frames -----------------------------------------------------

cdef bytes _keys = b""
cdef Py_ssize_t _keys_pos = 0


cdef inline void _fresh_key(unsigned char* key) except *:
    """4 random bytes (RFC 6455 5.3: the masking key MUST be unpredictable),
    drawn from a buffer of os.urandom refilled when used up."""
    global _keys, _keys_pos
    if _keys_pos + 4 > len(_keys):
        _keys = os.urandom(4096)
        _keys_pos = 0
    memcpy(key, PyBytes_AS_STRING(_keys) + _keys_pos, 4)
    _keys_pos += 4


cdef int _check_args(int opcode, object length, bint fin, Py_ssize_t key_len, int rsv) except -1:
    if not _is_opcode(opcode):
        raise ValueError(f"invalid opcode {opcode!r}")
    if rsv & ~RSV_MASK:
        raise ValueError(f"rsv must use only the bits 0x70, not {rsv:#x}")
    if opcode >= OP_CLOSE:
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload too long ({length} > 125 bytes)")
        if not fin:
            raise ValueError("control frames cannot be fragmented (fin=False)")
    if length < 0 or length >> 63:
        raise ValueError(f"invalid payload length {length}")
    if key_len >= 0 and key_len != 4:
        raise ValueError("mask_key must be 4 bytes")
    return 0


cdef inline Py_ssize_t _header_size(uint64_t length, bint masked) noexcept nogil:
    cdef Py_ssize_t size = 2 if length < 126 else (4 if length < 65536 else 10)
    return size + 4 if masked else size


cdef Py_ssize_t _write_header(unsigned char* out, int opcode, uint64_t length, bint fin,
                              const unsigned char* key, int rsv) noexcept nogil:
    """Write the header at out; returns its size."""
    cdef Py_ssize_t i = 2
    cdef int k
    cdef unsigned char mbit = 0x80 if key != NULL else 0
    out[0] = (0x80 if fin else 0) | rsv | opcode
    # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the
    # length".
    if length < 126:
        out[1] = mbit | <unsigned char>length
    elif length < 65536:
        out[1] = mbit | 126
        out[2] = <unsigned char>(length >> 8)
        out[3] = <unsigned char>length
        i = 4
    else:
        out[1] = mbit | 127
        for k in range(8):
            out[2 + k] = <unsigned char>(length >> (56 - 8 * k))
        i = 10
    if key != NULL:
        memcpy(out + i, key, 4)
        i += 4
    return i


def build_header(int opcode, length, *, bint fin=True, mask_key=None, int rsv=0):
    """Only the header (2-14 bytes); see frames.pyi."""
    cdef unsigned char key[4]
    cdef unsigned char out[14]
    cdef const unsigned char* kp = NULL
    cdef Py_ssize_t size
    cdef Py_buffer view
    if mask_key is not None:
        PyObject_GetBuffer(mask_key, &view, PyBUF_SIMPLE)
        try:
            _check_args(opcode, length, fin, view.len, rsv)
            memcpy(key, view.buf, 4)
        finally:
            PyBuffer_Release(&view)
        kp = key
    else:
        _check_args(opcode, length, fin, -1, rsv)
    size = _write_header(out, opcode, <uint64_t>length, fin, kp, rsv)
    _count_tx(opcode, length, fin, kp != NULL)
    return PyBytes_FromStringAndSize(<const char*>out, size)


def build_frame(int opcode, payload=b"", *, bint fin=True, bint mask=False, mask_key=None,
                int rsv=0):
    """One complete frame (header + payload) in a single bytes object; see frames.pyi."""
    cdef unsigned char key[4]
    cdef const unsigned char* kp = NULL
    cdef Py_ssize_t key_len = -1
    cdef Py_buffer kview
    if mask_key is not None:
        PyObject_GetBuffer(mask_key, &kview, PyBUF_SIMPLE)
        key_len = kview.len
        if key_len == 4:
            memcpy(key, kview.buf, 4)
        PyBuffer_Release(&kview)
        kp = key
    elif mask:
        _fresh_key(key)
        kp = key
    return _frame(opcode, payload, fin, kp, key_len, rsv)


cdef object server_frame(int opcode, object payload):
    """``build_frame(opcode, payload)`` for C callers: one unmasked, final
    frame of a str (as UTF-8) or bytes-like payload."""
    return _frame(opcode, payload, True, NULL, -1, 0)


cdef inline object _frame(int opcode, object payload, bint fin, const unsigned char* kp,
                   Py_ssize_t key_len, int rsv):
    """The frame of ``payload`` (str: as UTF-8), masked with ``kp`` unless NULL;
    ``key_len`` is the length of a given mask key (-1: none given), checked
    with the other arguments."""
    cdef const char* src
    cdef Py_ssize_t length, size
    cdef Py_buffer view
    cdef bint have_view = False
    cdef bytes frame
    cdef unsigned char* out
    if PyUnicode_Check(payload):
        # UTF-8 straight from the str (cached; no copy for ASCII strings).
        src = PyUnicode_AsUTF8AndSize(payload, &length)
    else:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        have_view = True
        src = <const char*>view.buf
        length = view.len
    try:
        _check_args(opcode, length, fin, key_len, rsv)
        size = _header_size(<uint64_t>length, kp != NULL)
        frame = PyBytes_FromStringAndSize(NULL, size + length)
        out = <unsigned char*>PyBytes_AS_STRING(frame)
        _write_header(out, opcode, <uint64_t>length, fin, kp, rsv)
        memcpy(out + size, src, length)
        if kp != NULL:
            mask_inplace(out + size, length, kp, 0)
        _count_tx(opcode, length, fin, kp != NULL)
        return frame
    finally:
        if have_view:
            PyBuffer_Release(&view)


def lone_control(data, bint expect_masked):
    """``(opcode, payload)`` if ``data`` is exactly one complete, valid PING or
    PONG frame, else None (see frames.pyi).

    The keepalive path of an idle connection, whose parser has been released:
    its pong (or the peer's ping) is handled without making a parser. Only
    the case where every RFC 6455 5.2/5.5 rule is plainly met is taken: FIN
    set, RSV bits 0, opcode 0x9 or 0xA, MASK as expected, a 7-bit length of
    at most 125 (5.5: "All control frames MUST have a payload length of 125
    bytes or less"), and nothing before or after the frame. Anything else,
    valid or not, returns None and goes to a real parser, which applies the
    rules and their close codes.
    """
    cdef int opcode = lone_opcode(data, expect_masked)
    if opcode < 0:
        return None
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t head = 6 if expect_masked else 2
    return opcode, _payload_bytes(p + head, p[1] & 0x7F, p + 2 if expect_masked else NULL)


cdef int lone_opcode(object data, bint expect_masked) noexcept:
    """The opcode (0x9 or 0xA) if ``data`` is exactly one lone control frame
    as :func:`lone_control` takes it, else -1: the check without the payload
    (fastws_ext.core takes an idle connection's pong with it)."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, length, head
    if type(data) is not bytes:
        return -1
    n = PyBytes_GET_SIZE(data)
    if n < 2 or n > 131:
        return -1
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    if p[0] != (0x80 | OP_PING) and p[0] != (0x80 | OP_PONG):
        return -1
    if ((p[1] & 0x80) != 0) != expect_masked:
        return -1
    length = p[1] & 0x7F
    head = 6 if expect_masked else 2
    if length > 125 or n != head + length:
        return -1
    return p[0] & 0x0F
