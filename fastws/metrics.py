"""Health, Prometheus metrics and a connection limit on the WebSocket port.

``GET /healthz`` (200 ``ok``; 503 ``draining`` during a graceful shutdown),
``GET /metrics`` (Prometheus text format) and ``limit_connections=N`` (503
with ``Retry-After`` while N WebSockets are open). Nothing is counted per
connection or in Python per message: messages and bytes are the codec's
process-wide C counters, the rest is counted per event, and a scrape never
walks the connections. With several workers, each writes a snapshot every
``SNAPSHOT_INTERVAL`` seconds and the one that takes the scrape answers for
all, labelled ``worker="<index>"``.
See docs/guide/cli.md#healthz-and-metrics.
"""
from __future__ import annotations

import json
import logging
import os
import time

from .codec import counters
from .exceptions import InvalidRequest
from .http import Response

__all__ = ["ServerCounters", "LogLimiter", "close_code_label", "EVENTS", "snapshot", "Observability",
           "instrument", "SNAPSHOT_INTERVAL", "DRAIN_RETRY_AFTER"]

logger = logging.getLogger("fastws.metrics")

SNAPSHOT_INTERVAL = 2.0
# Retry-After (seconds) of the 503 an upgrade gets while the server drains.
DRAIN_RETRY_AFTER = 5


# The routine ends of a connection, logged at DEBUG and counted here (the
# label values of fastws_connection_events_total: a fixed set).
EVENTS = (
    "handshake_timeout",   # no complete upgrade request within handshake_timeout
    "close_timeout",       # the closing handshake did not finish within close_timeout
    "protocol_error",      # the peer broke RFC 6455: closed with the error's code
    "keepalive_timeout",   # a keepalive ping unanswered within ping_timeout
    "idle_timeout",        # no data message within idle_timeout
    "write_buffer_full",   # the peer does not read: write buffer over max_write_buffer
    "write_timeout",       # the write buffer above write_limit for write_timeout
)

# RFC 6455 7.4.1 and the IANA registry: the codes that keep their own label.
_NAMED_CODES = {code: str(code) for code in range(1000, 1016)}


def close_code_label(code: int) -> str:
    """The label value of a close code: ``1000``..``1015`` as their numbers,
    ``3xxx`` (registered) and ``4xxx`` (private use) as two buckets, anything
    else ``other``; so a client choosing its codes cannot add series."""
    label = _NAMED_CODES.get(code)
    if label is not None:
        return label
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


class LogLimiter:
    """At most ``burst`` records per ``interval`` seconds for each kind of
    message; the first record of a kind after a window in which some were
    dropped is preceded by "suppressed K similar messages". Kinds are names
    fixed in the code, so the state stays small. ``flush()`` logs the pending
    summaries (the server calls it when it closes)."""

    __slots__ = ("burst", "interval", "_clock", "_kinds")

    def __init__(self, burst: int = 10, interval: float = 60.0, clock=time.monotonic):
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._kinds: dict = {}  # kind -> [window start, logged in it, suppressed in it, logger, level]

    def log(self, log: logging.Logger, level: int, kind: str, msg: str, *args, **kwargs) -> bool:
        """Log ``msg % args`` unless ``kind`` is over its budget; True if logged."""
        now = self._clock()
        state = self._kinds.get(kind)
        if state is None or now - state[0] >= self.interval:
            if state is not None and state[2]:
                self._summary(kind, state)
            state = self._kinds[kind] = [now, 0, 0, log, level]
        if state[1] >= self.burst:
            state[2] += 1
            return False
        state[1] += 1
        log.log(level, msg, *args, **kwargs)
        return True

    def flush(self) -> None:
        for kind, state in self._kinds.items():
            if state[2]:
                self._summary(kind, state)
                state[2] = 0

    def _summary(self, kind: str, state: list) -> None:
        state[3].log(state[4], "suppressed %d similar messages (%s) in %gs", state[2], kind, self.interval)


