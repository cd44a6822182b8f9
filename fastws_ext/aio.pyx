# cython: language_level=3
"""Waking the handler task that waits for a message.

The Cython build of fastws/_py/aio.py (same names, same behaviour; its module
docstring explains why: the waiting task runs at once, inside
``data_received``, instead of one loop step later through ``call_soon``).
"""
import asyncio

cdef object _current_task = asyncio.current_task


cpdef wake(object waiter, object result, object loop):
    """Set ``result`` on the pending asyncio Future ``waiter`` and run the
    task that awaits it now (plain ``set_result`` when a task is running on
    the loop, or when the future has no callback or several)."""
    callbacks = waiter._callbacks  # a list of (callback, context) pairs, or None
    if callbacks and len(<list>callbacks) == 1 and _current_task(loop) is None:
        callback, context = (<list>callbacks)[0]
        waiter.remove_done_callback(callback)
        waiter.set_result(result)
        context.run(callback, waiter)
    else:
        waiter.set_result(result)
