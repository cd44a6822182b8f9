"""The constants shared by every layer: defined here once, for Python and Cython.

Connection states, opcodes (RFC 6455 5.2), close codes (RFC 6455 7.4.1) and
the frame limits. ``setup.py`` writes every integer of ``__all__`` into
``fastws_ext/constants.pxd`` as a C enum, so the extension compiles them as
C constants; nothing else defines them. This module imports nothing.

See docs/design/architecture.md.
"""

__all__ = [
    # connection states (fastws.protocol.Connection._state)
    "CONNECTING", "OPEN", "CLOSING", "CLOSED",
    # RFC 6455 5.2 opcodes
    "OP_CONTINUATION", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    # first header byte: RSV1 marks a compressed message (RFC 7692 6)
    "RSV1",
    # RFC 6455 5.5: control frames carry at most 125 bytes of payload
    "MAX_CONTROL_PAYLOAD",
    # server payloads at least this large are written next to their header (no copy)
    "LARGE_PAYLOAD",
    # RFC 6455 7.4.1 close codes
    "CLOSE_NORMAL", "CLOSE_GOING_AWAY", "CLOSE_PROTOCOL_ERROR", "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS", "CLOSE_ABNORMAL", "CLOSE_INVALID_DATA", "CLOSE_POLICY_VIOLATION",
    "CLOSE_MESSAGE_TOO_BIG", "CLOSE_MANDATORY_EXTENSION", "CLOSE_INTERNAL_ERROR",
    "CLOSE_SERVICE_RESTART", "CLOSE_TRY_AGAIN_LATER", "CLOSE_BAD_GATEWAY",
    # fastws's own (4000-4999 are the application's range)
    "CLOSE_TOKEN_EXPIRED",
]

CONNECTING = 0
OPEN = 1
CLOSING = 2
CLOSED = 3

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

RSV1 = 0x40
MAX_CONTROL_PAYLOAD = 125
LARGE_PAYLOAD = 16384

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # never sent: "no status code was present"
CLOSE_ABNORMAL = 1006  # never sent: "closed without a close frame"
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_GATEWAY = 1014
# a token (``ws.user["exp"]``) expired and was not refreshed in time
# (docs/guide/access-control.md#token-expiry)
CLOSE_TOKEN_EXPIRED = 4001

STATE_NAMES = ("CONNECTING", "OPEN", "CLOSING", "CLOSED")
