"""Locust support: ``WebSocketUser``, a plain WebSocket user for locust.

locust runs its users as gevent greenlets, where asyncio clients do not work.
``WebSocketUser`` drives ``fastws.syncclient.SyncWebSocket`` (blocking sockets,
patched by gevent) and reports each operation to locust as ``CONNECT``,
``REQ``, ``PING``, ``SEND``, ``RECV`` or ``CLOSE``, with numbers that mean what
they say: a ``RECV`` gets a response time only when a real latency is known,
never a fake 0 ms. ``hold()`` serves capacity tests; connections to a loopback
target are spread over several source addresses. Extra statistics are summed
on the master and written with ``--ws-stats-file``.
See docs/guide/locust.md.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import time
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Union
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from locust import User, events
from locust.exception import StopUser

from ..exceptions import CLOSE_GOING_AWAY, CLOSE_NORMAL, ConnectionClosed
from ..syncclient import SyncWebSocket

Message = Union[str, bytes]
# request(match=...): None (the next message), a message to equal, or a predicate
Match = Union[None, str, bytes, Callable[[Message], bool]]

__all__ = ["WebSocketUser", "stats", "WSStats"]

logger = logging.getLogger("fastws.locust")

_FIRST_SOURCE = int(ipaddress.IPv4Address("127.0.0.2"))


# ---------------------------------------------------------------- stats ----
class WSStats:
    """Connection-level counters of this process (a locust worker, or the
    local runner), plus, on a master, the sums reported by the workers."""

    def __init__(self) -> None:
        self.live = set()
        self.opened = 0
        self.close_codes = Counter()
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._closed_msgs_in = 0
        self._closed_msgs_out = 0
        self._sent = {"bytes_in": 0, "bytes_out": 0, "messages_in": 0, "messages_out": 0, "opened": 0}
        self._sent_codes = Counter()
        self.peak_open = 0
        # master side
        self.workers = {}          # client_id -> last reported "open"
        self.totals = Counter()    # summed deltas from workers
        self.worker_codes = Counter()
        self.worker_peaks = {}

    def add(self, ws: SyncWebSocket) -> None:
        self.live.add(ws)
        self.opened += 1
        if len(self.live) > self.peak_open:
            self.peak_open = len(self.live)

    def remove(self, ws: SyncWebSocket) -> None:
        if ws in self.live:
            self.live.discard(ws)
            self._closed_bytes_in += ws.bytes_in
            self._closed_bytes_out += ws.bytes_out
            self._closed_msgs_in += ws.messages_in
            self._closed_msgs_out += ws.messages_out
            self.close_codes[str(ws.close_code)] += 1

    def local(self) -> dict:
        """Cumulative figures of this process."""
        live = self.live
        return {
            "open": len(live),
            "peak_open": self.peak_open,
            "opened": self.opened,
            "bytes_in": self._closed_bytes_in + sum(ws.bytes_in for ws in live),
            "bytes_out": self._closed_bytes_out + sum(ws.bytes_out for ws in live),
            "messages_in": self._closed_msgs_in + sum(ws.messages_in for ws in live),
            "messages_out": self._closed_msgs_out + sum(ws.messages_out for ws in live),
            "close_codes": dict(self.close_codes),
        }

    def delta(self) -> dict:
        """What changed since the last report to the master (counters as
        deltas, so a worker restart loses nothing already reported)."""
        now = self.local()
        out = {"open": now["open"], "peak_open": now["peak_open"]}
        for key, last in self._sent.items():
            out[key] = now[key] - last
            self._sent[key] = now[key]
        codes = Counter(now["close_codes"])
        codes.subtract(self._sent_codes)
        out["close_codes"] = {k: v for k, v in codes.items() if v}
        self._sent_codes = Counter(now["close_codes"])
        return out

    def merge(self, client_id: str, data: dict) -> None:
        self.workers[client_id] = data["open"]
        self.worker_peaks[client_id] = data.get("peak_open", 0)
        for key in ("bytes_in", "bytes_out", "messages_in", "messages_out", "opened"):
            self.totals[key] += data.get(key, 0)
        self.worker_codes.update(data.get("close_codes", {}))
        total_open = sum(self.workers.values())
        if total_open > self.peak_open:
            self.peak_open = total_open

    def summary(self, distributed: bool) -> dict:
        if not distributed:
            return self.local()
        return {
            "open": sum(self.workers.values()),
            "peak_open": self.peak_open,
            "workers": len(self.workers),
            "worker_peak_open": dict(self.worker_peaks),
            "opened": self.totals["opened"],
            "bytes_in": self.totals["bytes_in"],
            "bytes_out": self.totals["bytes_out"],
            "messages_in": self.totals["messages_in"],
            "messages_out": self.totals["messages_out"],
            "close_codes": dict(self.worker_codes),
        }


stats = WSStats()
_state = {"distributed": False, "env": None, "logger": None}


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument("--ws-stats-file", default="", help="fastws.locust: write the WebSocket "
                        "connection statistics (open, peak, close codes, bytes) here as JSON at the end")
    parser.add_argument("--ws-stats-interval", type=float, default=10.0,
                        help="fastws.locust: seconds between two log lines of connection statistics (0: none)")


@events.init.add_listener
def _on_init(environment, **_kw):
    from locust.runners import MasterRunner, WorkerRunner
    runner = environment.runner
    _state["env"] = environment
    _state["distributed"] = isinstance(runner, MasterRunner)
    if isinstance(runner, WorkerRunner):
        return
    opts = environment.parsed_options
    interval = getattr(opts, "ws_stats_interval", 10.0) if opts is not None else 10.0
    if interval and interval > 0:
        _state["logger"] = gevent.spawn(_log_loop, interval)


@events.report_to_master.add_listener
def _report_to_master(client_id, data):
    data["fastws"] = stats.delta()


@events.worker_report.add_listener
def _worker_report(client_id, data):
    if "fastws" in data:
        stats.merge(client_id, data["fastws"])


def _log_loop(interval: float) -> None:
    while True:
        gevent.sleep(interval)
        s = stats.summary(_state["distributed"])
        logger.info("fastws: open=%s peak=%s opened=%s in=%s B out=%s B close_codes=%s", s["open"],
                    s["peak_open"], s["opened"], s["bytes_in"], s["bytes_out"], s["close_codes"])


@events.quitting.add_listener
def _on_quitting(environment, **_kw):
    from locust.runners import WorkerRunner
    if isinstance(environment.runner, WorkerRunner):
        return
    if _state["logger"] is not None:
        _state["logger"].kill(block=False)
    s = stats.summary(_state["distributed"])
    print("fastws.locust connection stats: " + json.dumps(s, sort_keys=True), flush=True)
    path = getattr(environment.parsed_options, "ws_stats_file", "") if environment.parsed_options else ""
    if path:
        with open(path, "w") as f:
            json.dump(s, f, indent=1, sort_keys=True)


# ------------------------------------------------------- source addresses --
_source_counter = [os.getpid()]


def _next_source(count: int) -> str:
    """127.0.0.2, 127.0.0.3, ... round-robin, each process starting elsewhere."""
    _source_counter[0] += 1
    return str(ipaddress.IPv4Address(_FIRST_SOURCE + _source_counter[0] % count))


_next_slot = [0.0]


def _pace(rate: float) -> None:
    """Wait for this process's next connect slot (one every 1/rate s)."""
    now = time.monotonic()
    slot = max(now, _next_slot[0])
    _next_slot[0] = slot + 1.0 / rate
    if slot > now:
        gevent.sleep(slot - now)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _size(message) -> int:
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)


