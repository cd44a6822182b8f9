# C-level surface of fastws_ext.utf8 (cimported by frames.pyx).
from libc.stdint cimport uint32_t

cdef class Utf8Validator:
    cdef uint32_t state   # 0 = at a code point boundary; UTF8_REJECT = failed
    cdef bint feed_ptr(self, const unsigned char* data, Py_ssize_t length) noexcept nogil
        # Validate the next bytes of the stream; False as soon as the stream can
        # no longer be valid UTF-8 (and stays False for every later call).
    cpdef bint feed(self, data)
    cpdef bint complete(self)
    cpdef void reset(self)

cdef bint utf8_valid(const unsigned char* data, Py_ssize_t length) noexcept nogil
    # Whole-buffer check: is data[0:length] complete, valid UTF-8?
