# C-level surface of fastws_ext.headpack (the Python contract is headpack.pyi;
# the readable reference is fastws/_py/headpack.py).

cdef object pack_at(const char* b, Py_ssize_t n, bytes block)
