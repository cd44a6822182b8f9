# C-level surface of fastws_ext.fanout (the Python contract is fanout.pyi; the
# readable reference is fastws/_py/fanout.py).

cpdef Py_ssize_t fanout(object conns, object frame, Py_ssize_t limit, list slow) except -1
