"""Presence: who is subscribed to a topic, on every node.

``await server.presence(topic)`` lists a topic's members (connection ids and
the identity from ``ws.user``); ``server.watch_presence(ws, topic)`` sends a
subscriber join/leave events. Without a broker: this process's subscribers.
With ``RedisBroker(..., presence=True)``: two hashes per topic in its hash
slot (members ``<node>:<conn>`` -> identity; nodes -> expiry on Redis's
clock), written in batches per loop iteration, and each node's expiry
refreshed every ``ttl / 3`` on the timer wheel: one script per Redis node per
TOPICS topics (none per connection): a crashed node's members vanish within the
TTL, a clean close removes them at once. Events are ``P`` messages on the
topic's channel (no id, no history). See docs/guide/presence.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import NamedTuple

from .codec import TimerEntry
from .exceptions import BrokerError, ConfigError

__all__ = ["Presence", "LocalPresence", "Member", "PresenceList", "make_presence", "identity_of", "MAX_IDENTITY",
           "MAX_MEMBERS", "BATCH", "TOPICS"]

logger = logging.getLogger("fastws.presence")

MAX_IDENTITY = 256    # bytes of UTF-8: a longer identity is not stored (the member shows user None)
MAX_MEMBERS = 10_000  # the most members one presence() call returns
BATCH = 1000          # member fields per script call, ids per event message
TOPICS = 200          # topics per script call

# Every script gets the keys in ARGV: the number of keys, then per topic its
# members, nodes and channel (K below), then its arguments (ARG below). KEYS
# names the first topic's keys only, which routes the call: many topics per
# call, all on one Redis node (on a cluster the flag lets a script touch
# keys of other slots of that node; Redis checks only the declared keys).
# _WRITE's arguments: node, ttl ms, and one string of netstring-like items
# (``<bytes>:<item>``, one argument for the whole batch: redis-py encodes
# each argument in Python), per topic: event payload ('' none), mode ('n':
# set this node's expiry and the keys' TTL, as a refresh does; 'f': the
# fields only, the topic is held and refreshed already; 'd': drop, this node
# holds no member of it any more), watch ('1'/'0': this node has watchers of
# the topic now, or no more, the field ``w:<node>`` of the nodes hash; '':
# unchanged; events are published only while some node has), the number of
# fields to set, field, value pairs, the number to delete, fields.
_WRITE = """%(flags)s
local nk = tonumber(ARGV[1])
local K = {}
for i = 1, nk do K[i] = ARGV[i + 1] end
local node, ttl, blob = ARGV[nk + 2], tonumber(ARGV[nk + 3]), ARGV[nk + 4]
local pos = 1
local function item()
  local c = string.find(blob, ':', pos, true)
  local n = tonumber(string.sub(blob, pos, c - 1))
  pos = c + n + 1
  return string.sub(blob, c + 1, c + n)
end
local function watched(pn)
  for _, f in ipairs(redis.call('HKEYS', pn)) do
    if string.sub(f, 1, 2) == 'w:' then
      return true
    end
  end
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for k = 1, #K, 3 do
  local p, pn = K[k], K[k + 1]
  local event, mode, watch = item(), item(), item()
  if mode == 'd' then
    redis.call('HDEL', pn, node, 'w:' .. node)
  elseif mode == 'n' then
    redis.call('HSET', pn, node, now + ttl)
  end
  if watch == '1' then
    redis.call('HSET', pn, 'w:' .. node, 1)
  elseif watch == '0' then
    redis.call('HDEL', pn, 'w:' .. node)
  end
  for _ = 1, tonumber(item()) do
    local f = item()
    redis.call('HSET', p, f, item())
  end
  for _ = 1, tonumber(item()) do
    redis.call('HDEL', p, item())
  end
  if mode ~= 'f' and redis.call('EXISTS', pn) == 1 then
    redis.call('PEXPIRE', p, ttl)
    redis.call('PEXPIRE', pn, ttl)
  end
  if event ~= '' and watched(pn) then
    redis.call('%(pub)s', K[k + 2], 'P' .. event)
  end