class ServerCounters:
    """Per-server totals, updated per connection or per event (never per message)."""

    __slots__ = ("connections_total", "upgraded", "ws_closed", "pings_sent", "ping_timeouts", "refused_by",
                 "close_sent", "close_received", "events", "log")

    def __init__(self):
        self.connections_total = 0   # TCP connections accepted
        self.upgraded = 0            # WebSocket handshakes completed (101)
        self.ws_closed = 0           # of those, closed since
        self.pings_sent = 0          # keepalive pings
        self.ping_timeouts = 0       # keepalive pings not answered in ping_timeout
        self.refused_by: dict = {}   # reason -> handshakes refused
        self.close_sent: dict = {}      # close code -> connections
        self.close_received: dict = {}  # close code label (1006: none received) -> connections
        self.events: dict = dict.fromkeys(EVENTS, 0)  # routine ends of connections, by kind
        self.log = LogLimiter()  # the server's per-connection warnings and errors

    def event(self, kind: str) -> None:
        self.events[kind] += 1

    def refused(self, reason: str) -> None:
        self.refused_by[reason] = self.refused_by.get(reason, 0) + 1

    def fold(self, conn) -> None:
        """A connection ended: count its close codes (by close_code_label)."""
        if conn.path is not None:  # it was a WebSocket (the handshake succeeded)
            self.ws_closed += 1
            sent = conn.sent_close_code
            if sent is not None:
                sent = close_code_label(sent)
                self.close_sent[sent] = self.close_sent.get(sent, 0) + 1
            received = close_code_label(conn.close_code if conn.close_code is not None else 1006)
            self.close_received[received] = self.close_received.get(received, 0) + 1


def snapshot(server) -> dict:
    """The server's counters now, as plain JSON-able values."""
    c = server.counters
    mi, bi, mo, bo = counters()  # this process, server side (see the module docstring)
    stats = server.stats
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "connections_open": len(server.connections),
        "websockets_open": c.upgraded - c.ws_closed,
        "connections_total": c.connections_total,
        "websockets_total": c.upgraded,
        "refused": {str(k): v for k, v in c.refused_by.items()},
        "messages_received": mi,
        "bytes_received": bi,
        "messages_sent": mo,
        "bytes_sent": bo,
        "pings_sent": c.pings_sent,
        "ping_timeouts": c.ping_timeouts,
        "slow_consumer_drops": stats.get("slow_consumer_drops", 0),
        "slow_consumer_closes": stats.get("slow_consumer_closes", 0),
        "publishes": stats.get("publishes", 0),
        "deliveries": stats.get("deliveries", 0),
        "close_sent": {str(k): v for k, v in c.close_sent.items()},
        "close_received": {str(k): v for k, v in c.close_received.items()},
        "events": dict(c.events),
        "draining": bool(server.draining or server._closing),
    }


# name, type, help, key in the snapshot, label name (for dict values)
_FAMILIES = (
    ("fastws_connections_open", "gauge", "TCP connections open (WebSockets and pending handshakes)",
     "connections_open", None),
    ("fastws_websockets_open", "gauge", "WebSocket connections open", "websockets_open", None),
    ("fastws_connections", "counter", "TCP connections accepted", "connections_total", None),
    ("fastws_websockets", "counter", "WebSocket handshakes completed (101)", "websockets_total", None),
    ("fastws_handshakes_refused", "counter", "upgrade requests refused, by reason "
     "(http_<status>, limit, draining, process_request)", "refused", "reason"),
    ("fastws_messages_received", "counter", "data messages received", "messages_received", None),
    ("fastws_bytes_received", "counter", "bytes read from clients (handshakes and frames)",
     "bytes_received", None),
    ("fastws_messages_sent", "counter", "data messages sent by send() (not publish)", "messages_sent", None),
    ("fastws_bytes_sent", "counter", "payload length of the messages sent by send() (text: in characters; "
     "not publish)", "bytes_sent", None),
    ("fastws_pings_sent", "counter", "keepalive pings sent", "pings_sent", None),
    ("fastws_ping_timeouts", "counter", "keepalive pings unanswered within ping_timeout (closed 1011)",
     "ping_timeouts", None),
    ("fastws_slow_consumer_drops", "counter", "published messages skipped for a slow subscriber",
     "slow_consumer_drops", None),
    ("fastws_slow_consumer_closes", "counter", "slow subscribers cut off", "slow_consumer_closes", None),
    ("fastws_publishes", "counter", "server.publish/broadcast calls", "publishes", None),
    ("fastws_publish_deliveries", "counter", "messages written by publish/broadcast", "deliveries", None),
    ("fastws_close_codes_sent", "counter", "closed WebSockets by the close code the server sent "
     "(1000-1015; 3xxx, 4xxx: the ranges; other)", "close_sent", "code"),
    ("fastws_close_codes_received", "counter", "closed WebSockets by the close code received "
     "(1006: none; 1000-1015; 3xxx, 4xxx: the ranges; other)", "close_received", "code"),
    ("fastws_connection_events", "counter", "routine ends of connections, by event (" + ", ".join(EVENTS) + ")",
     "events", "event"),
)


