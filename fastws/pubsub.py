"""Topics, publish and broadcast: the server's subscriber registry.

The ``Server`` owns one ``Topics``; connections reach it through
``ws.subscribe``/``ws.unsubscribe``, the server through ``publish``,
``broadcast``, ``cork`` and ``publish_many``. A publish builds the frame once
and writes the same bytes to every subscriber (``fanout``, C in the
extension); it never blocks and never raises because of one client. The
registry (topic -> dict of connections, connection -> its topics) lives here,
so a connection that never subscribes costs nothing. The slow-consumer policy
(``slow_consumer_limit``, ``slow_consumer="close"|"drop"``) and corked bursts
are described on the docs page. Everything runs in the server's event loop.
See docs/guide/pubsub.md.
"""
from __future__ import annotations

import logging

from .codec import build_frame, fanout
from .constants import CLOSING, OP_BINARY, OP_TEXT, OPEN, RSV1
from .deflate import compress
from .exceptions import CLOSE_TRY_AGAIN_LATER

__all__ = ["Topics", "SLOW_CONSUMER_POLICIES", "compressed_fanout"]

logger = logging.getLogger("fastws.pubsub")

SLOW_CONSUMER_POLICIES = ("close", "drop")


class Topics:
    """The subscriber registry and the publish path of one Server."""

    __slots__ = ("_subs", "_of", "_limit", "_close_slow", "stats", "_corked", "_runs", "_run_bytes",
                 "_cork_limit", "_auto", "hook", "members_hook", "_fanout")

    def __init__(self, options):
        self._subs: dict = {}   # topic -> {conn: None}
        self._of: dict = {}     # conn -> topic (str) or set of topics
        self._limit = options.slow_consumer_limit
        self._close_slow = options.slow_consumer == "close"
        # compression on: compressed_fanout compresses once per setting
        # (single publishes; corked bursts go out as plain frames, which
        # RFC 7692 allows: compression is per message)
        self._fanout = None if options.compression is None else compressed_fanout
        self.stats = {"publishes": 0, "deliveries": 0, "slow_consumer_drops": 0, "slow_consumer_closes": 0,
                      "corked_writes": 0}
        # Cork (see "Bursts" in the module docstring): while _corked > 0,
        # publishes are queued as runs [topic, frames] and written at uncork.
        self._corked = 0
        self._runs: list = []
        self._run_bytes = 0
        self._cork_limit = options.write_limit  # queued bytes that force a flush
        self._auto = False                      # an uncork is scheduled with call_soon
        # hook.topic_added(topic) / hook.topic_removed(topic): the broker
        # (fastws/broker.py) follows which topics have local subscribers.
        self.hook = None
        # members_hook.joined(conn, topic) / .left(conn, topic): presence
        # (fastws/presence.py) follows each subscription.
        self.members_hook = None

    # ------------------------------------------------------------ membership
    def subscribe(self, conn, topic: str) -> None:
        if type(topic) is not str:
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if self._runs:
            self._flush()  # it gets what is published from now on, not what is queued
        subs = self._subs.get(topic)
        if subs is None:
            subs = self._subs[topic] = {}
            if self.hook is not None:
                self.hook.topic_added(topic)
        elif conn in subs:
            return
        subs[conn] = None
        if self.members_hook is not None:
            self.members_hook.joined(conn, topic)
        of = self._of
        mine = of.get(conn)
        if mine is None:
            of[conn] = topic
        elif type(mine) is str:
            of[conn] = {mine, topic}
        else:
            mine.add(topic)

    def unsubscribe(self, conn, topic: str) -> bool:
        """Remove one subscription; False if there was none."""
        of = self._of
        mine = of.get(conn)
        if mine is None:
            return False
        if type(mine) is str:
            if mine != topic:
                return False
            if self._runs:
                self._flush()  # it still gets what was published before
            del of[conn]
        else:
            if topic not in mine:
                return False
            if self._runs:
                self._flush()
            mine.discard(topic)
            if len(mine) == 1:
                of[conn] = next(iter(mine))
        self._leave(conn, topic)
        return True

    def forget(self, conn) -> None:
        """Remove every subscription of ``conn`` (it closed)."""
        mine = self._of.pop(conn, None)
        if mine is None:
            return
        if type(mine) is str:
            self._leave(conn, mine)
        else:
            for topic in mine:
                self._leave(conn, topic)

    def _leave(self, conn, topic: str) -> None:
        subs = self._subs[topic]
        del subs[conn]
        if self.members_hook is not None:
            self.members_hook.left(conn, topic)
        if not subs:
            del self._subs[topic]
            if self.hook is not None:
                self.hook.topic_removed(topic)

    def topics_of(self, conn) -> frozenset:
        mine = self._of.get(conn)
        if mine is None:
            return frozenset()
        if type(mine) is str:
            return frozenset((mine,))
        return frozenset(mine)

    def subscribers(self, topic: str) -> int:
        subs = self._subs.get(topic)
        return 0 if subs is None else len(subs)

    def members(self, topic: str) -> list:
        """The connections subscribed to ``topic``."""
        subs = self._subs.get(topic)
        return [] if subs is None else list(subs)

    def topics(self) -> frozenset:
        return frozenset(self._subs)

    @property
    def any(self) -> bool:
        """Whether any connection is subscribed to anything."""
        return bool(self._of)

    # ------------------------------------------------------------ publishing
    def publish(self, topic: str, data) -> int:
        stats = self.stats
        stats["publishes"] += 1
        subs = self._subs.get(topic)
        if subs is None:
            return 0
        if self._corked:
            return self._queue(topic, subs, data)
        return self._send(subs, data)

    def broadcast(self, conns, data) -> int:
        self.stats["publishes"] += 1
        if self._runs:
            self._flush()  # in order after what is queued; a broadcast is not corked
        return self._send(conns, data)

    def _send(self, conns, data) -> int:
        frame = build_frame(OP_TEXT if type(data) is str else OP_BINARY, data)
        slow = []
        if self._fanout is None:
            n = fanout(conns, frame, self._limit, slow)
        else:
            n = self._fanout(conns, data, frame, self._limit, slow)
        stats = self.stats
        stats["deliveries"] += n
        if slow:
            self._slow(slow, 1)
        return n

    # ------------------------------------------------------------ bursts (cork)
    def cork(self) -> None:
        self._corked += 1

    def uncork(self) -> None:
        if self._corked <= 0:
            raise RuntimeError("uncork() without cork()")
        self._corked -= 1
        if not self._corked:
            self._flush()

    def cork_until_next_iteration(self, loop) -> None:
        """Cork now and uncork with one ``loop.call_soon``: every publish
        until then (this loop iteration) is coalesced. Idempotent."""
        if not self._auto:
            self._auto = True
            self._corked += 1
            loop.call_soon(self._auto_uncork)

    def _auto_uncork(self) -> None:
        self._auto = False
        self.uncork()

    def _queue(self, topic, subs, data) -> int:
        frame = build_frame(OP_TEXT if type(data) is str else OP_BINARY, data)
        runs = self._runs
        if runs and runs[-1][0] == topic:
            runs[-1][1].append(frame)
        else:  # another topic: a new run, so a subscriber of both keeps the order
            runs.append((topic, [frame]))
        self._run_bytes += len(frame)
        if self._run_bytes >= self._cork_limit:
            self._flush()  # bounds what is queued, and what one write adds to a buffer
        return len(subs)

    def flush(self) -> None:
        """Write what is queued now (also while corked)."""
        if self._runs:
            self._flush()

    def _flush(self) -> None:
        runs = self._runs
        self._runs = []
        self._run_bytes = 0
        stats = self.stats
        for topic, frames in runs:
            subs = self._subs.get(topic)
            if subs is None:
                continue
            k = len(frames)
            data = frames[0] if k == 1 else b"".join(frames)  # the same bytes to every subscriber
            slow = []
            n = fanout(subs, data, self._limit, slow)
            stats["deliveries"] += n * k
            stats["corked_writes"] += n
            if slow:
                self._slow(slow, k)

    def _slow(self, slow: list, messages: int) -> None:
        """Apply the slow-consumer policy (module docstring) after the loop."""
        if not self._close_slow:
            self.stats["slow_consumer_drops"] += len(slow) * messages
            return
        self.stats["slow_consumer_closes"] += len(slow)
        for conn in slow:
            try:
                size = conn._write_buffer_size()
                logger.debug("subscriber %s is too slow (write buffer %d bytes > slow_consumer_limit %d); "
                             "closing with 1013", conn.remote_address, size, self._limit)
                conn.sent_close_code = CLOSE_TRY_AGAIN_LATER
                # No more sends or publishes reach it; connection_lost (soon)
                # settles it as CLOSED and tells the application.
                conn._state = CLOSING
                self.forget(conn)
                conn._abort_transport()
            except Exception:  # never let one connection make a publish raise
                logger.exception("error while cutting off slow subscriber %r", conn)


def compressed_fanout(conns, data, frame, limit: int, slow: list) -> int:
    """The codec's ``fanout`` loop (the same three steps per connection) for a
    server with compression on: a subscriber without server context takeover
    gets the compressed frame, built once per setting; everyone else gets
    ``frame`` (the plain one: an uncompressed message is always valid, RFC
    7692 6)."""
    raw = None
    cache = {}
    n = 0
    for conn in conns:
        if conn._state != OPEN:
            continue
        if conn._paused_writing and conn._write_buffer_size() > limit:
            slow.append(conn)
            continue
        out = frame
        pmd = conn._deflate
        if pmd is not None:
            params = pmd.params
            key = params.shared_key
            if key is not None and len(data) >= params.threshold:
                out = cache.get(key)
                if out is None:
                    if raw is None:
                        raw = data.encode("utf-8") if type(data) is str else bytes(data)
                    out = cache[key] = build_frame(OP_TEXT if type(data) is str else OP_BINARY,
                                                   compress(params, raw), rsv=RSV1)
        try:
            conn._write(out)
        except Exception:
            continue
        n += 1
    return n
