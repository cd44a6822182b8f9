"""The echo application of ``fastws echo``: every message back, text as text
and binary as binary, on either API level. See docs/guide/cli.md."""
from __future__ import annotations

from ..listener import Listener

__all__ = ["EchoListener", "echo_handler"]


class EchoListener(Listener):
    """Echo every message back (low-level API)."""

    __slots__ = ()

    def on_message(self, data) -> None:
        self.ws.send(data)


async def echo_handler(ws) -> None:
    """Echo every message back (high-level API)."""
    async for message in ws:
        await ws.send(message)