class _Collector:
    def __init__(self, snapshots):
        self._snapshots = snapshots  # -> [(worker label or None, snapshot)]

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snaps = self._snapshots()
        base = ["worker"] if any(w is not None for w, _ in snaps) else []
        for name, kind, doc, key, label in _FAMILIES:
            labels = base + ([label] if label else [])
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=labels)
            for worker, snap in snaps:
                wl = [worker] if base else []
                value = snap.get(key, {} if label else 0)
                if label:
                    for k, v in sorted(value.items()):
                        family.add_metric(wl + [k], v)
                else:
                    family.add_metric(wl, value)
            yield family
        up = GaugeMetricFamily("fastws_draining", "1 while the server drains for shutdown", labels=base)
        for worker, snap in snaps:
            up.add_metric([worker] if base else [], 1 if snap["draining"] else 0)
        yield up


def _text(status, reason, body, headers=()):
    return Response(status, reason, list(headers), body.encode() if isinstance(body, str) else body)


class Observability:
    """Serves /healthz and /metrics and enforces ``limit_connections`` on one Server.

    It wraps the server's ``http_handler`` (its own paths first, the rest to the
    app's handler) and, when there is something to check per upgrade,
    ``process_request`` (the drain and the limit first). The server refuses
    upgrades while it drains by itself (503, ``Retry-After:
    DRAIN_RETRY_AFTER``), so with no limit, no hook of the app's and that
    Retry-After, no hook is installed: an upgrade costs no Python call here.
    """

    def __init__(self, server, *, limit_connections=None, metrics=True, retry_after=DRAIN_RETRY_AFTER,
                 shared_dir=None, worker=None):
        self.server = server
        self.limit = limit_connections
        self.metrics = metrics
        self.retry_after = retry_after
        self.shared_dir = shared_dir
        self.worker = worker
        self._registry = None
        self._timer = None
        self._app_http = server.http_handler
        self._app_request = server.process_request
        server.http_handler = self.http_handler
        if limit_connections is not None or self._app_request is not None or retry_after != DRAIN_RETRY_AFTER:
            server.process_request = self.process_request

    # ------------------------------------------------------------ upgrades
    def process_request(self, request):
        server = self.server
        if server.draining:
            raise _refusal("draining", "the server is shutting down", self.retry_after)
        limit = self.limit
        if limit is not None:
            c = server.counters
            if c.upgraded - c.ws_closed >= limit:
                raise _refusal("limit", f"connection limit ({limit}) reached", self.retry_after)
        if self._app_request is not None:
            return self._app_request(request)
        return None

    # ------------------------------------------------------------ plain HTTP
    def http_handler(self, request):
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            if self.server.draining:
                return _text(503, "Service Unavailable", "draining\n", [("Retry-After", str(self.retry_after))])
            return _text(200, "OK", "ok\n")
        if path == "/metrics" and self.metrics:
            return self.metrics_response()
        if self._app_http is not None:
            return self._app_http(request)
        return _text(426, "Upgrade Required", "This is a WebSocket endpoint: connect with a WebSocket client.\n",
                     [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")])

    def metrics_response(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import CollectorRegistry

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_Collector(self._snapshots))
        body = generate_latest(self._registry)
        return Response(200, "OK", [("Content-Type", CONTENT_TYPE_LATEST)], body)

    def _snapshots(self):
        own = snapshot(self.server)
        if self.shared_dir is None:
            return [(None, own)]
        snaps = {str(self.worker): own}
        try:
            names = os.listdir(self.shared_dir)
        except OSError:
            names = []
        for name in names:
            if not (name.startswith("worker-") and name.endswith(".json")):
                continue
            worker = name[len("worker-"):-len(".json")]
            if worker in snaps:
                continue
            try:
                with open(os.path.join(self.shared_dir, name)) as f:
                    snaps[worker] = json.load(f)
            except (OSError, ValueError):
                continue  # being replaced, or the worker is gone
        return sorted(snaps.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)

    # ------------------------------------------------------------ several workers
    def start_snapshots(self, loop) -> None:
        """Write this worker's snapshot now and every SNAPSHOT_INTERVAL seconds."""
        if self.shared_dir is None:
            return

        def tick():
            self.write_snapshot()
            self._timer = loop.call_later(SNAPSHOT_INTERVAL, tick)

        tick()

    def stop_snapshots(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.shared_dir is not None:
            self.write_snapshot()

    def write_snapshot(self) -> None:
        path = os.path.join(self.shared_dir, f"worker-{self.worker}.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(snapshot(self.server), f)
            os.replace(tmp, path)
        except OSError as exc:  # the directory went away: the supervisor is stopping
            logger.debug("cannot write the metrics snapshot %s: %s", path, exc)


def _refusal(reason: str, text: str, retry_after: int) -> InvalidRequest:
    exc = InvalidRequest(503, "Service Unavailable", [("Retry-After", str(retry_after))], text)
    exc.metric_reason = reason
    return exc


def instrument(server, **kwargs) -> Observability:
    """Add /healthz, /metrics and the connection limit to a fastws.Server."""
    return Observability(server, **kwargs)
