"""Topics across processes and machines: ``RedisBroker``.

::

    broker = fastws.broker.RedisBroker("redis://127.0.0.1:6379/0", history=1000)
    fastws.run(app, port=8765, workers=4, broker=broker)   # each worker its own link

A ``Server`` given ``broker=`` routes ``await server.publish`` through Redis (one
Lua script: INCR, XADD, PUBLISH); each process SUBSCRIBEs only to the topics
its clients use and fans out what arrives locally. Live delivery is at most
once; with ``history=N``, ``broker.resume`` is at least once within the
window; a publish that was not accepted raises ``BrokerUnavailable``.
Needs ``pip install 'fastws[redis]'``.
See docs/guide/broker.md.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import re
import time
from typing import NamedTuple

from .codec import conn_send
from .constants import OPEN
from .exceptions import BrokerError, BrokerUnavailable, ConfigError, ConnectionClosed

__all__ = ["RedisBroker", "Published", "Resumed"]

logger = logging.getLogger("fastws.broker")

_PUBLISH = """
local n = redis.call('INCR', KEYS[1])
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '0-' .. n, 'k', ARGV[2], 'd', ARGV[3])
end
local r = redis.call('PUBLISH', ARGV[1], ARGV[2] .. n .. ' ' .. ARGV[3])
return {n, r}
"""

_READ = """
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local e = {}
if ARGV[2] == '1' then
  e = redis.call('XRANGE', KEYS[2], '(0-' .. ARGV[1], '+')
