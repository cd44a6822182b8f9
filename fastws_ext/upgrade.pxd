# C-level surface of fastws_ext.upgrade (the Python contract is upgrade.pyi;
# the readable reference is fastws/_py/upgrade.py).


cdef class UpgradeReader:
    cdef readonly object on_url
    cdef readonly object on_header
    cdef readonly object _parser
    cdef dict _fields
    cdef list _url
    cdef object _request_cls
    cdef object _headers_cls
