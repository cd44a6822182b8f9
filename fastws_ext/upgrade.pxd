# C-level surface of fastws_ext.upgrade (the Python contract is upgrade.pyi;
# the readable reference is fastws/_py/upgrade.py).


cdef class UpgradeReader:
    cdef readonly object _parser
