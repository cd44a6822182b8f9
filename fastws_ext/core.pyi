"""The keepalive core of a connection (fastws.protocol.Connection's base class).

Same API in fastws._py.core (see docs/design/timers.md): ``on_timer`` (the wheel's
callback: keepalive pings, write/idle/handshake timeouts) and
``data_received`` (asyncio.Protocol: the parser, a lone pong while idle, or
the handshake), C in the extension so that an idle connection's ping and pong
run no Python frame.
"""
from typing import Any, Union

from .wheel import TimerEntry

PING_SERVER: bytes

class ConnectionCore(TimerEntry):
    _keepalive_at: float      # inf: not set
    _ping_sent_at: float
    _write_deadline: float
    _idle_at: float
    _last_frames: int         # -1: a lone pong came since the last check
    _is_client: bool
    _general_send: bool       # every send goes through _send_general (client: masked; deflate)
    _pong_hook: bool          # False: pongs need no _on_pong call
    _direct_ok: bool          # True: data_received may call _direct_reads_begin(parser)
    _paused_writing: bool     # the transport is above write_limit
    _ka_counters: object      # None, or an object with a pings_sent counter
    def _open_at(self, now: float) -> float: ...
    def _open_timer(self, driver: Any) -> None: ...
    def on_timer(self, now: float) -> Union[float, None]: ...
    def data_received(self, data: bytes) -> None: ...

def conn_send(self: Any, data: str | bytes | bytearray | memoryview) -> bool: ...
def ws_send(self: Any, data: str | bytes | bytearray | memoryview) -> Any: ...

def gc_untrack(obj: object) -> None:
    """Take obj out of the cyclic GC's lists while something else holds it."""
def gc_track(obj: object) -> None:
    """Put obj back in the cyclic GC's lists (if a GC object, not tracked)."""
