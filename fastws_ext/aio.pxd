# C-level surface of fastws_ext.aio (the Python contract is aio.pyi; the
# readable reference is fastws/_py/aio.py).

cpdef wake(object waiter, object result, object loop)