end
return 1
"""

# The start of _REFRESH and _READ: the keys K and the arguments ARG out of
# ARGV (see above), and Redis's clock in milliseconds.
_KEYS_ARGS_NOW = """local nk = tonumber(ARGV[1])
local K, ARG = {}, {}
for i = 1, nk do K[i] = ARGV[i + 1] end
for i = nk + 2, #ARGV do ARG[#ARG + 1] = ARGV[i] end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Keys as _WRITE. Arguments: node, ttl ms, most ids in a leave event, and a
# string of one '1'/'0' per topic: this node watches it. Per topic:
# refresh this node's expiry, delete the members of nodes whose expiry has
# passed (one leave event). Returns per topic: 1 if this node's field was
# missing (Redis lost it), and how many dead members it removed.
_REFRESH = "%(flags)s\n" + _KEYS_ARGS_NOW + """local node, ttl, limit, watches = ARG[1], tonumber(ARG[2]), tonumber(ARG[3]), ARG[4]
local out = {}
for k = 1, #K, 3 do
  local p, pn = K[k], K[k + 1]
  out[#out + 1] = redis.call('HSET', pn, node, now + ttl)
  local i = (k + 2) / 3
  if string.sub(watches, i, i) == '1' then
    redis.call('HSET', pn, 'w:' .. node, 1)
  else
    redis.call('HDEL', pn, 'w:' .. node)
  end
  redis.call('PEXPIRE', p, ttl)
  redis.call('PEXPIRE', pn, ttl)
  local nodes = redis.call('HGETALL', pn)
  local dead, any, watched = {}, false, false
  for j = 1, #nodes, 2 do
    local f = nodes[j]
    if string.sub(f, 1, 2) ~= 'w:' and tonumber(nodes[j + 1]) <= now then
      dead[f] = true
      any = true
      redis.call('HDEL', pn, f, 'w:' .. f)
    end
  end
  for j = 1, #nodes, 2 do
    local f = nodes[j]
    if string.sub(f, 1, 2) == 'w:' and not dead[string.sub(f, 3)] then
      watched = true
    end
  end
  local removed = 0
  if any then
    local gone = {}
    for _, f in ipairs(redis.call('HKEYS', p)) do
      local c = string.find(f, ':', 1, true)
      if c and dead[string.sub(f, 1, c - 1)] then
        redis.call('HDEL', p, f)
        removed = removed + 1
        if #gone < limit then
          gone[#gone + 1] = '"' .. f .. '"'
        end
      end
    end
    if removed > 0 and watched then
      redis.call('%(pub)s', K[k + 2], 'P{"leave":[' .. table.concat(gone, ',') .. ']}')
    end
  end
  out[#out + 1] = removed
end
return out
"""

# Keys: one topic's members, nodes (and channel). Argument: limit. Returns
# {total, field, value, ...}: the members whose node is alive, at most limit.
_READ = "%(flags)s\n" + _KEYS_ARGS_NOW + """local nodes = redis.call('HGETALL', K[2])
local alive = {}
for j = 1, #nodes, 2 do
  if string.sub(nodes[j], 1, 2) ~= 'w:' and tonumber(nodes[j + 1]) > now then
    alive[nodes[j]] = true
  end
end
local out = {0}
local limit = tonumber(ARG[1])
local all = redis.call('HGETALL', K[1])
for j = 1, #all, 2 do
  local f = all[j]
  local c = string.find(f, ':', 1, true)
  if c and alive[string.sub(f, 1, c - 1)] then
    out[1] = out[1] + 1
    if out[1] <= limit then
      out[#out + 1] = f
      out[#out + 1] = all[j + 1]
    end
  end
end
return out
"""


class Member(NamedTuple):
    """One subscriber of a topic."""
    id: str          # "<node id>:<connection id>", unique across the fleet while it is connected
    user: str | None  # the identity from ws.user, None when unknown


class PresenceList(NamedTuple):
    """What ``await server.presence(topic)`` returns."""
    members: list    # [Member, ...], at most ``limit``
    total: int       # how many there are (``len(members) < total``: cut at ``limit``)


