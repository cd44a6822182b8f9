# C-level surface of fastws_ext.mask (cimported by frames.pyx).

cdef Py_ssize_t mask_inplace(unsigned char* data, Py_ssize_t length,
                             const unsigned char* key, Py_ssize_t offset) noexcept nogil
    # XOR data[0:length] in place with key[(offset + i) % 4]; returns
    # (offset + length) % 4, the key offset for the next piece of the payload.

cdef Py_ssize_t mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t length,
                          const unsigned char* key, Py_ssize_t offset) noexcept nogil
    # dst[0:length] = src[0:length] XOR key[(offset + i) % 4], in one pass (a
    # copy and its unmasking together); returns (offset + length) % 4.