# ------------------------------------------------------------------ user ----
class WebSocketUser(User):
    """A locust user with one WebSocket connection (``self.ws``).

    Class attributes (override in a subclass):

    - ``host``: ``ws://host:port`` (or set with ``--host``); ``connect(path)``
      appends the path.
    - ``subprotocols``, ``headers``: offered in the handshake.
    - ``receive_loop``: False (default): messages are read by ``recv()`` /
      ``request()`` / ``hold()``; True: a background greenlet reads them as
      they come and calls ``on_message(message)`` (its default reports a
      ``RECV``); ``request()`` and ``ping()`` still work.
    - ``source_addresses``: how many loopback source addresses to spread the
      connections over when the target is loopback (127.0.0.2 ...; default
      64, env ``FASTWS_LOCUST_SOURCES``); 0 or None: let the kernel choose.
    - ``connect_rate``: at most this many connects per second in this
      process (None: no limit; env ``FASTWS_CONNECT_RATE``).  For large
      ramps, spawn the users at once (``-r`` = ``-u``) and let this pace the
      connects: the locust master then sends one spawn message instead of one
      a second (each costs a locust 2.x worker a noticeable amount of CPU).
      The wait is not part of the CONNECT time.
    - ``connect_timeout``, ``timeout`` (for request/recv/ping), ``max_size``.
    - ``compression``: None (default: no permessage-deflate offer, so that
      thousands of users hold no zlib state) or ``"deflate"`` (the offer of
      ``fastws.syncclient.connect``, whose default it is).
    """

    abstract = True
    subprotocols = None
    headers = None
    receive_loop = False
    source_addresses = int(os.environ.get("FASTWS_LOCUST_SOURCES", "64"))
    connect_rate = float(os.environ["FASTWS_CONNECT_RATE"]) if os.environ.get("FASTWS_CONNECT_RATE") else None
    connect_timeout = 10.0
    timeout = 10.0
    max_size = 1048576
    compression: str | None = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws = None
        self._path = "/"
        self._waiters = None
        self._closing = False

    # ---------------------------------------------------------- reporting
    def _fire(self, request_type, name, response_time, length, exception=None):
        self.environment.events.request.fire(
            request_type=request_type, name=name, response_time=response_time,
            response_length=length, exception=exception, context={}, url=None,
        )

    def _name(self, name):
        return name if name is not None else self._path

    # ------------------------------------------------------------ connect
    def connect(self, url: str = "/", subprotocols: Iterable[str] | None = None,
                headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                name: str | None = None) -> SyncWebSocket:
        """Open the connection: ``url`` is a full ws:// URL or a path appended
        to ``host``.  Reports ``CONNECT``; a failure is reported, then raises
        locust's StopUser (the user stops; catch it to retry instead)."""
        if self.ws is not None and not self.ws.closed:
            self.close(name=name)
        if "://" not in url:
            url = (self.host or "").rstrip("/") + (url if url.startswith("/") else "/" + url)
        parts = urlsplit(url)
        self._path = parts.path or "/"
        name = self._name(name)
        if self.connect_rate:
            _pace(self.connect_rate)
        source = None
        if self.source_addresses and _is_loopback(parts.hostname or ""):
            source = _next_source(self.source_addresses)
        start = time.perf_counter()
        try:
            ws = SyncWebSocket.open(
                url, subprotocols=subprotocols if subprotocols is not None else self.subprotocols,
                headers=headers if headers is not None else (self.headers or ()),
                timeout=self.connect_timeout, source_address=source, max_size=self.max_size,
                compression=self.compression,
            )
        except Exception as exc:
            self._fire("CONNECT", name, _ms(time.perf_counter() - start), 0, exc)
            self.ws = None
            raise StopUser() from exc
        self._fire("CONNECT", name, _ms(time.perf_counter() - start), 0)
        self.ws = ws
        self._closing = False
        ws.on_close = self._on_closed
        stats.add(ws)
        if ws.closed:  # failed on bytes that came with the 101
            self._on_closed(ws)
            return ws
        if self.receive_loop:
            self._waiters = []
            ws.start_reader(self._dispatch, spawn=gevent.spawn)
        return ws

    def _on_closed(self, ws: SyncWebSocket) -> None:
        stats.remove(ws)
        if self._waiters:
            for _, result in self._waiters:
                result.set_exception(ws._closed_exc())
            self._waiters = []
        if self._closing:
            return
        # Not asked for by this user: the server closed, the connection broke,
        # or the server broke the protocol.
        code = ws.close_code
        if ws.error is not None and ws.recv_code is None and ws.sent_code is not None:
            self._fire("CLOSE", "protocol error", None, 0, ws._closed_exc())
        elif code in (CLOSE_NORMAL, CLOSE_GOING_AWAY):
            self._fire("CLOSE", "closed by server", None, 0)
        else:
            self._fire("CLOSE", "closed by server", None, 0, ws._closed_exc())

    # -------------------------------------------------------- operations
    def _need_ws(self) -> SyncWebSocket:
        if self.ws is None:
            raise RuntimeError("not connected: call self.connect() first (e.g. in on_start)")
        return self.ws

    def send(self, data: str | bytes | bytearray | memoryview, name: str | None = None) -> None:
        """Send one message; reports ``SEND`` (time to write the frame)."""
        ws = self._need_ws()
        start = time.perf_counter()
        try:
            n = ws.send(data)
        except Exception as exc:
            self._fire("SEND", self._name(name), _ms(time.perf_counter() - start), 0, exc)
            return
        self._fire("SEND", self._name(name), _ms(time.perf_counter() - start), n)

    def recv(self, timeout: float | None = None, name: str | None = None) -> Message | None:
        """The next message, or None after a failure (timeout, closed), which
        is reported.  Reports ``RECV`` with its size (and a latency only if
        ``message_latency`` gives one)."""
        ws = self._need_ws()
        try:
            message = ws.recv(self.timeout if timeout is None else timeout)
        except Exception as exc:
            self._fire("RECV", self._name(name), None, 0, exc)
            return None
        self.report_receive(message, name=name)
        return message

    def request(self, data: str | bytes | bytearray | memoryview, match: Match = None,
                timeout: float | None = None, name: str | None = None) -> Message | None:
        """Send ``data`` and wait for its reply; reports ``REQ`` with the round
        trip.  ``match``: None (the next message is the reply), a str/bytes
        (the reply equal to it) or a callable(message) -> bool.  Messages that
        do not match go to ``on_message``.  Returns the reply or None on failure."""
        ws = self._need_ws()
        name = self._name(name)
        timeout = self.timeout if timeout is None else timeout
        pred = _predicate(match)
        start = time.perf_counter()
        try:
            if self._waiters is not None:  # a receive loop reads
                result = AsyncResult()
                entry = (pred, result)
                self._waiters.append(entry)
                try:
                    ws.send(data)
                    reply = result.get(timeout=timeout)
                except gevent.Timeout:
                    raise TimeoutError(f"no matching reply within {timeout} s") from None
                finally:
                    if entry in self._waiters:
                        self._waiters.remove(entry)
            else:
                ws.send(data)
                deadline = time.monotonic() + timeout
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no matching reply within {timeout} s")
                    message = ws.recv(remaining)
                    if pred(message):
                        reply = message
                        break
                    self.on_message(message)
        except Exception as exc:
            self._fire("REQ", name, _ms(time.perf_counter() - start), 0, exc)
            return None
        self._fire("REQ", name, _ms(time.perf_counter() - start), _size(reply))
        return reply

    def ping(self, timeout: float | None = None, name: str = "ping") -> float | None:
        """PING and wait for the PONG; reports ``PING`` with the round trip.
        Returns the round trip in seconds, or None on failure."""
        ws = self._need_ws()
        start = time.perf_counter()
        try:
            rtt = ws.ping(self.timeout if timeout is None else timeout)
        except Exception as exc:
            self._fire("PING", name, _ms(time.perf_counter() - start), 0, exc)
            return None
        self._fire("PING", name, _ms(rtt), 0)
        return rtt

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", name: str | None = None) -> None:
        """Closing handshake; reports ``CLOSE`` (a failure if the server did
        not answer with a CLOSE in time)."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        self._closing = True
        start = time.perf_counter()
        try:
            ws.close(code, reason, timeout=self.timeout)
        except Exception as exc:
            self._fire("CLOSE", self._name(name), _ms(time.perf_counter() - start), 0, exc)
            return
        elapsed = _ms(time.perf_counter() - start)
        if ws.recv_code is None:
            self._fire("CLOSE", self._name(name), elapsed, 0,
                       ConnectionClosed(ws.close_code, "no CLOSE from the server", ws.sent_code))
        else:
            self._fire("CLOSE", self._name(name), elapsed, 0)

    def hold(self, seconds: float | None = None, ping_interval: float | None = None, name: str = "hold") -> None:
        """Keep the connection open for ``seconds`` (None: until the user is
        stopped), answering PINGs; every ``ping_interval`` seconds send a PING
        (reported as ``PING``).  Messages received go to ``on_message``.
        Returns early (after reporting) if the connection closes."""
        ws = self._need_ws()
        end = None if seconds is None else time.monotonic() + seconds
        next_ping = None if not ping_interval else time.monotonic() + ping_interval
        while not ws.closed:
            now = time.monotonic()
            if end is not None and now >= end:
                return
            if next_ping is not None and now >= next_ping:
                self.ping(name="ping")
                next_ping = time.monotonic() + ping_interval
                continue
            wake = min(t for t in (end, next_ping, now + 3600) if t is not None)
            if self._waiters is not None:
                gevent.sleep(wake - now)
                continue
            try:
                message = ws.recv(wake - now)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return  # reported by _on_closed
            self.on_message(message)

    # --------------------------------------------------------- messages
    def _dispatch(self, message) -> None:
        # Runs in the receive loop: an exception in a match or in on_message is
        # reported as a RECV failure and the loop goes on reading.
        try:
            waiters = self._waiters
            if waiters:
                for i, (pred, result) in enumerate(waiters):
                    if pred(message):
                        del waiters[i]
                        result.set(message)
                        return
            self.on_message(message)
        except Exception as exc:
            self._fire("RECV", self._name(None), None, _size(message), exc)

    def on_message(self, message: Message) -> None:
        """Called for every message that no ``request()`` claimed (by the
        receive loop, or by ``request``/``hold`` reading).  Default: report
        it as ``RECV`` (``report_receive``)."""
        self.report_receive(message)

    def message_latency(self, message: Message) -> float | None:
        """Override to give a message's latency in seconds (e.g. now minus a
        send timestamp it carries); None (default): unknown."""
        return None

    def report_receive(self, message: Message, latency: float | None = None, name: str | None = None) -> None:
        """Report a ``RECV`` of ``message``: with ``latency`` (seconds) or
        ``message_latency(message)`` as its response time, else none."""
        if latency is None:
            latency = self.message_latency(message)
        self._fire("RECV", self._name(name), None if latency is None else _ms(latency), _size(message))

    def on_stop(self) -> None:
        if self.ws is not None and not self.ws.closed:
            self.close()


def _predicate(match):
    if match is None:
        return _any
    if callable(match):
        return match
    return lambda message: message == match


def _any(message) -> bool:
    return True
