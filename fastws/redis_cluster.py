"""Redis Cluster plumbing for the broker: the cluster URL, hash-tagged keys,
slots, and the ``CLUSTER SHARDS`` reply. No I/O here; fastws/broker.py
drives the cluster. See docs/deployment/redis-cluster.md.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .exceptions import ConfigError

__all__ = ["SLOTS", "CLUSTER_SCHEMES", "ClusterURL", "parse_cluster_url", "tag_ok", "topic_slot", "read_shards"]

SLOTS = 16384
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

Address = tuple[str, int]
Shard = tuple[list[tuple[int, int]], "Address | None", list[Address]]


class ClusterURL:
    """``redis+cluster://[user:password@]host:port[,host:port...][/?options]``:
    the seed nodes and how to reach any node of the cluster."""

    __slots__ = ("seeds", "scheme", "userinfo", "query")

    def __init__(self, seeds: list[Address], scheme: str, userinfo: str, query: str) -> None:
        self.seeds = seeds          # [(host, port), ...]
        self.scheme = scheme        # redis or rediss (TLS)
        self.userinfo = userinfo    # "user:password@" or ""
        self.query = query

    def node_url(self, host: str, port: int) -> str:
        """A redis-py URL for one node (database 0, the only one in a cluster)."""
        h = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{self.userinfo}{h}:{port}/0" + (f"?{self.query}" if self.query else "")


def parse_cluster_url(url: str) -> ClusterURL:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://, got {url!r}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ConfigError(f"a Redis Cluster has only database 0; {url!r} names database {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    seeds: list[Address] = []
    for part in hosts.split(","):
        try:
            parsed = urlsplit(f"//{part}")
            host, port = parsed.hostname, parsed.port
        except ValueError:
            host = port = None
        if not host or not port:
            raise ConfigError(f"a Redis Cluster URL lists seed nodes as host:port[,host:port...], got {part!r} "
                              f"in {url!r}")
        seeds.append((host, port))
    for key, _ in parse_qsl(query):
        if key == "db":
            raise ConfigError("a Redis Cluster has only database 0 (no ?db=)")
    return ClusterURL(seeds, scheme.partition("+")[0], userinfo + at, query)


def tag_ok(topic: str) -> bool:
    """Whether ``{topic}`` is a hash tag: the keys ``prefix{topic}:...`` then
    share one slot. Not for an empty topic or one starting with ``}`` (the
    tag would be empty and Redis would hash each whole key)."""
    return bool(topic) and topic[0] != "}"


def topic_slot(topic: str) -> int:
    """The hash slot of a topic's keys and channel (the hash tag is the topic
    up to its first ``}``, as Redis reads ``{topic}``)."""
    from redis.crc import key_slot

    tag = topic.encode("utf-8").split(b"}", 1)[0]
    return key_slot(b"{" + tag + b"}")


def _field(entry: Any, name: bytes) -> Any:
    if isinstance(entry, dict):
        return entry.get(name, entry.get(name.decode()))
    items = list(entry)
    for i in range(0, len(items) - 1, 2):
        key = items[i]
        if key == name or key == name.decode():
            return items[i + 1]
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_shards(reply: Any, tls: bool = False) -> list[Shard]:
    """``CLUSTER SHARDS`` (Redis 7.0+) as ``[(ranges, master, nodes), ...]``:
    ``ranges`` [(first, last), ...], ``master`` the (host, port) of the
    shard's healthy master or None (it failed and no replica is promoted
    yet), ``nodes`` every (host, port) of the shard."""
    out: list[Shard] = []
    for shard in reply:
        flat = [int(x) for x in _field(shard, b"slots") or ()]
        ranges = list(zip(flat[::2], flat[1::2]))
        master: Address | None = None
        nodes: list[Address] = []
        for node in _field(shard, b"nodes") or ():
            host = _text(_field(node, b"endpoint") or b"")
            if host in ("", "?"):
                host = _text(_field(node, b"ip") or b"")
            port = _field(node, b"tls-port") if tls else _field(node, b"port")
            if not host or not port:
                continue
            addr = (host, int(port))
            nodes.append(addr)
            if _text(_field(node, b"role")) == "master" and _text(_field(node, b"health")) == "online":
                master = addr
        out.append((ranges, master, nodes))
    return out