def identity_of(user) -> str | None:
    """The identity stored for ``ws.user``: a str itself, a dict's ``sub``
    claim (a JWT's subject), an int as text; None otherwise or when longer
    than MAX_IDENTITY bytes of UTF-8."""
    if type(user) is dict:
        user = user.get("sub")
    if isinstance(user, bool) or user is None:
        return None
    if isinstance(user, int):
        user = str(user)
    if not isinstance(user, str) or len(user.encode("utf-8", "surrogatepass")) > MAX_IDENTITY:
        return None
    return user


def _pack(items) -> bytes:
    """``<bytes>:<item>`` for each str, as one argument (_WRITE reads it)."""
    out = []
    for item in items:
        b = item.encode("utf-8", "surrogatepass")
        out.append(b"%d:%s" % (len(b), b))
    return b"".join(out)


def _check_topic(topic) -> None:
    if type(topic) is not str:
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")


class Presence(TimerEntry):
    """The presence of one Server (module docstring). It follows the
    server's registry (``Topics.members_hook``) and, with a broker, keeps
    this process's members in Redis and refreshes them on the timer wheel."""

    __slots__ = ("server", "broker", "node", "ttl", "_key", "watchers", "pending", "held", "retry", "flips",
                 "_flushing", "_refreshing", "_loop", "_closed", "_tasks", "counters", "_scripts", "_results")

    def __init__(self, server, broker=None):
        self.server = server
        self.broker = broker if broker is not None and getattr(broker, "presence", False) else None
        self.ttl = float(getattr(broker, "presence_ttl", 30.0)) if self.broker is not None else 0.0
        self.node = os.urandom(6).hex()  # again in start(): each forked worker its own
        self._key = int.from_bytes(os.urandom(8), "little")
        self.watchers: dict = {}   # topic -> {conn: None}: subscribers that get join/leave events
        self.pending: dict = {}    # topic -> {field: identity or None (a leave)}, flushed soon
        self.held: dict = {}       # topic -> {field: identity}: this process's members in Redis
        self.retry: dict = {}      # topic -> changes Redis did not take: written at the next refresh
        self.flips: set = set()    # topics whose local watching started or ended: written soon
        self._flushing = False
        self._refreshing = False
        self._results: list = []
        self._loop = None
        self._closed = False
        self._tasks: set = set()
        # commands: script calls sent to Redis (refresh_commands of them by refreshes)
        self.counters = {"commands": 0, "refreshes": 0, "refresh_commands": 0, "failures": 0, "events": 0,
                         "rewrites": 0}
        self._scripts = None
        if self.broker is not None:
            server._topics.members_hook = self

    @property
    def distributed(self) -> bool:
        """Whether members are kept in Redis (a broker with presence=True)."""
        return self.broker is not None

    # ------------------------------------------------------------ ids
    def conn_id(self, conn) -> str:
        """``<node id>:<connection id>``: the connection id is its object id
        scrambled with a per-process key (unique while it is open; no address
        leaks)."""
        return f"{self.node}:{(id(conn) ^ self._key) & 0xFFFFFFFFFFFF:x}"

    # ------------------------------------------------------------ lifecycle
    def start(self, loop) -> None:
        """Called by each ``Server.start`` (once per listening socket): the first only."""
        if self._loop is not None:
            return
        self._loop = loop
        self.node = os.urandom(6).hex()
        if self.broker is not None:
            self._scripts = self.broker.presence_scripts(write=_WRITE, refresh=_REFRESH, read=_READ)
            self.broker.on_presence = self._event

    async def close(self) -> None:
        """A clean close: remove this process's members from Redis at once."""
        if self._closed:
            return
        self._closed = True
        if self.armed:
            self.server._timer_driver().cancel(self)
        if self._tasks:  # a batch in flight lands before the removal
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.broker is None or not self.held:
            return
        self.pending.clear()
        records = [(topic, [], list(fields), "d", True, False) for topic, fields in self.held.items()]
        self.held = {}
        try:
            await self.broker.presence_batch(self._calls(records), self._scripts)
        except Exception as exc:
            logger.warning("presence: could not remove this process's members from Redis (%s); they vanish "
                           "within %.0f s", exc, self.ttl)

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    # ------------------------------------------------------------ registry hooks (sync)
    def joined(self, conn, topic: str) -> None:
        if self._closed:
            return
        field = self.conn_id(conn)
        pending = self.pending.get(topic)
        if pending is None:
            pending = self.pending[topic] = {}
        pending[field] = identity_of(getattr(conn, "user", None)) or ""
        self._soon()

    def left(self, conn, topic: str) -> None:
        watchers = self.watchers.get(topic)
        if watchers is not None and watchers.pop(conn, 0) is None and not watchers:
            del self.watchers[topic]
            self._flip(topic)
        field = self.conn_id(conn)
        pending = self.pending.get(topic)
        if pending is None:
            pending = self.pending[topic] = {}
        pending[field] = None
        self._soon()

    def _soon(self) -> None:
        if not self._flushing and self._loop is not None and not self._closed:
            self._flushing = True
            self._spawn(self._flush())

    def _spawn(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ writes (batched)
    async def _flush(self) -> None:
        """Write what joined and left: per Redis node one script call for up
        to TOPICS topics and BATCH fields, all in one pipeline. A call Redis
        did not take is kept in ``retry`` and written again at the next
        refresh. While a batch is in flight the next one gathers."""
        try:
            await asyncio.sleep(0)  # the rest of this loop iteration joins the batch
            while self.pending and not self._closed:
                pending, self.pending = self.pending, {}
                flips, self.flips = self.flips, set()
                records = []
                for topic, changes in pending.items():
                    held = self.held.get(topic)
                    was = held is not None
                    if held is None:
                        held = self.held[topic] = {}
                        self._arm()
                    adds, gone = [], []
                    for field, value in changes.items():
                        if value is None:
                            if held.pop(field, None) is not None:
                                gone.append(field)
                        elif held.get(field) != value:
                            held[field] = value
                            adds.append((field, value))
                    if not held:
                        del self.held[topic]
                        if not was:
                            continue
                    if adds or gone or not held or topic in flips:
                        mode = "d" if not held else "f" if was else "n"
                        records.append((topic, adds, gone, mode, True, topic in flips or not was))
                if records:
                    for topic in await self._run(self._calls(records)):
                        self.retry.setdefault(topic, {}).update(pending[topic])
        finally:
            self._flushing = False
        if self.pending and not self._closed:
            self._soon()

    def _calls(self, records, name: str = "write"):
        """``(topic, adds, gone, mode, events, watch)`` records as script
        calls (_WRITE's items; ``watch``: send the watch flag): grouped by
        Redis node, at most TOPICS topics and about BATCH fields per call (a
        topic with more fields spans several records)."""
        ttl = self._ttl_ms()
        groups = self.broker.presence_groups([r[0] for r in records])
        by_topic: dict = {}
        for r in records:
            by_topic.setdefault(r[0], []).append(r)
        calls = []
        for topics in groups:
            keys_topics, items, fields = [], [], 0
            for topic in topics:
                for _, adds, gone, mode, events, watch in by_topic.pop(topic, ()):
                    flag = ("1" if topic in self.watchers else "0") if watch else ""
                    while True:
                        a, adds = adds[:BATCH], adds[BATCH:]
                        g, gone = gone[:BATCH - len(a)], gone[BATCH - len(a):]
                        if keys_topics and (len(keys_topics) >= TOPICS or fields + len(a) + len(g) > BATCH):
                            calls.append((keys_topics, name, [self.node, ttl, _pack(items)]))
                            keys_topics, items, fields = [], [], 0
                        last = not adds and not gone
                        keys_topics.append(topic)
                        items += [self._payload(a, g) if events and (a or g) else "",
                                  mode if last or mode != "d" else "f", flag, str(len(a))]
                        for field, value in a:
                            items += [field, value]
                        items.append(str(len(g)))
                        items += g
                        fields += len(a) + len(g)
                        if last:
                            break
            if keys_topics:
                calls.append((keys_topics, name, [self.node, ttl, _pack(items)]))
        return calls

    @staticmethod
    def _payload(adds, gone) -> str:
        return json.dumps({"join": [[f, v or None] for f, v in adds], "leave": gone}, separators=(",", ":"),
                          ensure_ascii=False)

    async def _run(self, calls) -> set:
        """Run the calls; the topics whose calls failed."""
        self.counters["commands"] += len(calls)
        try:
            results = await self.broker.presence_batch(calls, self._scripts)
        except Exception as exc:
            results = [exc] * len(calls)
        failed = {topic for (topics, _, _), r in zip(calls, results) if isinstance(r, Exception) for topic in topics}
        if failed:
            self.counters["failures"] += 1
            first = next(r for r in results if isinstance(r, Exception))
            logger.debug("presence: script calls to Redis for %d topics failed (%r); written again at the next "
                         "refresh", len(failed), first)
        self._results = results
        return failed

    # ------------------------------------------------------------ refresh (timer wheel)
    def _interval(self) -> float:
        return self.ttl / 3

    def _arm(self) -> None:
        if not self.armed and not self._closed and self._loop is not None:
            driver = self.server._timer_driver()
            driver.arm(self, driver.now() + self._interval())

    def on_timer(self, now):
        if self._closed or not (self.held or self.retry):
            return None
        if not self._refreshing:
            self._refreshing = True
            self._spawn(self._refresh())
        return now + self._interval()

    async def _refresh(self) -> None:
        """Per Redis node one script call per TOPICS topics this process
        holds, in one pipeline: refresh the node's expiry, drop crashed
        nodes' members; then write again what Redis lost or did not take."""
        try:
            retry, self.retry = self.retry, {}
            records = []
            for topic, changes in retry.items():  # written again as they stand now
                held = self.held.get(topic) or {}
                adds = [(f, held[f]) for f in changes if f in held]
                gone = [f for f in changes if f not in held]
                records.append((topic, adds, gone, "n" if held else "d", True, True))
            if records:
                for topic in await self._run(self._calls(records)):
                    self.retry.setdefault(topic, {}).update(retry[topic])
            if not self.held:
                return
            groups = self.broker.presence_groups(list(self.held))
            watchers = self.watchers
            calls = [(chunk, "refresh", [self.node, self._ttl_ms(), BATCH,
                                         "".join("1" if t in watchers else "0" for t in chunk)])
                     for topics in groups for chunk in (topics[i:i + TOPICS] for i in range(0, len(topics), TOPICS))]
            self.counters["refreshes"] += 1
            self.counters["refresh_commands"] += len(calls)
            await self._run(calls)
            lost = []
            for (topics, _, _), r in zip(calls, self._results):
                if isinstance(r, Exception):
                    continue
                lost += [t for t, new in zip(topics, r[::2]) if int(new) == 1 and self.held.get(t)]
            if lost:  # Redis lost them (a restart, a failover, an outage past the TTL): write them again
                self.counters["rewrites"] += len(lost)
                await self._run(self._calls([(t, list(self.held[t].items()), [], "n", False, True) for t in lost]))
        finally:
            self._refreshing = False

    # ------------------------------------------------------------ reading
    async def read(self, topic: str, limit: int = 1000) -> PresenceList:
        _check_topic(topic)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_MEMBERS:
            raise ConfigError(f"limit must be a whole number 0..{MAX_MEMBERS}, got {limit!r}")
        if self.broker is None:
            if self.server.broker is not None:
                raise BrokerError("presence is off for this broker (RedisBroker(..., presence=True))")
            conns = self.server._topics.members(topic)
            members = [Member(self.conn_id(c), identity_of(getattr(c, "user", None)))
                       for c in conns[:limit]]
            return PresenceList(members, len(conns))
        reply = (await self.broker.presence_batch([([topic], "read", [limit])], self._scripts,
                                                  raise_errors=True))[0]
        total = int(reply[0])
        members = []
        for i in range(1, len(reply) - 1, 2):
            field = reply[i].decode("utf-8", "replace")
            value = reply[i + 1].decode("utf-8", "replace")
            members.append(Member(field, value or None))
        return PresenceList(members, total)

    # ------------------------------------------------------------ events
    def watch(self, conn, topic: str) -> None:
        _check_topic(topic)
        if topic not in self.server._topics.topics_of(conn):
            raise BrokerError(f"watch_presence: the connection is not subscribed to {topic!r}")
        if self.broker is None:
            if self.server.broker is not None:
                raise BrokerError("presence is off for this broker (RedisBroker(..., presence=True))")
            self.server._topics.members_hook = self
        watchers = self.watchers.get(topic)
        if watchers is None:
            watchers = self.watchers[topic] = {}
            self._flip(topic)
        watchers[conn] = None

    def unwatch(self, conn, topic: str) -> None:
        watchers = self.watchers.get(topic)
        if watchers is not None:
            watchers.pop(conn, None)
            if not watchers:
                del self.watchers[topic]
                self._flip(topic)
        if self.broker is None and not self.watchers:
            self.server._topics.members_hook = None

    def _flip(self, topic: str) -> None:
        """The topic got its first watcher here or lost its last: tell Redis
        (events are published only while some node watches)."""
        if self.broker is not None and not self._closed:
            self.flips.add(topic)
            self.pending.setdefault(topic, {})
            self._soon()

    def watching(self, conn, topic: str) -> bool:
        watchers = self.watchers.get(topic)
        return watchers is not None and conn in watchers

    def _event(self, topic: str, payload: bytes) -> None:
        """A ``P`` message from the broker: tell this process's watchers."""
        watchers = self.watchers.get(topic)
        if not watchers:
            return
        try:
            body = json.loads(payload)
            joins = [{"id": str(f), "user": u if isinstance(u, str) else None} for f, u in body.get("join", ())]
            leaves = [str(f) for f in body.get("leave", ())]
        except (ValueError, TypeError, AttributeError):
            logger.error("presence: dropped a malformed presence event on topic %r", topic)
            return
        self._tell(topic, watchers, joins, leaves)

    def _tell(self, topic, watchers, joins, leaves) -> None:
        self.counters["events"] += 1
        text = json.dumps({"type": "presence", "topic": topic, "join": joins, "leave": leaves},
                          separators=(",", ":"), ensure_ascii=False)
        self.server.broadcast(text, list(watchers))


class LocalPresence(Presence):
    """Without a broker: events for this process's watchers straight from
    the registry, batched per event-loop iteration."""

    __slots__ = ()

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)
            pending, self.pending = self.pending, {}
            for topic, changes in pending.items():
                watchers = self.watchers.get(topic)
                if not watchers:
                    continue
                joins = [{"id": f, "user": v or None} for f, v in changes.items() if v is not None]
                leaves = [f for f, v in changes.items() if v is None]
                for i in range(0, max(len(joins), len(leaves)), BATCH):
                    self._tell(topic, watchers, joins[i:i + BATCH], leaves[i:i + BATCH])
        finally:
            self._flushing = False
        if self.pending and not self._closed:
            self._soon()

    def joined(self, conn, topic: str) -> None:
        if topic in self.watchers:
            Presence.joined(self, conn, topic)

    def left(self, conn, topic: str) -> None:
        if topic in self.watchers:
            Presence.left(self, conn, topic)

    async def close(self) -> None:
        self._closed = True
        self.watchers.clear()


def make_presence(server, broker):
    """The Presence for ``server``: kept in Redis when ``broker`` has
    presence on, else local."""
    if broker is not None and getattr(broker, "presence", False):
        tick = server.options.timer_tick
        if broker.presence_ttl < 3 * tick:
            raise ConfigError(f"presence_ttl ({broker.presence_ttl} s) must be at least 3 x timer_tick "
                              f"({tick} s): members are refreshed every presence_ttl / 3 on the timer wheel")
        return Presence(server, broker)
    return LocalPresence(server, None)


