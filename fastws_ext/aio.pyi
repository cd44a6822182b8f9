"""Waking the handler task that waits for a message. Same API in fastws._py.aio."""
import asyncio
from typing import Any

def wake(waiter: "asyncio.Future[Any]", result: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Set ``result`` on the pending Future ``waiter`` and run the single task
    that awaits it now, in its context (instead of one loop step later through
    call_soon). Plain ``set_result`` when a task is running on ``loop`` or the
    future has no callback or several."""
