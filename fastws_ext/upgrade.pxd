# C-level surface of fastws_ext.upgrade (the Python contract is upgrade.pyi;
# the readable reference is fastws/_py/upgrade.py).


cdef class UpgradeReader:
    cdef readonly object _parser
    cdef object _head_of      # head(): the start of the 101 (status line, Date, ...)
    cdef object _head         # its latest answer, made in second _second
    cdef long long _second

    cdef bint _feed_data(self, bytes head, Py_ssize_t end) except -1
    cdef bytes _current_head(self)
    cdef Py_ssize_t _take(self, object data, Py_ssize_t max_head, Py_ssize_t max_headers,
                          Py_ssize_t* line, Py_ssize_t* key, Py_ssize_t* head_end) except -2
