"""Topics across processes and machines: ``RedisBroker``.

::

    broker = fastws.broker.RedisBroker("redis://127.0.0.1:6379/0", history=1000)
    broker = fastws.broker.RedisBroker("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", history=1000)
    fastws.run(app, port=8765, workers=4, broker=broker)   # each worker its own links

``await server.publish`` runs one Lua script (INCR, XADD, PUBLISH; SPUBLISH on
a cluster, where a topic's keys and channel share one hash slot); each process
subscribes only to the topics its clients use, on the node that owns each.
Live delivery is at most once; ``broker.resume`` is at least once within the
history; a publish not accepted raises ``BrokerUnavailable``.
See docs/guide/broker.md and docs/deployment/redis-cluster.md.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import math
import os
import re
import time
from typing import NamedTuple

from .codec import conn_send
from .constants import OPEN
from .exceptions import BrokerError, BrokerUnavailable, ConfigError, ConnectionClosed, NotReplicated
from .redis_cluster import CLUSTER_SCHEMES, SLOTS, parse_cluster_url, read_shards, tag_ok, topic_slot

__all__ = ["RedisBroker", "Published", "Resumed"]

logger = logging.getLogger("fastws.broker")

# KEYS: counter, stream, channel; ARGV: kind (T or B), data, history size.
_PUBLISH = """
local n = redis.call('INCR', KEYS[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '0-' .. n, 'k', ARGV[1], 'd', ARGV[2])
end
local r = redis.call('%s', KEYS[3], ARGV[1] .. n .. ' ' .. ARGV[2])
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


class _Script:
    """A Lua script run with EVALSHA (loaded on NOSCRIPT: a new master after a
    failover may not have it)."""

    __slots__ = ("text", "sha")

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


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


async def _cancel(task) -> None:
    """Cancel ``task`` (if any) and wait for it to end."""
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


class _Node:
    """One Redis server the broker talks to (the single Redis, or one master
    of a cluster): a small pool for commands, and the *link*, one connection
    in subscribe mode with its own session loop: connect, subscribe this
    node's topics, recover them, PING every ``health_interval``, and on
    failure reconnect with backoff."""

    def __init__(self, broker: "RedisBroker", url: str):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.broker = broker
        self.name = safe_url(url)
        # Retries are ours (backoff, re-subscribe, counting), not redis-py's.
        self.client = aioredis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=broker.timeout,
                                        socket_connect_timeout=broker.timeout, decode_responses=False)
        self.topics: set = set()     # the wanted topics this node serves
        self.task = None
        self.closed = False
        self.up = False              # subscribed and recovered: publishes go ahead
        self.session_up = False
        self.started = asyncio.Event()
        self.link = None             # the connection in subscribe mode, while a session runs
        self.recovering: dict = {}   # topic -> [(id, data)]: live messages held while it recovers
        self.ops: list = []          # commands for the link, sent in order by _writer
        self.writer_task = None
        self.writer_link = None
        self.sub_pending: dict = {}    # topic -> SUBSCRIBEs sent, not yet acknowledged
        self.unsub_pending: dict = {}  # topic -> UNSUBSCRIBEs sent, not yet acknowledged
        self.subscribed: set = set()   # acknowledged
        self.sub_waiters: dict = {}    # topic -> [futures] for "subscribed"
        self.pongs = collections.deque()
        self.outage_since = None
        self.outage_attempts = 0

    def start(self) -> None:
        self.task = self.broker._loop.create_task(self._run())

    async def close(self) -> None:
        self.closed = True
        self.up = False
        if self.writer_task is not None and not self.writer_task.done():
            self.writer_task.cancel()
        task, self.task = self.task, None
        await _cancel(task)
        try:
            await self.client.aclose()
        except Exception:
            pass

    # ------------------------------------------------------------ topics
    def want(self, topic: str, recover: bool = False) -> None:
        """Serve ``topic`` from now on; ``recover``: it was served elsewhere
        (a failover, a slot migration), so fetch from the history what its
        subscribers missed."""
        self.topics.add(topic)
        if self.link is None:
            return  # the next session subscribes (and recovers) it
        if recover:
            self.broker._spawn(self._join(topic, self.link))
        else:
            self.subscribe([topic])

    def forget(self, topic: str) -> None:
        """Stop serving ``topic`` without a command (its slot moved away:
        Redis drops the subscription itself, and would answer MOVED)."""
        self.topics.discard(topic)
        self.recovering.pop(topic, None)

    def unwant(self, topic: str) -> None:
        self.forget(topic)
        if self.link is not None:
            self.unsub_pending[topic] = self.unsub_pending.get(topic, 0) + 1
            self._send((self.broker._unsub_cmd, self.broker._channel(topic)))

    def subscribe(self, topics) -> None:
        broker = self.broker
        for topic in topics:
            self.sub_pending[topic] = self.sub_pending.get(topic, 0) + 1
        for group in broker._groups(topics):
            self._send((broker._sub_cmd, *[broker._channel(t) for t in group]))

    async def _join(self, topic: str, link) -> None:
        """A topic moved here while the link is up: subscribe, then deliver
        what was missed from the history before the live messages."""
        self.recovering[topic] = []
        try:
            self.subscribe([topic])
            await self.subscribed_to(topic)
            await self.broker._recover(self, [topic])
        except Exception as exc:
            if self.link is link and topic in self.topics:
                # Start the session afresh: it subscribes and recovers every topic.
                logger.debug("redis broker: taking over %r on %s failed (%r); reconnecting", topic, self.name, exc)
                await link.disconnect()

    def _send(self, op) -> None:
        """Queue a command for the link; one writer task sends them in order."""
        self.ops.append(op)
        link = self.link
        if self.writer_task is None or self.writer_task.done() or self.writer_link is not link:
            self.writer_link = link
            self.writer_task = self.broker._loop.create_task(self._writer(link))

    async def _writer(self, link) -> None:
        try:
            while self.ops and self.link is link:
                op = self.ops.pop(0)
                await link.send_command(*op)
        except Exception as exc:  # the reader sees the same failure and ends the session
            logger.debug("redis broker: sending to the link failed: %r", exc)

    async def subscribed_to(self, topic: str) -> None:
        if topic in self.subscribed and not self.sub_pending.get(topic):
            return
        fut = self.broker._loop.create_future()
        self.sub_waiters.setdefault(topic, []).append(fut)
        await asyncio.wait_for(fut, self.broker.timeout)

    async def barrier(self) -> None:
        """A PING round trip on the link: every message Redis sent the link
        before this returns has been handled."""
        if self.link is None:
            raise BrokerUnavailable(f"not connected to Redis at {self.name}")
        fut = self.broker._loop.create_future()
        self.pongs.append(fut)
        self._send(("PING",))
        try:
            await asyncio.wait_for(fut, self.broker.timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(f"Redis at {self.name} did not answer a PING within "
                                    f"{self.broker.timeout} s") from None

    def pong(self) -> None:
        if self.pongs:
            fut = self.pongs.popleft()
            if not fut.done():
                fut.set_result(None)

    def acked(self, topic: str) -> None:
        self.subscribed.add(topic)
        n = self.sub_pending.get(topic, 0) - 1
        if n > 0:
            self.sub_pending[topic] = n
            return
        self.sub_pending.pop(topic, None)
        for fut in self.sub_waiters.pop(topic, ()):
            if not fut.done():
                fut.set_result(None)

    def unsubscribed(self, topic: str) -> None:
        self.subscribed.discard(topic)
        n = self.unsub_pending.get(topic, 0)
        if n > 1:
            self.unsub_pending[topic] = n - 1
        elif n == 1:
            del self.unsub_pending[topic]
        elif topic in self.topics:  # not asked for: Redis dropped it (its slot moved away)
            self.broker._slot_left(self, topic)

    # ------------------------------------------------------------ commands
    async def eval(self, script: _Script, keys, args, wait: int = 0, wait_ms: int = 0):
        """(the script's result, replicas that acknowledged it or None)."""
        from redis.exceptions import NoScriptError

        client = self.client
        for attempt in (0, 1):
            try:
                if not wait:
                    return await client.evalsha(script.sha, len(keys), *keys, *args), None
                # WAIT counts the writes of its own connection: one pipeline.
                pipe = client.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", wait, wait_ms)
                result, acked = await pipe.execute(raise_on_error=False)
                for value in (result, acked):
                    if isinstance(value, Exception):
                        raise value
                return result, int(acked)
            except NoScriptError:  # not run: load it and run it again
                if attempt:
                    raise
                await client.script_load(script.text)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ the link
    async def _run(self) -> None:
        broker = self.broker
        delay = broker.reconnect_min
        while not self.closed:
            self.session_up = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._session_ended(exc)
            self.started.set()
            if self.closed:
                return
            if self.session_up:  # it was up: start the backoff afresh
                delay = broker.reconnect_min
            await asyncio.sleep(delay)
            delay = min(delay * 2, broker.reconnect_max)

    def _session_ended(self, exc) -> None:
        broker = self.broker
        was_up = self.up
        self.up = False
        self.link = None
        self.recovering = {}
        self.ops = []
        self.subscribed.clear()
        self.sub_pending.clear()
        self.unsub_pending.clear()
        err = BrokerUnavailable(f"lost the connection to Redis at {self.name}: {exc}")
        for waiters in self.sub_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
        self.sub_waiters.clear()
        while self.pongs:
            fut = self.pongs.popleft()
            if not fut.done():
                fut.set_exception(err)
        broker._node_down(self)
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.outage_attempts = 0
            broker.counters["outages"] += 1
            logger.warning("redis broker: %s %s (%s); publishes%s raise BrokerUnavailable until it is back; "
                           "reconnecting with backoff %.1f-%.1f s", "lost the connection to" if was_up
                           else "cannot connect to", self.name, exc or type(exc).__name__,
                           " to its topics" if broker.cluster else "", broker.reconnect_min, broker.reconnect_max)
        else:
            self.outage_attempts += 1
            logger.debug("redis broker: reconnect attempt %d to %s failed: %r", self.outage_attempts, self.name, exc)

    async def _session(self) -> None:
        broker = self.broker
        link = self.client.connection_pool.make_connection()
        link.client_name = f"fastws-link-{os.getpid()}"
        try:
            await link.connect()
            # Stale pooled command connections from before an outage would
            # fail the first publishes: start them afresh.
            await self.client.connection_pool.disconnect()
            self.link = link
            self.ops = []
            topics = sorted(self.topics)
            self.recovering = {topic: [] for topic in topics}
            reader = broker._loop.create_task(broker._reader(self, link))
            try:
                if topics:
                    self.subscribe(topics)
                    await self._race(reader, asyncio.gather(*(self.subscribed_to(t) for t in topics)))
                await self._race(reader, broker._recover(self, topics))
                self.up = self.session_up = True
                self._came_back(len(topics))
                self.started.set()
                health = broker.health_interval
                while True:
                    if health is None:
                        await reader
                    else:
                        done, _ = await asyncio.wait([reader], timeout=health)
                        if not done:
                            await self._race(reader, self.barrier())
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
            self.link = None
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
        if self.outage_since is None:
            return
        counters = self.broker.counters
        counters["reconnects"] += 1
        logger.info("redis broker: connected to %s again after %.1f s (%d failed attempts); "
                    "re-subscribed %d topics; so far missed %d messages, recovered %d from history",
                    self.name, time.monotonic() - self.outage_since, self.outage_attempts, n_topics,
                    counters["missed"], counters["recovered"])
        self.outage_since = None

    def __repr__(self):
        return f"<redis node {self.name} {'up' if self.up else 'down'} topics={len(self.topics)}>"


class RedisBroker:
    """Topics shared by every process connected to one Redis or one Redis
    Cluster (module docstring)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "fastws:", history: int = 0,
                 reconnect_min: float = 0.1, reconnect_max: float = 5.0, timeout: float = 5.0,
                 health_interval: float | None = 5.0, wrap=None, catchup_limit: int = 100_000,
                 wait_replicas: int = 0, wait_timeout: float = 1.0):
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:
            raise ConfigError("RedisBroker needs redis-py: pip install 'fastws[redis]' "
                              f"(redis with hiredis) ({exc})") from None
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")) and \
                url.partition("://")[0] not in CLUSTER_SCHEMES:
            raise ConfigError("redis URL must start with redis://, rediss://, unix:// or (a Redis Cluster) "
                              f"redis+cluster://, got {url!r}")
        self.cluster = parse_cluster_url(url) if url.partition("://")[0] in CLUSTER_SCHEMES else None
        if self.cluster is not None and ("{" in prefix or "}" in prefix):
            raise ConfigError(f"with a Redis Cluster the prefix may not contain {{ or }} (the topic is the "
                              f"hash tag), got {prefix!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigError(f"history must be a whole number of messages >= 0 (0: off), got {history!r}")
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
            raise ConfigError(f"wait_replicas must be a whole number of replicas >= 0 (0: do not wait), "
                              f"got {wait_replicas!r}")
        for name, value in (("reconnect_min", reconnect_min), ("reconnect_max", reconnect_max),
                            ("timeout", timeout), ("wait_timeout", wait_timeout)):
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
        self.wait_replicas = wait_replicas
        self.wait_timeout = float(wait_timeout)
        self._prefix_b = prefix.encode()
        if self.cluster is None:
            self._chan_prefix = (prefix + "c:").encode()
            self._sub_cmd, self._unsub_cmd = "SUBSCRIBE", "UNSUBSCRIBE"
            self._kinds = (b"message", b"subscribe", b"unsubscribe")
            self._publish_script = _Script(_PUBLISH % "PUBLISH")
        else:  # sharded pub/sub: a channel lives on the shard of its slot
            self._chan_prefix = self._prefix_b + b"{"
            self._sub_cmd, self._unsub_cmd = "SSUBSCRIBE", "SUNSUBSCRIBE"
            self._kinds = (b"smessage", b"ssubscribe", b"sunsubscribe")
            self._publish_script = _Script(_PUBLISH % "SPUBLISH")
        self._read_script = _Script(_READ)
        self.counters = {"outages": 0, "reconnects": 0, "published": 0, "publish_failures": 0,
                         "received": 0, "missed": 0, "recovered": 0, "duplicates": 0, "resets": 0,
                         "replayed": 0, "moved": 0, "not_replicated": 0}
        self._topics = None        # the server's registry (attach)
        self._loop = None
        self._closed = False
        self._nodes: dict = {}     # (host, port) (the URL for one Redis) -> _Node
        self._single = None        # the _Node of a single Redis
        self._slot_node: list = [None] * SLOTS if self.cluster is not None else []
        self._known: list = []     # every node of the cluster seen in CLUSTER SHARDS
        self._watch_task = None    # the cluster's topology watcher
        self._poked = None         # an asyncio.Event: refresh the topology now
        self._topology_lock = None
        self._topology_read = None  # an asyncio.Event: the first CLUSTER SHARDS was answered (or failed)
        self._tasks: set = set()
        self._wanted: set = set()  # topics with local subscribers or clients catching up
        self._owner: dict = {}     # wanted topic -> the _Node serving it (None: its shard has no master)
        self._last: dict = {}      # topic -> id of the last message delivered here
        self._catching: dict = {}  # topic -> {conn: [(id, data), ...]} live messages during a resume

    # ------------------------------------------------------------ plumbing into the Server
    def attach(self, server) -> None:
        """Called by ``Server(..., broker=self)``: follow its registry."""
        if self._loop is not None:
            raise ConfigError("this RedisBroker is already running for another server")
        self._topics = server._topics
        server._topics.hook = self

    def stats(self) -> dict:
        """The counters (module docstring), ``connected`` and ``topics``."""
        return dict(self.counters, connected=self.connected, topics=len(self._wanted))

    @property
    def connected(self) -> bool:
        """Connected to the Redis (every master of the cluster, and every
        slot has one)."""
        if self.cluster is None:
            return self._single is not None and self._single.up
        return bool(self._nodes) and all(n.up for n in self._nodes.values()) and None not in self._slot_node

    def _channel(self, topic: str) -> bytes:
        if self.cluster is None:
            return self._chan_prefix + topic.encode("utf-8")
        return self._chan_prefix + topic.encode("utf-8") + b"}:c"

    def _keys(self, topic: str) -> list:
        """The topic's counter, stream and channel (one hash slot on a cluster)."""
        t = topic.encode("utf-8")
        p = self._prefix_b
        if self.cluster is None:
            return [p + b"seq:" + t, p + b"h:" + t, self._chan_prefix + t]
        base = p + b"{" + t + b"}:"
        return [base + b"seq", base + b"h", base + b"c"]

    def _topic_of(self, channel: bytes):
        prefix = self._chan_prefix
        if not channel.startswith(prefix):
            return None
        if self.cluster is None:
            return channel[len(prefix):].decode("utf-8", "replace")
        if not channel.endswith(b"}:c"):
            return None
        return channel[len(prefix):-3].decode("utf-8", "replace")

    def _groups(self, topics):
        """Topics in groups one SUBSCRIBE may carry (on a cluster, one
        SSUBSCRIBE names channels of one slot only)."""
        if self.cluster is None:
            return [list(topics)]
        by_slot: dict = {}
        for topic in topics:
            by_slot.setdefault(topic_slot(topic), []).append(topic)
        return list(by_slot.values())

    def _node_for(self, topic: str):
        """The node that serves ``topic`` (None: its shard has no master now)."""
        if self.cluster is None:
            return self._single
        if not tag_ok(topic):
            raise BrokerError(f"topic {topic!r} cannot be used with a Redis Cluster: its keys need a hash "
                              "tag, so it may not be empty or start with '}'")
        return self._slot_node[topic_slot(topic)]

    def _unavailable(self, node, topic: str) -> str:
        if node is None:
            if self.cluster is not None and self._nodes:
                return (f"no master of the Redis Cluster serves topic {topic!r} now (slot "
                        f"{topic_slot(topic)}: its master failed and no replica is promoted yet)")
            return f"not connected to Redis at {self.safe_url}"
        return f"not connected to Redis at {node.name}"

    def _spawn(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Connect (in the background: the server serves even while Redis is
        away; publishes fail until it is reached). Waits up to ``timeout`` for
        the first connection so a server usually starts connected."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.cluster is None:
            node = self._single = self._nodes[self.url] = _Node(self, self.url)
            for topic in self._wanted:  # subscribed before the start
                self._owner[topic] = node
                node.topics.add(topic)
            node.start()
            waiting = node.started.wait()
        else:
            self._poked = asyncio.Event()
            self._topology_lock = asyncio.Lock()
            self._topology_read = asyncio.Event()
            self._watch_task = self._loop.create_task(self._watch())
            waiting = self._cluster_started()
        try:
            await asyncio.wait_for(waiting, self.timeout)
        except asyncio.TimeoutError:
            pass

    async def _cluster_started(self) -> None:
        await self._topology_read.wait()
        await asyncio.gather(*(node.started.wait() for node in list(self._nodes.values())))

    async def close(self) -> None:
        self._closed = True
        task, self._watch_task = self._watch_task, None
        await _cancel(task)
        for task in list(self._tasks):
            task.cancel()
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()

    # ------------------------------------------------------------ registry hooks (sync)
    def topic_added(self, topic: str) -> None:
        self._want(topic)

    def topic_removed(self, topic: str) -> None:
        if topic in self._catching:
            return
        self._wanted.discard(topic)
        self._last.pop(topic, None)
        node = self._owner.pop(topic, None)
        if node is not None:
            node.unwant(topic)

    def _want(self, topic: str) -> None:
        if topic in self._wanted:
            return
        self._wanted.add(topic)
        try:
            node = self._node_for(topic)
        except BrokerError as exc:
            logger.warning("redis broker: %s; its subscribers here get local publishes only", exc)
            node = None
        self._owner[topic] = node
        if node is not None:
            node.want(topic)

    # ------------------------------------------------------------ running scripts
    async def _script(self, topic: str, script: _Script, keys, args, what: str, undone: str, node=None,
                      wait: int = 0):
        """Run ``script`` on the node serving ``topic`` (or on ``node``):
        (result, replicas that acknowledged it). Raises BrokerUnavailable when
        it was not run (not connected, the slot moved twice, ...); ``what``
        and ``undone`` word the errors."""
        from redis.exceptions import (
            AskError,
            ClusterCrossSlotError,
            ClusterDownError,
            ConnectionError as RConnectionError,
            ReadOnlyError,
            RedisError,
            TimeoutError as RTimeout,
            TryAgainError,
        )

        fixed = node is not None
        for attempt in (0, 1):
            if not fixed:
                node = self._node_for(topic)
                if node is None or not node.up:
                    raise BrokerUnavailable(f"{self._unavailable(node, topic)}: {undone}")
            try:
                return await node.eval(script, keys, args, wait, int(self.wait_timeout * 1000))
            except (AskError, ClusterCrossSlotError, ReadOnlyError, ClusterDownError, TryAgainError) as exc:
                if self.cluster is None and isinstance(exc, (AskError, ClusterCrossSlotError)):
                    raise BrokerError(f"Redis at {node.name} is a node of a Redis Cluster (it answered {exc}): "
                                      "give the broker a redis+cluster://host:port,... URL") from exc
                if isinstance(exc, ClusterCrossSlotError):  # (never: a topic's keys share its hash tag)
                    raise BrokerError(f"Redis refused {what}: {exc}") from exc
                # MOVED (an AskError), ASK: the slot lives elsewhere or is moving; READONLY (a
                # demoted master), CLUSTERDOWN, TRYAGAIN: the cluster is changing. Not run.
                if attempt or fixed or self.cluster is None:
                    self._poke()
                    raise BrokerUnavailable(f"Redis at {node.name} answered {exc} to {what}: {undone}") from exc
                await self._refresh()
            except (RConnectionError, RTimeout, *_NETWORK_ERRORS) as exc:
                self._poke()
                raise BrokerUnavailable(f"Redis at {node.name} failed during {what}: {exc}") from exc
            except RedisError as exc:
                raise BrokerError(f"Redis refused {what}: {exc}") from exc
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ publishing
    async def publish(self, topic: str, data) -> Published:
        """Publish to every process's subscribers of ``topic``. Raises
        BrokerUnavailable if not connected (nothing was sent); with
        ``wait_replicas``, NotReplicated if fewer replicas than that
        acknowledged it within ``wait_timeout`` (it was published)."""
        if type(topic) is not str:
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if isinstance(data, str):
            kind, body = b"T", data.encode("utf-8")
        else:
            kind, body = b"B", bytes(data)
        counters = self.counters
        try:
            (n, processes), acked = await self._script(
                topic, self._publish_script, self._keys(topic), [kind, body, self.history_size],
                f"the publish to {topic!r}", f"the message to {topic!r} was not published", wait=self.wait_replicas)
        except BrokerError:
            counters["publish_failures"] += 1
            raise
        counters["published"] += 1
        published = Published(int(n), int(processes))
        if acked is not None and acked < self.wait_replicas:
            counters["not_replicated"] += 1
            raise NotReplicated(published, acked, self.wait_replicas, self.wait_timeout)
        return published

    # ------------------------------------------------------------ history
    async def _read_after(self, topic: str, since: int, node=None):
        """(counter, [(id, data)]) atomically: the topic's counter and, with
        history, the stream entries after ``since``."""
        counter, entries = (await self._script(topic, self._read_script, self._keys(topic)[:2],
                                               [since, 1 if self.history_size else 0],
                                               f"reading the history of {topic!r}", "the history was not read",
                                               node))[0]
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
        node = self._node_for(topic)
        if node is None or not node.up:
            raise BrokerUnavailable(f"{self._unavailable(node, topic)}: cannot read the history")
        if send is None:
            wrap = self.wrap

            def send(t, i, d):  # the synchronous send of both API levels
                conn_send(conn, wrap(t, i, d) if wrap is not None else d)
        catching = self._catching.setdefault(topic, {})
        buf = catching[conn] = []
        try:
            self._want(topic)
            node = self._owner.get(topic)
            if node is None:
                raise BrokerUnavailable(f"{self._unavailable(node, topic)}: cannot read the history")
            await node.subscribed_to(topic)
            counter, entries = await self._read_after(topic, since, node)
            await node.barrier()
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

    # ------------------------------------------------------------ receiving
    async def _reader(self, node: _Node, link) -> None:
        message, subscribe, unsubscribe = self._kinds
        topic_of = self._topic_of
        while True:
            msg = await link.read_response(timeout=math.inf, push_request=True)
            if isinstance(msg, list) and msg:  # (hiredis: a list subclass for pub/sub pushes)
                kind = msg[0]
                if kind == message:
                    topic = topic_of(msg[1])
                    if topic is not None:
                        self._message(node, topic, msg[2])
                elif kind == subscribe:
                    topic = topic_of(msg[1])
                    if topic is not None:
                        node.acked(topic)
                elif kind == unsubscribe:
                    topic = topic_of(msg[1]) if msg[1] is not None else None
                    if topic is not None:
                        node.unsubscribed(topic)
                elif kind == b"pong":
                    node.pong()
            elif msg == b"PONG":
                node.pong()
            elif isinstance(msg, Exception):
                self._poke()  # (MOVED for an SSUBSCRIBE: the topology changed)
                raise BrokerError(f"Redis error on the link to {node.name}: {msg}")

    def _message(self, node: _Node, topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        if self._owner.get(topic) is not node:  # not wanted, or served by another node now
            return
        sp = payload.find(b" ")
        try:
            i = int(payload[1:sp])
            data = _decode(payload[:1], payload[sp + 1:])
        except (ValueError, UnicodeDecodeError):
            logger.error("redis broker: dropped a malformed message on topic %r (not from fastws?)", topic)
            self.counters["missed"] += 1
            return
        held = node.recovering.get(topic)
        if held is not None:
            held.append((i, data))
            return
        self._deliver(topic, i, data)

    async def _recover(self, node: _Node, topics) -> None:
        """After (re)subscribing ``topics`` on ``node``: deliver or count what
        was published while this process was not listening, then the live
        messages held meanwhile."""
        reads = {}
        for topic in topics:
            last = self._last.get(topic)
            if last is not None:
                reads[topic] = await self._read_after(topic, last, node)
        await node.barrier()  # every live message up to the reads has arrived (held)
        counters = self.counters
        corked = False
        for topic, (counter, entries) in reads.items():
            last = self._last.get(topic)
            if last is None:  # unsubscribed meanwhile
                continue
            if counter < last:
                counters["resets"] += 1
                self._last[topic] = last = 0
            for i, data in entries:
                if i > last:
                    corked = True
                    self._deliver(topic, i, data)
                    counters["recovered"] += 1
                    last = i
        for topic in topics:
            for i, data in node.recovering.pop(topic, None) or ():
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

    # ------------------------------------------------------------ the cluster's topology
    def _poke(self) -> None:
        """Read the cluster's topology again soon (a node failed, MOVED, ...)."""
        if self._poked is not None:
            self._poked.set()

    def _node_down(self, node: _Node) -> None:
        self._poke()

    def _slot_left(self, node: _Node, topic: str) -> None:
        """Redis unsubscribed ``topic`` on ``node`` (its slot moved away):
        serve it where the topology says, recovering from the history."""
        node.forget(topic)
        if self._owner.get(topic) is node:
            self._owner[topic] = None
        self._poke()

    async def _watch(self) -> None:
        """Keep the slot map current: every ``health_interval`` while all is
        well, every ``reconnect_min`` doubling up to 1 s while a node is down
        or a slot has no master, and at once when poked."""
        delay = self.reconnect_min
        failing = False
        while not self._closed:
            self._poked.clear()
            try:
                await self._refresh()
                if failing:
                    logger.info("redis broker: read the topology of the Redis Cluster at %s again",
                                self.safe_url)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per series, not once per attempt
                    logger.warning("redis broker: cannot read the topology of the Redis Cluster at %s (%s); "
                                   "retrying", self.safe_url, exc)
                failing = True
            self._topology_read.set()
            if self.connected:
                delay, wait = self.reconnect_min, self.health_interval or 5.0
            else:
                wait, delay = delay, min(delay * 2, max(self.reconnect_min, min(1.0, self.reconnect_max)))
            try:
                await asyncio.wait_for(self._poked.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _refresh(self) -> None:
        async with self._topology_lock:
            reply, errors = None, []
            candidates = [a for a, n in self._nodes.items() if n.up] + self._known + self.cluster.seeds
            for addr in dict.fromkeys(candidates):
                try:
                    reply = await self._ask_shards(addr)
                    break
                except Exception as exc:
                    errors.append(f"{addr[0]}:{addr[1]}: {exc or type(exc).__name__}")
            if reply is None:
                raise BrokerUnavailable("no node of the Redis Cluster answered CLUSTER SHARDS: " + "; ".join(errors))
            self._apply(read_shards(reply, tls=self.cluster.scheme == "rediss"))

    async def _ask_shards(self, addr):
        node = self._nodes.get(addr)
        if node is not None and node.up:
            return await node.client.execute_command("CLUSTER", "SHARDS")
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.from_url(self.cluster.node_url(*addr), retry=Retry(NoBackoff(), 0),
                                   socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            return await client.execute_command("CLUSTER", "SHARDS")
        finally:
            await client.aclose()

    def _apply(self, shards) -> None:
        """Route every slot to its shard's master; move the topics whose
        master changed (the new node recovers them from the history); stop
        the nodes that are no longer masters."""
        slot_node: list = [None] * SLOTS
        masters = set()
        for ranges, master, _ in shards:
            if master is None or not ranges:
                continue
            masters.add(master)
            node = self._nodes.get(master)
            if node is None:
                node = self._nodes[master] = _Node(self, self.cluster.node_url(*master))
                node.start()
            for first, last in ranges:
                slot_node[first:last + 1] = [node] * (last - first + 1)
        self._known = [addr for _, _, nodes in shards for addr in nodes]
        self._slot_node = slot_node
        moves = collections.Counter()
        for topic in self._wanted:
            if not tag_ok(topic):
                continue
            new = slot_node[topic_slot(topic)]
            old = self._owner.get(topic)
            if new is old:
                continue
            if old is not None:
                old.forget(topic)  # (what it still sends is dropped: not the owner)
            self._owner[topic] = new
            if new is not None:
                new.want(topic, recover=topic in self._last)
                self.counters["moved"] += 1
                moves[(old.name if old is not None else "nowhere", new.name)] += 1
        for (old, new), n in moves.items():
            logger.info("redis broker: %d topics moved from %s to %s (failover or slot migration); recovering "
                        "what their subscribers missed from the history", n, old, new)
        for addr in [a for a in self._nodes if a not in masters]:
            node = self._nodes.pop(addr)
            logger.info("redis broker: %s serves no slot now; closing its link", node.name)
            self._spawn(node.close())

    def __repr__(self):
        return (f"<RedisBroker {self.safe_url} {'connected' if self.connected else 'not connected'} "
                f"topics={len(self._wanted)}>")
