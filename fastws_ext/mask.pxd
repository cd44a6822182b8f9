# C-level surface of fastws_ext.mask (cimported by frames.pyx).

cdef Py_ssize_t mask_inplace(unsigned char* data, Py_ssize_t length,
                             const unsigned char* key, Py_ssize_t offset) noexcept nogil
    # XOR data[0:length] in place with key[(offset + i) % 4]; returns
    # (offset + length) % 4, the key offset for the next piece of the payload.
