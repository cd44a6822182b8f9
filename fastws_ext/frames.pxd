# C-level surface of fastws_ext.frames.  The parser's fields are private: they
# are declared here only because Cython requires every attribute of a cdef
# class declared in a .pxd to be declared in it.
from libc.stdint cimport int64_t, uint64_t

from fastws_ext.limit cimport Limiter
from fastws_ext.utf8 cimport Utf8Validator


cdef class FrameParser:
    cdef object _on_message
    cdef object _on_control
    cdef bint _expect_masked
    cdef int _rsv_allowed             # RSV1 with inflate, else 0 (beside the bint: no padding)
    cdef int64_t _max_size            # -1: no limit
    cdef object _inflate              # permessage-deflate: inflate(bytes) -> bytes; None: off
    cdef Limiter _limiter             # rate limits: counts each data message first; None: off

    # Received bytes not parsed yet: an incomplete header or control frame
    # (and, after a callback raised, the rest of the stream).
    cdef unsigned char* _buf
    cdef Py_ssize_t _buf_len
    cdef Py_ssize_t _buf_cap
    cdef Py_ssize_t _pos              # parse position in the region being parsed

    cdef int _state                   # HEADER or PAYLOAD
    # The data frame whose payload is being read (PAYLOAD).
    cdef bint _fin
    cdef bint _masked
    cdef uint64_t _remaining
    cdef unsigned char _key[4]
    cdef Py_ssize_t _key_offset

    # The message being assembled (unmasked): opcode 0 when none.
    cdef int _msg_opcode
    cdef unsigned char* _msg
    cdef Py_ssize_t _msg_len
    cdef Py_ssize_t _msg_cap
    cdef Utf8Validator _utf8
    # A single-frame binary message spanning feeds is written straight into
    # its result (then _msg_len counts the bytes written there).
    cdef bytes _out

    cdef bint _closed
    cdef bint _failed
    cdef bint _busy                   # inside feed()/buffer_updated(): no re-entry
    cdef unsigned long long _frames
    cdef unsigned long long _payload_read  # data payload bytes taken (activity: with _frames)
    cdef unsigned long long _messages

    # What the last get_buffer() lent, valid until the next call of any method:
    # LENT_NONE, LENT_SCRATCH (this thread's scratch buffer, generation
    # _lent_gen) or LENT_DIRECT (the rest of the current data frame's payload
    # in _out or _msg, viewed by _lent_view).
    cdef int _lent
    cdef unsigned char* _lent_ptr
    cdef Py_ssize_t _lent_len
    cdef unsigned long long _lent_gen
    cdef object _lent_view

    cdef int feed_object(self, object data) except -1
    cdef int _feed(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef Py_ssize_t _settle(self, Py_ssize_t old, Py_ssize_t added,
                            const unsigned char* data, Py_ssize_t n) except -1
    cdef int _parse(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _parse_header(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _read_payload(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _end_frame(self) except -1
    cdef object _lend_direct(self)
    cdef int _read_direct(self, Py_ssize_t n) except -1
    cdef int _forget_lend(self) except -1
    cdef int _check_close(self, bytes payload) except -1
    cdef object _fail(self, exc)
    cdef int _buf_append(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int _msg_reserve(self, Py_ssize_t size) except -1
    cdef int _out_reserve(self, Py_ssize_t need) except -1
    cdef void _msg_shrink(self) noexcept
    cdef void _drop(self) noexcept


cdef enum:
    # Parser states.
    HEADER = 0
    PAYLOAD = 1
    # get_buffer() lends the destination of the payload itself when at least
    # this much of the current data frame is still to come.  A direct read
    # stops at the end of the frame (the next header needs another read), so
    # it pays off only when the copy it saves (about 3 us for 64 KiB) is worth
    # more than that extra trip through the loop (1-3 us); below, the scratch
    # path reads the payload and the frames after it in one go.
    DIRECT_MIN = 64 * 1024


# FrameParser.wants_direct() for C callers (fastws_ext.core's data_received):
# get_buffer() would now lend the rest of a data frame's payload.
cdef inline bint parser_wants_direct(FrameParser p) noexcept:
    return (p._state == PAYLOAD and p._buf_len == 0 and p._remaining >= DIRECT_MIN
            and not p._closed and not p._failed)


# FrameParser.activity for C callers (fastws_ext.core's keepalive): frames
# plus the data payload bytes taken.
cdef inline unsigned long long parser_activity(FrameParser p) noexcept:
    return p._frames + p._payload_read


cdef object server_frame(int opcode, object payload)
cdef int lone_opcode(object data, bint expect_masked) noexcept
