# C-level surface of fastws_ext.upgrade (the Python contract is upgrade.pyi;
# the readable reference is fastws/_py/upgrade.py).


cdef class UpgradeReader:
    cdef readonly object _parser
    cdef object _head_of      # head(): the start of the 101 (status line, Date, ...)
    cdef object _head         # its latest answer, made in second _second
    cdef long long _second

    cdef bint _feed_data(self, bytes head, Py_ssize_t end) except -1
