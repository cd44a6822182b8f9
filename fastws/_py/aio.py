"""Waking the handler task that waits for a message: the readable reference
of ``fastws_ext.aio`` (same API, same behaviour).

When a message arrives for an ``async def handler(ws)`` that is waiting in
``recv()`` / ``async for``, the plain way is ``waiter.set_result(message)``:
the asyncio Future then schedules the waiting task's wake-up with
``loop.call_soon``, and the handler runs one loop step later, through a
Handle, the ready queue and one more pass of the event loop. That detour is
about 1,300 instructions per message (callgrind, bench/README.md).

:func:`wake` takes the single done-callback off the future (the awaiting
task's wake-up, with the task's context), sets the result, and runs the
callback at once, inside ``data_received``: the handler sees the message and
what it sends reaches the socket before the parser reads on, the way the
listener API's ``on_message`` runs. The future stays a real asyncio Future
(the C Task's fast path), so cancellation, ``wait_for``, ``timeout`` and
``shield`` behave as always.

It is the plain ``set_result`` when a task is running on the loop (a wake-up
cannot nest inside another task's step) or when the future has no callback or
several.
"""
from __future__ import annotations

import asyncio

__all__ = ["wake"]

_current_task = asyncio.current_task


def wake(waiter, result, loop) -> None:
    """Set ``result`` on the pending asyncio Future ``waiter`` and run the
    task that awaits it now (see the module docstring)."""
    callbacks = waiter._callbacks  # a list of (callback, context) pairs, or None
    if callbacks and len(callbacks) == 1 and _current_task(loop) is None:
        callback, context = callbacks[0]
        waiter.remove_done_callback(callback)
        waiter.set_result(result)
        context.run(callback, waiter)
    else:
        waiter.set_result(result)
