"""Connection and server options, validated once at start-up.

One ``Options`` object is shared by every connection of a server (or by one
client connection), so options cost nothing per connection.
See docs/guide/options.md.
"""
from __future__ import annotations

import math
from typing import Any, Tuple, TypeVar, Union

from .exceptions import ConfigError
from .ratelimit import rate_option

__all__ = ["Options"]

_T = TypeVar("_T")
# rate_limit / rate_limit_bytes: None (off), a rate per second, (rate, burst) or "100/s"
RateSpec = Union[float, str, Tuple[float, float], None]


def _positive(name: str, value: _T, *, allow_none: bool = False, integer: bool = False,
              allow_zero: bool = False) -> _T:
    if value is None:
        if allow_none:
            return value
        raise ConfigError(f"{name} must be set")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, not {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return value


def _int_range(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


class Options:
    """Every tunable of a connection, with its default.

    max_size            largest incoming message in bytes (None: no limit); 1 MiB
    max_queue           messages buffered for ``recv()`` before reading pauses; 16
    write_limit         write-buffer high-water mark in bytes: above it ``send()``
                        returns False (listener) or waits (handler API); 64 KiB
    max_write_buffer    hard limit: a peer that lets more than this pile up is
                        cut off with 1008 and its memory released; 16 MiB + write_limit
    write_timeout       seconds the peer may leave the write buffer above
                        write_limit before it is cut off with 1013 (None: never); 60
    handshake_timeout   seconds to complete the opening handshake; 10
    close_timeout       seconds to complete the closing handshake; 10
    ping_interval       seconds of silence before a ping (None: no keepalive); 20
    ping_timeout        seconds to wait for any frame after a ping; 20
    idle_timeout        seconds without a data message from the peer before the
                        connection is closed with 1000 (None: never); None
    timer_tick          resolution of the loop's timer wheel in seconds; 1.0
    max_head            largest HTTP request/response head in bytes; 8 KiB
    max_headers         most header lines in the head; 100
    slow_consumer       what a publish/broadcast does to a subscriber whose write
                        buffer is above slow_consumer_limit: "close" (cut it off,
                        1013) or "drop" (skip this message for it); "close"
    slow_consumer_limit write-buffer bytes above which a subscriber is slow; at
                        least write_limit, at most max_write_buffer; 1 MiB
                        (the policy is written down in fastws/pubsub.py)

    permessage-deflate (RFC 7692; fastws/deflate.py, memory per tier in
    bench/README.md):

    compression         None (off) or "deflate"; None on the server (memory
                        first), "deflate" for fastws.connect (like browsers)
    compression_threshold  messages shorter than this (bytes; str: characters)
                        are sent uncompressed; 128
    server_no_context_takeover  the server compresses every message on its own
                        (server: always answered so; client: asked for). With it
                        the server holds no compressor per connection (one per
                        thread is shared) and a published message is compressed
                        once for all subscribers; False
    client_no_context_takeover  the same for the client's messages (server:
                        required of the client; client: offered). The receiving
                        side then holds an inflater only while it inflates; False
    server_max_window_bits  log2 of the server's LZ77 window, 9-15 (server: its
                        own and never above the client's request; client: asked
                        for if below 15); 12
    client_max_window_bits  the same for the client's window, 9-15 (server:
                        asked for when the client offers the parameter); 12
    deflate_mem_level   zlib memLevel 1-9 of a compressor (memory vs ratio); 5
    deflate_level       zlib compression level 0-9 (speed vs ratio); 6

    Rate limits per connection (server side; docs/guide/access-control.md):

    rate_limit          data messages per second from the peer: None (off),
                        (rate, burst), a number (burst twice it) or a string
                        "100/s", "100/s:300"; over it the connection is closed
                        with 1008 "rate limit"; None
    rate_limit_bytes    the same for message bytes (text: characters), e.g.
                        "1MiB/s"; None
    """

    __slots__ = (
        "max_size",
        "max_queue",
        "write_limit",
        "max_write_buffer",
        "write_timeout",
        "handshake_timeout",
        "close_timeout",
        "ping_interval",
        "ping_timeout",
        "idle_timeout",
        "timer_tick",
        "max_head",
        "max_headers",
        "slow_consumer",
        "slow_consumer_limit",
        "compression",
        "compression_threshold",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "deflate_mem_level",
        "deflate_level",
        "rate_limit",
        "rate_limit_bytes",
        "_rate",  # the codec's RateLimits, set by the server when a rate limit is on
    )

    def __init__(
        self,
        *args: object,
        max_size: int | None = 2**20,
        max_queue: int = 16,
        write_limit: int = 2**16,
        max_write_buffer: int | None = None,
        write_timeout: float | None = 60.0,
        handshake_timeout: float = 10.0,
        close_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        idle_timeout: float | None = None,
        timer_tick: float = 1.0,
        max_head: int = 8192,
        max_headers: int = 100,
        slow_consumer: str = "close",
        slow_consumer_limit: int = 2**20,
        compression: str | None = None,
        compression_threshold: int = 128,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int = 12,
        client_max_window_bits: int = 12,
        deflate_mem_level: int = 5,
        deflate_level: int = 6,
        rate_limit: RateSpec = None,
        rate_limit_bytes: RateSpec = None,
        **unknown: object,
    ) -> None:
        if args or unknown:
            names = ", ".join(sorted(unknown)) or "positional arguments"
            raise ConfigError(f"unknown option(s): {names}")
        self.max_size = _positive("max_size", max_size, allow_none=True, integer=True)
        self.max_queue = _positive("max_queue", max_queue, integer=True)
        self.write_limit = _positive("write_limit", write_limit, integer=True)
        if max_write_buffer is None:
            max_write_buffer = 16 * 2**20 + self.write_limit
        self.max_write_buffer = _positive("max_write_buffer", max_write_buffer, integer=True)
        if self.max_write_buffer < self.write_limit:
            raise ConfigError(
                f"max_write_buffer ({self.max_write_buffer}) must be >= write_limit ({self.write_limit})"
            )
        self.write_timeout = _positive("write_timeout", write_timeout, allow_none=True)
        self.handshake_timeout = _positive("handshake_timeout", handshake_timeout)
        self.close_timeout = _positive("close_timeout", close_timeout)
        self.ping_interval = _positive("ping_interval", ping_interval, allow_none=True)
        self.ping_timeout = _positive("ping_timeout", ping_timeout)
        self.idle_timeout = _positive("idle_timeout", idle_timeout, allow_none=True)
        self.timer_tick = _positive("timer_tick", timer_tick)
        if self.timer_tick > 60:
            raise ConfigError(f"timer_tick must be <= 60 seconds, got {timer_tick!r}")
        self.max_head = _positive("max_head", max_head, integer=True)
        if self.max_head < 256:
            raise ConfigError(f"max_head must be >= 256 bytes, got {max_head!r}")
        self.max_headers = _positive("max_headers", max_headers, integer=True)
        if slow_consumer not in ("close", "drop"):
            raise ConfigError(f'slow_consumer must be "close" or "drop", got {slow_consumer!r}')
        self.slow_consumer = slow_consumer
        self.slow_consumer_limit = _positive("slow_consumer_limit", slow_consumer_limit, integer=True)
        # The fan-out reads a subscriber's buffer size only once it is above
        # write_limit (the transport's pause_writing), so a lower limit could
        # not be seen; above max_write_buffer it would outlive the hard limit.
        if not self.write_limit <= self.slow_consumer_limit <= self.max_write_buffer:
            raise ConfigError(
                f"slow_consumer_limit ({self.slow_consumer_limit}) must be between write_limit "
                f"({self.write_limit}) and max_write_buffer ({self.max_write_buffer})"
            )

        if compression not in (None, "deflate"):
            raise ConfigError(f'compression must be None or "deflate", got {compression!r}')
        self.compression = compression
        if (isinstance(compression_threshold, bool) or not isinstance(compression_threshold, int)
                or compression_threshold < 0):
            raise ConfigError(f"compression_threshold must be a whole number >= 0, got {compression_threshold!r}")
        self.compression_threshold = compression_threshold
        for name, value in (("server_no_context_takeover", server_no_context_takeover),
                            ("client_no_context_takeover", client_no_context_takeover)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False, got {value!r}")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        # 8 is valid on the wire (RFC 7692 7.1.2) but zlib cannot make a raw
        # deflate stream with a 256-byte window, so 9 is the smallest setting.
        self.server_max_window_bits = _int_range("server_max_window_bits", server_max_window_bits, 9, 15)
        self.client_max_window_bits = _int_range("client_max_window_bits", client_max_window_bits, 9, 15)
        self.deflate_mem_level = _int_range("deflate_mem_level", deflate_mem_level, 1, 9)
        self.deflate_level = _int_range("deflate_level", deflate_level, 0, 9)
        self.rate_limit: tuple[float, float] | None = rate_option("rate_limit", rate_limit)
        self.rate_limit_bytes: tuple[float, float] | None = rate_option("rate_limit_bytes", rate_limit_bytes)
        self._rate: Any = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name[0] != "_")
        return f"Options({fields})"
