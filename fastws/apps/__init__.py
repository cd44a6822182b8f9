"""The applications the ``fastws`` command serves: ``echo``, ``chat`` (a chat
room with a browser page) and ``push`` (topics over WebSocket, publishing over
HTTP). See docs/guide/cli.md."""
from .echo import EchoListener, echo_handler

__all__ = ["EchoListener", "echo_handler"]