end
return {c, e}
"""

_NETWORK_ERRORS = (OSError, asyncio.TimeoutError)


class Published(NamedTuple):
    """What ``await server.publish(...)`` returns with a broker."""
    id: int          # the message's id in its topic (1, 2, 3, ...)
    processes: int   # how many processes (Redis subscribers) it went out to


class Resumed(NamedTuple):
    """What ``await broker.resume(...)`` returns."""
    replayed: int        # history messages sent before the live ones
    lost: int | None     # messages after ``since`` no longer in the window (None: unknown, Redis was reset)
    last: int            # the id of the last message sent (``since`` if none)


def safe_url(url: str) -> str:
    """The URL with any password hidden (for logs and messages)."""
    return re.sub(r"//([^/@]*):([^/@]*)@", r"//\1:***@", url)


def _decode(kind: bytes, body: bytes):
    return body.decode("utf-8") if kind == b"T" else bytes(body)


class RedisBroker:
    """Topics shared by every process connected to one Redis (module docstring)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "fastws:", history: int = 0,
                 reconnect_min: float = 0.1, reconnect_max: float = 5.0, timeout: float = 5.0,
                 health_interval: float | None = 5.0, wrap=None, catchup_limit: int = 100_000):
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:
            raise ConfigError("RedisBroker needs redis-py: pip install 'fastws[redis]' "
                              f"(redis with hiredis) ({exc})") from None
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis URL must start with redis://, rediss:// or unix://, got {url!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigError(f"history must be a whole number of messages >= 0 (0: off), got {history!r}")
        for name, value in (("reconnect_min", reconnect_min), ("reconnect_max", reconnect_max),
                            ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if reconnect_max < reconnect_min:
            raise ConfigError("reconnect_max must be >= reconnect_min")
        if health_interval is not None and (not isinstance(health_interval, (int, float)) or health_interval <= 0):
            raise ConfigError(f"health_interval must be a positive number of seconds or None, got {health_interval!r}")
        if wrap is not None and not callable(wrap):
            raise ConfigError("wrap must be callable: wrap(topic, id, data) -> str | bytes")
        self.url = url
        self.safe_url = safe_url(url)
        self.prefix = prefix
        self.history_size = history
        self.reconnect_min = float(reconnect_min)
        self.reconnect_max = float(reconnect_max)
        self.timeout = float(timeout)
        self.health_interval = health_interval
        self.wrap = wrap
        self.catchup_limit = catchup_limit
        self._prefix_b = prefix.encode()
        self._chan_prefix = (prefix + "c:").encode()
        self.counters = {"outages": 0, "reconnects": 0, "published": 0, "publish_failures": 0,
                         "received": 0, "missed": 0, "recovered": 0, "duplicates": 0, "resets": 0,
                         "replayed": 0}
        self._topics = None        # the server's registry (attach)
        self._loop = None
        self._client = None
        self._publish_script = None
        self._read_script = None
        self._task = None
        self._closed = False
        self._up = False
        self._link = None          # the connection in subscribe mode, while a session runs
        self._wanted: set = set()  # topics with local subscribers or clients catching up
        self._last: dict = {}      # topic -> id of the last message delivered here
        self._catching: dict = {}  # topic -> {conn: [(id, data), ...]} live messages during a resume
        self._buffering = False    # a session is recovering: incoming messages go to _buffer
        self._buffer: list = []
        self._ops: list = []       # commands for the link, sent in order by _writer
        self._writer_task = None
        self._writer_link = None
        self._sub_pending: dict = {}   # topic -> SUBSCRIBEs sent, not yet acknowledged
        self._subscribed: set = set()  # acknowledged
        self._sub_waiters: dict = {}   # topic -> [futures] for "subscribed"
        self._pongs = collections.deque()
        self._outage_since = None
        self._outage_attempts = 0
        self._started = None       # an asyncio.Event, made in start() (needs the loop)
        self._session_up = False

    # ------------------------------------------------------------ plumbing into the Server
    def attach(self, server) -> None:
        """Called by ``Server(..., broker=self)``: follow its registry."""
        if self._task is not None:
            raise ConfigError("this RedisBroker is already running for another server")
        self._topics = server._topics
        server._topics.hook = self

    def stats(self) -> dict:
        """The counters (module docstring), ``connected`` and ``topics``."""
        return dict(self.counters, connected=self._up, topics=len(self._wanted))

    @property
    def connected(self) -> bool:
        return self._up

    def _channel(self, topic: str) -> bytes:
        return self._chan_prefix + topic.encode("utf-8")

    async def start(self) -> None:
        """Connect (in the background: the server serves even while Redis is
        away; publishes fail until it is reached). Waits up to ``timeout`` for
        the first connection so a server usually starts connected."""
        if self._task is not None:
            return
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._loop = asyncio.get_running_loop()
        # Retries are ours (backoff, re-subscribe, counting), not redis-py's.
        self._client = aioredis.from_url(self.url, retry=Retry(NoBackoff(), 0), socket_timeout=self.timeout,
                                         socket_connect_timeout=self.timeout, decode_responses=False)
        self._publish_script = self._client.register_script(_PUBLISH)
        self._read_script = self._client.register_script(_READ)
        self._started = asyncio.Event()
        self._task = self._loop.create_task(self._run())
        try:
            await asyncio.wait_for(self._started.wait(), self.timeout)
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        self._closed = True
        if self._writer_task is not None and not self._writer_task.done():
            self._writer_task.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:
                pass
        self._up = False

    # ------------------------------------------------------------ registry hooks (sync)
    def topic_added(self, topic: str) -> None:
        self._want(topic)

    def topic_removed(self, topic: str) -> None:
        if topic in self._catching:
            return
        self._wanted.discard(topic)
        self._last.pop(topic, None)
        if self._link is not None:
            self._send(("UNSUBSCRIBE", self._channel(topic)))

    def _want(self, topic: str) -> None:
        if topic in self._wanted:
            return
        self._wanted.add(topic)
        if self._link is not None:
            self._sub_pending[topic] = self._sub_pending.get(topic, 0) + 1
            self._send(("SUBSCRIBE", self._channel(topic)))

    def _send(self, op) -> None:
        """Queue a command for the link; one writer task sends them in order."""
        self._ops.append(op)
        link = self._link
        if self._writer_task is None or self._writer_task.done() or self._writer_link is not link:
            self._writer_link = link
            self._writer_task = self._loop.create_task(self._writer(link))

    async def _writer(self, link) -> None:
        try:
            while self._ops and self._link is link:
                op = self._ops.pop(0)
                await link.send_command(*op)
        except Exception as exc:  # the reader sees the same failure and ends the session
            logger.debug("redis broker: sending to the link failed: %r", exc)

    # ------------------------------------------------------------ publishing
    async def publish(self, topic: str, data) -> Published:
        """Publish to every process's subscribers of ``topic``. Raises
        BrokerUnavailable if not connected (nothing was sent)."""
        if type(topic) is not str:
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if isinstance(data, str):
            kind, body = b"T", data.encode("utf-8")
        else:
            kind, body = b"B", bytes(data)
        counters = self.counters
        if not self._up:
            counters["publish_failures"] += 1
            raise BrokerUnavailable(f"not connected to Redis at {self.safe_url}: the message to {topic!r} "
                                    "was not published")
        from redis.exceptions import ConnectionError as RConnectionError, RedisError, TimeoutError as RTimeout

        try:
            n, processes = await self._publish_script(
                keys=[self._prefix_b + b"seq:" + topic.encode(), self._prefix_b + b"h:" + topic.encode()],
                args=[self._channel(topic), kind, body, self.history_size])
        except (RConnectionError, RTimeout, *_NETWORK_ERRORS) as exc:
            counters["publish_failures"] += 1
            raise BrokerUnavailable(f"Redis at {self.safe_url} failed during the publish to {topic!r}: {exc}") from exc
        except RedisError as exc:
            counters["publish_failures"] += 1
            raise BrokerError(f"Redis refused the publish to {topic!r}: {exc}") from exc
        counters["published"] += 1
        return Published(int(n), int(processes))

    # ------------------------------------------------------------ history
    async def _read_after(self, topic: str, since: int):
        """(counter, [(id, data)]) atomically: the topic's counter and, with
        history, the stream entries after ``since``."""
        from redis.exceptions import ConnectionError as RConnectionError, RedisError, TimeoutError as RTimeout

        t = topic.encode()
        try:
            counter, entries = await self._read_script(
                keys=[self._prefix_b + b"seq:" + t, self._prefix_b + b"h:" + t],
                args=[since, 1 if self.history_size else 0])
        except (RConnectionError, RTimeout, *_NETWORK_ERRORS) as exc:
            raise BrokerUnavailable(f"Redis at {self.safe_url} failed reading {topic!r}: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"Redis refused reading the history of {topic!r}: {exc}") from exc
        out = []
        for entry_id, fields in entries:
            f = dict(zip(fields[::2], fields[1::2]))
            out.append((int(entry_id.split(b"-", 1)[1]), _decode(f[b"k"], f[b"d"])))
        return int(counter), out

    async def history(self, topic: str, since: int = 0) -> list:
        """The messages of ``topic`` after id ``since`` still in the stream:
        ``[(id, data), ...]`` in order (data: str for text, bytes for binary)."""
        self._check_since(since)
        return (await self._read_after(topic, since))[1]

    def _check_since(self, since) -> None:
        if not self.history_size:
            raise BrokerError("history is off for this broker (RedisBroker(..., history=N))")
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise BrokerError(f"a history id is a whole number >= 0, got {since!r}")

    async def resume(self, conn, topic: str, since: int, send=None, gap=None) -> Resumed:
        """Subscribe ``conn`` to ``topic``, first sending it every message after
        id ``since`` still in the history, with no gap and no duplicate between
        those and the live ones (module docstring). ``send(topic, id, data)``
        sends one message (default: ``conn.send(wrap(topic, id, data))``);
        ``gap(topic, lost)`` is called first if messages after ``since`` are
        no longer in the history (``lost``: how many, None if unknown).
        Raises BrokerUnavailable if Redis is away (the connection is then not
        subscribed)."""
        self._check_since(since)
        if not self._up:
            raise BrokerUnavailable(f"not connected to Redis at {self.safe_url}: cannot read the history")
        if send is None:
            wrap = self.wrap

            def send(t, i, d):  # the synchronous send of both API levels
                conn_send(conn, wrap(t, i, d) if wrap is not None else d)
        catching = self._catching.setdefault(topic, {})
        buf = catching[conn] = []
        try:
            self._want(topic)
            await self._subscribed_to(topic)
            counter, entries = await self._read_after(topic, since)
            await self._barrier()
            if conn._state != OPEN:  # closed meanwhile
                return Resumed(0, 0, since)
            if len(buf) > self.catchup_limit:
                raise BrokerError(f"more than {self.catchup_limit} live messages arrived during the catch-up")
            if since > counter:  # the counter went back: Redis lost its data
                lost, last = None, 0
                self.counters["resets"] += 1
            else:
                first = entries[0][0] if entries else counter + 1
                lost, last = max(0, first - since - 1), since
            replayed = 0
            try:
                if lost != 0 and gap is not None:
                    gap(topic, lost)
                for i, data in entries:
                    if i > last:
                        send(topic, i, data)
                        last = i
                        replayed += 1
                for i, data in buf:
                    if i > last:
                        send(topic, i, data)
                        last = i
                    else:
                        self.counters["duplicates"] += 1
            except ConnectionClosed:  # cut off during the replay (max_write_buffer, say)
                return Resumed(replayed, lost, last)
            finally:
                self.counters["replayed"] += replayed
            del catching[conn]  # no await from here on: no message can slip between
            conn.subscribe(topic)
            return Resumed(replayed, lost, last)
        finally:
            catching = self._catching.get(topic)
            if catching is not None:
                catching.pop(conn, None)
                if not catching:
                    del self._catching[topic]
            if topic not in self._catching and self._topics is not None and not self._topics.subscribers(topic):
                self.topic_removed(topic)

    async def _subscribed_to(self, topic: str) -> None:
        if topic in self._subscribed and not self._sub_pending.get(topic):
            return
        fut = self._loop.create_future()
        self._sub_waiters.setdefault(topic, []).append(fut)
        await asyncio.wait_for(fut, self.timeout)

    async def _barrier(self) -> None:
        """A PING round trip on the link: every message Redis sent the link
        before this returns has been handled."""
        link = self._link
        if link is None:
            raise BrokerUnavailable(f"not connected to Redis at {self.safe_url}")
        fut = self._loop.create_future()
        self._pongs.append(fut)
        self._send(("PING",))
        try:
            await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(f"Redis at {self.safe_url} did not answer a PING within {self.timeout} s") from None

    # ------------------------------------------------------------ the link
    async def _run(self) -> None:
        delay = self.reconnect_min
        while not self._closed:
            self._session_up = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._session_ended(exc)
            self._started.set()
            if self._closed:
                return
            if self._session_up:  # it was up: start the backoff afresh
                delay = self.reconnect_min
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    def _session_ended(self, exc) -> None:
        was_up = self._up
        self._up = False
        self._link = None
        self._buffering = False
        self._buffer = []
        self._ops = []
        self._subscribed.clear()
        self._sub_pending.clear()
        err = BrokerUnavailable(f"lost the connection to Redis at {self.safe_url}: {exc}")
        for waiters in self._sub_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
        self._sub_waiters.clear()
        while self._pongs:
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_exception(err)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_attempts = 0
            self.counters["outages"] += 1
            logger.warning("redis broker: %s %s (%s); publishes raise BrokerUnavailable until it is back; "
                           "reconnecting with backoff %.1f-%.1f s", "lost the connection to" if was_up
                           else "cannot connect to", self.safe_url, exc or type(exc).__name__,
                           self.reconnect_min, self.reconnect_max)
        else:
            self._outage_attempts += 1
            logger.debug("redis broker: reconnect attempt %d failed: %r", self._outage_attempts, exc)

    async def _session(self) -> None:
        link = self._client.connection_pool.make_connection()
        link.client_name = f"fastws-link-{os.getpid()}"
        try:
            await link.connect()
            # Stale pooled command connections from before an outage would
            # fail the first publishes: start them afresh.
            await self._client.connection_pool.disconnect()
            self._link = link
            self._buffering = True
            self._buffer = []
            self._ops = []
            topics = sorted(self._wanted)
            reader = self._loop.create_task(self._reader(link))
            try:
                if topics:
                    for topic in topics:
                        self._sub_pending[topic] = self._sub_pending.get(topic, 0) + 1
                    self._send(("SUBSCRIBE", *[self._channel(t) for t in topics]))
                    await self._race(reader, asyncio.gather(*(self._subscribed_to(t) for t in topics)))
                await self._race(reader, self._recover(topics))
                self._up = self._session_up = True
                self._came_back(len(topics))
                self._started.set()
                while True:
                    if self.health_interval is None:
                        await reader
                    else:
                        done, _ = await asyncio.wait([reader], timeout=self.health_interval)
                        if not done:
                            await self._race(reader, self._barrier())
                            continue
                    reader.result()  # raises what ended it
                    raise ConnectionError("the link ended")
            finally:
                if not reader.done():
                    reader.cancel()
                    try:
                        await reader
                    except BaseException:
                        pass
        finally:
            self._link = None
            try:
                await link.disconnect()
            except Exception:
                pass

    async def _race(self, reader, aw):
        """Await ``aw``; if the reader ends first, raise what ended it."""
        task = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait([reader, task], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        reader.result()
        raise ConnectionError("the link ended")

    def _came_back(self, n_topics: int) -> None:
        if self._outage_since is None:
            return
        self.counters["reconnects"] += 1
        logger.info("redis broker: connected to %s again after %.1f s (%d failed attempts); "
                    "re-subscribed %d topics; so far missed %d messages, recovered %d from history",
                    self.safe_url, time.monotonic() - self._outage_since, self._outage_attempts, n_topics,
                    self.counters["missed"], self.counters["recovered"])
        self._outage_since = None

    async def _recover(self, topics) -> None:
        """After (re)subscribing: deliver or count what was published while
        this process was not listening, then what arrived meanwhile."""
        reads = {}
        for topic in topics:
            last = self._last.get(topic)
            if last is not None:
                reads[topic] = await self._read_after(topic, last)
        await self._barrier()  # every live message up to the reads has arrived (buffered)
        counters = self.counters
        corked = False
        for topic, (counter, entries) in reads.items():
            last = self._last[topic]
            if counter < last:
                counters["resets"] += 1
                self._last[topic] = last = 0
            for i, data in entries:
                if i > last:
                    corked = True
                    self._deliver(topic, i, data)
                    counters["recovered"] += 1
                    last = i
        buffer, self._buffer = self._buffer, []
        self._buffering = False
        for topic, i, data in buffer:
            last = self._last.get(topic)
            if last is not None and i <= last:
                counters["duplicates"] += 1
                continue
            corked = True
            self._deliver(topic, i, data)
        for topic, (counter, _) in reads.items():
            last = self._last.get(topic)
            if last is not None and last < counter:
                counters["missed"] += counter - last
                self._last[topic] = counter
        if corked:
            self._topics.flush()

    async def _reader(self, link) -> None:
        chan_prefix = self._chan_prefix
        skip = len(chan_prefix)
        while True:
            msg = await link.read_response(timeout=math.inf, push_request=True)
            if isinstance(msg, list) and msg:  # (hiredis: a list subclass for pub/sub pushes)
                kind = msg[0]
                if kind == b"message":
                    channel, payload = msg[1], msg[2]
                    if not channel.startswith(chan_prefix):
                        continue
                    self._message(channel[skip:].decode("utf-8", "replace"), payload)
                elif kind == b"subscribe":
                    self._acked(msg[1][skip:].decode("utf-8", "replace"))
                elif kind == b"unsubscribe":
                    if msg[1] is not None:
                        self._subscribed.discard(msg[1][skip:].decode("utf-8", "replace"))
                elif kind == b"pong":
                    self._pong()
            elif msg == b"PONG":
                self._pong()
            elif isinstance(msg, Exception):
                raise BrokerError(f"Redis error on the link: {msg}")

    def _pong(self) -> None:
        if self._pongs:
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_result(None)

    def _acked(self, topic: str) -> None:
        self._subscribed.add(topic)
        n = self._sub_pending.get(topic, 0) - 1
        if n > 0:
            self._sub_pending[topic] = n
            return
        self._sub_pending.pop(topic, None)
        for fut in self._sub_waiters.pop(topic, ()):
            if not fut.done():
                fut.set_result(None)

    def _message(self, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        sp = payload.find(b" ")
        try:
            i = int(payload[1:sp])
            data = _decode(payload[:1], payload[sp + 1:])
        except (ValueError, UnicodeDecodeError):
            logger.error("redis broker: dropped a malformed message on topic %r (not from fastws?)", topic)
            self.counters["missed"] += 1
            return
        if self._buffering:
            self._buffer.append((topic, i, data))
            return
        self._deliver(topic, i, data)

    def _deliver(self, topic: str, i: int, data) -> None:
        if topic not in self._wanted:  # unsubscribed meanwhile
            return
        last = self._last.get(topic)
        if last is not None:
            if i > last + 1:
                self.counters["missed"] += i - last - 1
            elif i <= last:  # the counter went back while connected (FLUSHALL, key deleted)
                self.counters["resets"] += 1
        self._last[topic] = i
        catching = self._catching.get(topic)
        if catching:
            for buf in catching.values():
                buf.append((i, data))
        wrap = self.wrap
        topics = self._topics
        if not topics._corked:
            topics.cork_until_next_iteration(self._loop)
        topics.publish(topic, wrap(topic, i, data) if wrap is not None else data)

    def __repr__(self):
        return f"<RedisBroker {self.safe_url} {'connected' if self._up else 'not connected'} topics={len(self._wanted)}>"
