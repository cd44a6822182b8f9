"""Locust support: ``WebSocketUser`` and ``PoolUser``.

locust runs its users as gevent greenlets, where asyncio clients do not work.
``WebSocketUser`` drives ``fastws.syncclient`` (blocking sockets, patched by
gevent), one connection per user; ``PoolUser`` drives a pool of connections per
user on one greenlet (one epoll set, the fastws codec). Both report
``CONNECT``, ``PING``, ``RECV``, ``SEND`` and ``CLOSE`` with numbers that mean
what they say, spread loopback targets over several source addresses, and add
connection counts to the web UI, ``<--csv prefix>_ws.csv`` and
``--ws-stats-file``. See docs/guide/locust.md.
"""
from __future__ import annotations

import errno
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
import gevent.socket
from gevent.event import AsyncResult
from locust import User, constant, events, task
from locust.exception import StopUser

from .. import handshake
from ..constants import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from ..exceptions import CLOSE_GOING_AWAY, CLOSE_NORMAL, ConnectionClosed, InvalidResponse, ProtocolError
from ..http import ResponseReader
from ..syncclient import CLOSED_DURING_HANDSHAKE, IP_BIND_ADDRESS_NO_PORT, SyncWebSocket

Message = Union[str, bytes]
# request(match=...): None (the next message), a message to equal, or a predicate
Match = Union[None, str, bytes, Callable[[Message], bool]]

__all__ = ["WebSocketUser", "PoolUser", "PoolConnection", "stats", "WSStats"]

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
        self.pools = set()         # PoolUser pools of this process (their counters are pool-wide)
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

    def note_open(self) -> None:
        """A pool connection opened (counted in its pool): update the peak."""
        self.opened += 1
        n = len(self.live) + sum(p.open for p in self.pools)
        if n > self.peak_open:
            self.peak_open = n

    def remove_pool(self, pool: Any) -> None:
        """Fold a finished pool's counters into the closed totals."""
        if pool in self.pools:
            self.pools.discard(pool)
            self._closed_bytes_in += pool.bytes_in
            self._closed_bytes_out += pool.bytes_out
            self._closed_msgs_in += pool.messages_in
            self._closed_msgs_out += pool.messages_out

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
        live, pools = self.live, self.pools
        return {
            "open": len(live) + sum(p.open for p in pools),
            "peak_open": self.peak_open,
            "opened": self.opened,
            "bytes_in": self._closed_bytes_in + sum(ws.bytes_in for ws in live) + sum(p.bytes_in for p in pools),
            "bytes_out": self._closed_bytes_out + sum(ws.bytes_out for ws in live) + sum(p.bytes_out for p in pools),
            "messages_in": (self._closed_msgs_in + sum(ws.messages_in for ws in live)
                            + sum(p.messages_in for p in pools)),
            "messages_out": (self._closed_msgs_out + sum(ws.messages_out for ws in live)
                             + sum(p.messages_out for p in pools)),
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
    prefix = getattr(opts, "csv_prefix", None) if opts is not None else None
    if prefix:
        _state["csv"] = gevent.spawn(_csv_loop, f"{prefix}_ws.csv")
    if environment.web_ui is not None:
        _extend_web_ui(environment.web_ui)


CSV_FIELDS = ("Timestamp", "Open", "Peak open", "Opened", "Closed", "Bytes in", "Bytes out",
              "Messages in", "Messages out")


def _csv_row(s: dict) -> list:
    return [int(time.time()), s["open"], s["peak_open"], s["opened"], sum(s["close_codes"].values()),
            s["bytes_in"], s["bytes_out"], s["messages_in"], s["messages_out"]]


def _csv_loop(path: str, interval: float = 2.0) -> None:
    """``<--csv prefix>_ws.csv``: the connection counts every ``interval`` s (and a last row at the end)."""
    import csv
    with open(path, "w", newline="") as f:
        _state["csv_file"] = f
        out = csv.writer(f)
        out.writerow(CSV_FIELDS)
        try:
            while True:
                out.writerow(_csv_row(stats.summary(_state["distributed"])))
                f.flush()
                gevent.sleep(interval)
        finally:
            if not f.closed:
                out.writerow(_csv_row(stats.summary(_state["distributed"])))
            _state["csv_file"] = None


_UI_KEY = "fastws-connections"
_UI_STRUCTURE = [{"key": "name", "title": "WebSocket connections"}, {"key": "value", "title": "Value"}]


def _ui_rows() -> list:
    s = stats.summary(_state["distributed"])
    rows = [{"name": "open", "value": s["open"]}, {"name": "peak open", "value": s["peak_open"]},
            {"name": "opened", "value": s["opened"]}]
    rows += [{"name": f"closed with {code}", "value": n} for code, n in sorted(s["close_codes"].items())]
    rows += [{"name": k.replace("_", " "), "value": s[k]}
             for k in ("bytes_in", "bytes_out", "messages_in", "messages_out")]
    return rows


def _extend_web_ui(web_ui) -> None:
    """A "WebSocket connections" tab (open, peak, opened, close codes, bytes) and a CSV download."""
    import csv
    import io

    from flask import Response, request

    args = web_ui.template_args
    args["extendedTabs"] = [*args.get("extendedTabs", []), {"title": "WebSocket connections", "key": _UI_KEY}]
    args["extendedTables"] = [*args.get("extendedTables", []), {"key": _UI_KEY, "structure": _UI_STRUCTURE}]
    args["extendedCsvFiles"] = [*args.get("extendedCsvFiles", []),
                                {"href": "./fastws/connections.csv", "title": "Download WebSocket connection statistics"}]

    @web_ui.app.after_request
    def _add_stats(response):
        if request.path != "/stats/requests" or not response.is_json:
            return response
        data = response.get_json()
        data["extended_stats"] = [*data.get("extended_stats", []), {"key": _UI_KEY, "data": _ui_rows()}]
        response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/fastws/connections.csv")
    def _connections_csv():
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(CSV_FIELDS)
        out.writerow(_csv_row(stats.summary(_state["distributed"])))
        return Response(buf.getvalue(), mimetype="text/csv")


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
    if _state.get("csv") is not None:
        _state["csv"].kill(block=True, timeout=5)  # writes the last row
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


class _OwnPorts:
    """Source (address, port) pairs for addresses that this process alone
    connects from: the ports of the ephemeral range in order, the first
    address, then the next, a port some other socket holds skipped.

    With ``IP_BIND_ADDRESS_NO_PORT`` the kernel picks the port in
    ``connect()``, scanning past the ports in use: as an address fills, each
    connect costs more kernel time (measured at a million connections over 64
    addresses shared by 56 processes: the connects stalled at ~14,000 ports in
    use per address, and the handshakes waiting behind them timed out on the
    server). A port given explicitly is one hash lookup."""

    def __init__(self, addresses: tuple[str, ...]) -> None:
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                lo, hi = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            lo, hi = 32768, 60999
        self.addresses, self.lo, self.hi = addresses, lo, hi
        self.index, self.port = 0, lo

    def bind(self, sock: socket.socket) -> None:
        """Bind ``sock`` to the next free pair; after the last, start again
        (ports freed by closed connections); OSError(EADDRNOTAVAIL) after one
        whole round without a free one."""
        budget = len(self.addresses) * (self.hi - self.lo + 1)
        # A port whose last connection is in TIME_WAIT may be bound again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(budget):
            addr, port = self.addresses[self.index], self.port
            if port >= self.hi:
                self.port = self.lo
                self.index = (self.index + 1) % len(self.addresses)
            else:
                self.port = port + 1
            try:
                sock.bind((addr, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRNOTAVAIL, f"no free source port left on {', '.join(self.addresses)}")


_own_ports: dict[tuple[str, ...], _OwnPorts] = {}   # per set of addresses: one per process


def _own_sources() -> list[str] | None:
    value = os.environ.get("FASTWS_LOCUST_OWN_SOURCES", "")
    return [a.strip() for a in value.split(",") if a.strip()] or None


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


# ------------------------------------------------------------- pool user ----
_CONNECTING, _HANDSHAKE, _OPEN, _CLOSING = 0, 1, 2, 3
_MAX_EVENTS = 512            # epoll events handled before the greenlet yields once
_OUT_LIMIT = 1 << 20         # unsent bytes a pool connection may hold (then SEND fails)
_READ_SIZE = 65536
_SWEEP_TICK = 0.2           # the pool wakes at most this often for its PINGs and messages
_PLACEHOLDER_KEY = "A" * 22 + "=="  # the pre-built request's Sec-WebSocket-Key, replaced per connection
_CLOSE_1000 = b"\x03\xe8"


class PoolConnection:
    """One connection of a ``PoolUser``'s pool: its socket and the least state
    that holds it.  While idle and at rest it keeps no parser and no buffer:
    ``parser`` exists only while a frame is cut between two reads (or a
    message is being reassembled), ``out`` only while the kernel refuses bytes,
    ``hs`` only during the opening handshake.  ``data`` is the user's (None
    until a hook such as ``on_connect`` sets it)."""

    __slots__ = ("sock", "state", "t", "hs", "parser", "out", "data")

    def __init__(self, sock: socket.socket, t: float) -> None:
        self.sock = sock
        self.state = _CONNECTING
        self.t = t              # connect start; then the time of our unanswered PING (0.0: none); the CLOSE sent
        self.hs: Any = None     # (key, ResponseReader) during the handshake
        self.parser: Any = None
        self.out: Any = None
        self.data: Any = None

    @property
    def is_open(self) -> bool:
        return self.state == _OPEN


class _Sweep:
    """Spreads one action per open connection evenly over ``interval`` seconds
    (pings, messages): no timer per connection."""

    __slots__ = ("interval", "carry", "last", "index")

    def __init__(self, interval: float, now: float) -> None:
        self.interval, self.carry, self.last, self.index = interval, 0.0, now, 0

    def due(self, now: float, n: int) -> int:
        self.carry += (now - self.last) * n / self.interval
        self.last = now
        k = int(self.carry)
        self.carry -= k
        return min(k, n)

    def wait(self, n: int) -> float:
        """Seconds until the next action is due."""
        return self.interval if n == 0 else max(0.0, (1.0 - self.carry) * self.interval / n)


class _Pool:
    """The connections of one PoolUser, driven by its greenlet."""

    def __init__(self, user: PoolUser) -> None:
        from gevent.monkey import get_original

        from ..codec import FrameParser, build_frame, lone_control
        from ..handshake import build_request
        self.user = user
        self.FrameParser, self.build_frame, self.lone_control = FrameParser, build_frame, lone_control
        self.socket_cls = get_original("socket", "socket")      # plain non-blocking sockets, no gevent wrapper
        self.ep = get_original("select", "epoll")()
        self.epfd = self.ep.fileno()
        self.conns: dict[int, PoolConnection] = {}
        self.pending: dict[int, PoolConnection] = {}           # connecting or in the handshake
        self.order: list[PoolConnection] = []                  # for the sweeps, rebuilt as they wrap
        self.scratch = bytearray(_READ_SIZE)
        self.view = memoryview(self.scratch)
        self.open = self.bytes_in = self.bytes_out = self.messages_in = self.messages_out = 0
        self.started = 0        # connects begun
        secure, host, port, resource = handshake.parse_uri(user.url())
        if secure:
            raise ValueError("PoolUser speaks ws:// only (wss:// would need one TLS object per connection)")
        self.addr = (host, port)
        self.name = user.name or resource.split("?", 1)[0]
        subprotocols = user.subprotocols
        headers = user.headers or ()
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        request = build_request(host, port, resource, _PLACEHOLDER_KEY, subprotocols=subprotocols,
                                extra_headers=list(headers), user_agent="fastws-locust-pool")
        self.req_head, self.req_tail = request.split(_PLACEHOLDER_KEY.encode(), 1)
        self.sources = user.source_addresses if user.source_addresses and _is_loopback(host) else 0
        own = tuple(user.own_source_addresses or ())
        self.own = (_own_ports.setdefault(own, _OwnPorts(own)) if own else None)
        if self.sources:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                self.addr = (socket.gethostbyname(host), port)
        now = time.monotonic()
        self.pings = _Sweep(user.ping_interval, now) if user.ping_interval else None
        self.messages = _Sweep(user.message_interval, now) if user.message_interval else None
        self.next_check = now + 0.5
        self.slot: float | None = None   # this pool's reserved connect slot (connect_rate)
        stats.pools.add(self)

    # ------------------------------------------------------------ helpers
    def fire(self, kind: str, name: str, ms: float | None, length: int, exc: BaseException | None = None) -> None:
        self.user.environment.events.request.fire(request_type=kind, name=name, response_time=ms,
                                                  response_length=length, exception=exc, context={}, url=None)

    def drop(self, fd: int, c: PoolConnection) -> None:
        """Forget a connection and close its socket."""
        if c.state == _OPEN or c.state == _CLOSING:
            self.open -= 1
        c.state = -1
        self.conns.pop(fd, None)
        self.pending.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        c.sock.close()
        c.parser = c.out = c.hs = None

    def write(self, fd: int, c: PoolConnection, data: bytes) -> bool:
        """Queue ``data``; False if the connection broke or its unsent bytes
        passed the limit (then it is failed and dropped)."""
        self.bytes_out += len(data)
        if c.out is not None:
            if len(c.out) + len(data) > _OUT_LIMIT:
                self.lost(fd, c, ConnectionClosed(1006, f"more than {_OUT_LIMIT} bytes unsent"))
                return False
            c.out += data
            return True
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.lost(fd, c, ConnectionClosed(1006, f"{type(exc).__name__}: {exc}"))
            return False
        if n < len(data):
            c.out = bytearray(data[n:])
            self.ep.modify(fd, 0x001 | 0x004)  # EPOLLIN | EPOLLOUT
        return True

    def flush(self, fd: int, c: PoolConnection) -> None:
        try:
            n = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.lost(fd, c, ConnectionClosed(1006, f"{type(exc).__name__}: {exc}"))
            return
        del c.out[:n]
        if not c.out:
            c.out = None
            self.ep.modify(fd, 0x001)

    def lost(self, fd: int, c: PoolConnection, exc: BaseException) -> None:
        """The connection ended without a closing handshake we asked for."""
        if c.state < _OPEN:
            self.fire("CONNECT", self.name, _ms(time.monotonic() - c.t), 0, exc)
        elif c.state == _CLOSING:
            self.fire("CLOSE", self.name, _ms(time.monotonic() - c.t), 0, exc)
        else:
            self.fire("CLOSE", "closed by server", None, 0, exc)
        if c.state >= _OPEN:
            stats.close_codes[str(getattr(exc, "code", 1006))] += 1
        self.drop(fd, c)

    # ------------------------------------------------------------ opening
    def connect_one(self, now: float) -> None:
        u = self.user
        self.started += 1
        sock = self.socket_cls(socket.AF_INET if ":" not in self.addr[0] else socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.own is not None:
                self.own.bind(sock)
            elif self.sources:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((_next_source(self.sources), 0))
            err = sock.connect_ex(self.addr)
        except OSError as exc:
            sock.close()
            self.fire("CONNECT", self.name, 0.0, 0, exc)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.fire("CONNECT", self.name, _ms(time.monotonic() - now), 0, OSError(err, os.strerror(err)))
            return
        c = PoolConnection(sock, now)
        fd = sock.fileno()
        self.conns[fd] = c
        self.pending[fd] = c
        self.ep.register(fd, 0x004)  # EPOLLOUT: the connect completed (or failed)
        if u.connect_timeout and now + u.connect_timeout < self.next_check:
            self.next_check = now + u.connect_timeout

    def connected(self, fd: int, c: PoolConnection) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fire("CONNECT", self.name, _ms(time.monotonic() - c.t), 0, OSError(err, os.strerror(err)))
            self.drop(fd, c)
            return
        key = handshake.make_key()
        c.hs = (key, ResponseReader())
        c.state = _HANDSHAKE
        self.ep.modify(fd, 0x001)
        self.write(fd, c, self.req_head + key.encode() + self.req_tail)

    def handshake_bytes(self, fd: int, c: PoolConnection, data: bytes) -> None:
        key, reader = c.hs
        try:
            if data:
                response = reader.feed(data)
                if response is None:
                    return
            else:  # EOF: a response whose body ran until the close, or nothing
                response = reader.eof()
            handshake.check_response(response, key, self.user.subprotocols)
            if not data:
                raise InvalidResponse(CLOSED_DURING_HANDSHAKE)
        except Exception as exc:  # InvalidStatus, InvalidResponse: reported as the CONNECT's failure
            self.fire("CONNECT", self.name, _ms(time.monotonic() - c.t), 0, exc)
            self.drop(fd, c)
            return
        self.fire("CONNECT", self.name, _ms(time.monotonic() - c.t), 0)
        del self.pending[fd]
        c.hs = None
        c.state = _OPEN
        c.t = 0.0
        self.open += 1
        stats.note_open()
        self.user.on_connect(c)
        if reader.leftover and c.state == _OPEN:
            self.frames(fd, c, bytes(reader.leftover))

    # ------------------------------------------------------------ frames
    def frames(self, fd: int, c: PoolConnection, data: bytes) -> None:
        if c.parser is None:
            control = self.lone_control(data, False)  # an idle connection's ping or pong: no parser
            if control is not None:
                self.control(fd, c, control[0], control[1])
                return
            c.parser = self.FrameParser(lambda m: self.message(fd, c, m), lambda op, p: self.control(fd, c, op, p),
                                        expect_masked=False, max_size=self.user.max_size)
        parser = c.parser
        try:
            parser.feed(data)
        except ProtocolError as exc:
            if c.state >= _OPEN:
                self.write(fd, c, self.build_frame(OP_CLOSE, exc.code.to_bytes(2, "big"), mask=True))
                self.fire("CLOSE", "protocol error", None, 0,
                          ConnectionClosed(1006, f"protocol error, sent {exc.code}: {exc}", exc.code))
                stats.close_codes[str(exc.code)] += 1
                self.drop(fd, c)
            return
        if c.parser is parser and parser.at_rest and not parser.closed:
            c.parser = None   # back at rest: keep nothing

    def message(self, fd: int, c: PoolConnection, message: Message) -> None:
        self.messages_in += 1
        try:
            self.user.on_message(c, message)
        except Exception as exc:  # a bug in on_message is reported, the pool goes on
            self.fire("RECV", self.name, None, _size(message), exc)

    def control(self, fd: int, c: PoolConnection, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            # RFC 6455 5.5.3: a Pong in response to a Ping has the identical Application data
            self.write(fd, c, self.build_frame(OP_PONG, payload, mask=True))
        elif opcode == OP_PONG:
            if c.t and c.state == _OPEN:
                self.fire("PING", "ping", _ms(time.monotonic() - c.t), 0)
                c.t = 0.0
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            stats.close_codes[str(code)] += 1
            if c.state == _CLOSING:   # the answer to ours
                self.fire("CLOSE", self.name, _ms(time.monotonic() - c.t), 0)
            else:                     # RFC 6455 5.5.1: answer with a Close frame
                self.write(fd, c, self.build_frame(OP_CLOSE, payload[:2], mask=True))
                exc = None if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) else ConnectionClosed(code, reason)
                self.fire("CLOSE", "closed by server", None, 0, exc)
            self.drop(fd, c)

    # ------------------------------------------------------------ I/O
    def readable(self, fd: int, c: PoolConnection) -> None:
        try:
            n = c.sock.recv_into(self.scratch)
        except BlockingIOError:
            return
        except OSError as exc:
            if c.state == _HANDSHAKE:
                self.fire("CONNECT", self.name, _ms(time.monotonic() - c.t), 0, exc)
                self.drop(fd, c)
            else:
                self.lost(fd, c, ConnectionClosed(1006, f"{type(exc).__name__}: {exc}"))
            return
        self.bytes_in += n
        data = bytes(self.view[:n])
        if c.state == _HANDSHAKE:
            self.handshake_bytes(fd, c, data)
        elif n == 0:
            self.lost(fd, c, ConnectionClosed(1006, "EOF without a close frame"))
        else:
            self.frames(fd, c, data)

    def events(self) -> int:
        """Handle what epoll reports ready; returns how many events."""
        events = self.ep.poll(0, _MAX_EVENTS)
        conns = self.conns
        for fd, ev in events:
            c = conns.get(fd)
            if c is None:
                continue
            if c.state == _CONNECTING:
                self.connected(fd, c)
                continue
            if ev & 0x004 and c.out is not None:
                self.flush(fd, c)
                if c.state < 0:
                    continue
            if ev & 0x019:  # EPOLLIN | EPOLLERR | EPOLLHUP
                self.readable(fd, c)
        return len(events)

    # ------------------------------------------------------------ sweeps
    def sweep(self, s: _Sweep, now: float, action: Callable[[int, PoolConnection, float], None]) -> None:
        k = s.due(now, self.open)
        while k > 0:
            if s.index >= len(self.order):
                self.order = [c for c in self.conns.values() if c.state == _OPEN]
                s.index = 0
                if not self.order:
                    return
            c = self.order[s.index]
            s.index += 1
            if c.state == _OPEN:
                action(c.sock.fileno(), c, now)
                k -= 1

    def ping_one(self, fd: int, c: PoolConnection, now: float) -> None:
        if c.t:  # the last PING had no answer within a whole interval
            self.fire("PING", "ping", _ms(now - c.t), 0,
                      TimeoutError(f"no PONG within {self.user.ping_interval:g} s"))
        c.t = now
        self.write(fd, c, self.build_frame(OP_PING, b"", mask=True))

    def message_one(self, fd: int, c: PoolConnection, now: float) -> None:
        self.user.send(c, self.user.make_message(c))

    def check_timeouts(self, now: float) -> None:
        limit = self.user.connect_timeout
        for fd, c in list(self.pending.items()):
            if limit and now - c.t > limit:
                self.fire("CONNECT", self.name, _ms(now - c.t), 0,
                          TimeoutError(f"no 101 within {limit:g} s"))
                self.drop(fd, c)
        self.next_check = now + 0.5

    # ------------------------------------------------------------ loop
    def run(self, until: float | None, target: int, stop: Callable[[], bool]) -> None:
        """Open up to ``target`` connections (paced) and serve them until
        ``until`` (monotonic) or ``stop()``."""
        u = self.user
        wait_read = gevent.socket.wait_read
        timeout_exc = _PoolWait()
        while not stop():
            now = time.monotonic()
            if until is not None and now >= until:
                return
            wake = now + 1.0 if until is None else min(until, now + 1.0)
            # open: paced by connect_rate (per process), at most max_connecting in flight
            while (self.started < target or (u.reconnect and len(self.conns) < target)) \
                    and len(self.pending) < u.max_connecting:
                if u.connect_rate:
                    # this pool's own next slot of the process's pace: the pools
                    # of a process take turns, and each wakes only for its slot
                    if self.slot is None:
                        self.slot = _reserve_slot(u.connect_rate, now)
                    if self.slot > now:
                        wake = min(wake, self.slot)
                        break
                    self.slot = None
                self.connect_one(now)
            # the sweeps send what is due in batches, at most every _SWEEP_TICK s
            if self.pings is not None:
                self.sweep(self.pings, now, self.ping_one)
                wake = min(wake, now + max(_SWEEP_TICK, self.pings.wait(self.open)))
            if self.messages is not None:
                self.sweep(self.messages, now, self.message_one)
                wake = min(wake, now + max(_SWEEP_TICK, self.messages.wait(self.open)))
            if self.pending:
                if now >= self.next_check:
                    self.check_timeouts(now)
                wake = min(wake, self.next_check)
            try:
                wait_read(self.epfd, timeout=max(0.0, wake - time.monotonic()), timeout_exc=timeout_exc)
            except _PoolWait:
                pass
            self.events()

    def close_all(self, timeout: float) -> None:
        """Closing handshake on every open connection (CLOSE events), then
        drop whatever is left after ``timeout``."""
        now = time.monotonic()
        frame = self.build_frame(OP_CLOSE, _CLOSE_1000, mask=True)
        for fd, c in list(self.conns.items()):
            if c.state == _OPEN:
                c.state = _CLOSING
                c.t = now
                self.write(fd, c, frame)
            elif c.state < _OPEN:
                self.drop(fd, c)
        end = now + timeout
        wait_read = gevent.socket.wait_read
        timeout_exc = _PoolWait()
        while self.conns and time.monotonic() < end:
            try:
                wait_read(self.epfd, timeout=max(0.0, end - time.monotonic()), timeout_exc=timeout_exc)
            except _PoolWait:
                break
            self.events()
        for fd, c in list(self.conns.items()):
            self.lost(fd, c, ConnectionClosed(1006, "no CLOSE from the server"))

    def release(self) -> None:
        for fd, c in list(self.conns.items()):
            self.drop(fd, c)
        self.ep.close()
        stats.remove_pool(self)


class _PoolWait(Exception):
    """The pool's wait for epoll timed out (not an error)."""


def _reserve_slot(rate: float, now: float) -> float:
    """Reserve this process's next connect slot (one every 1/rate s); its time."""
    slot = max(now, _next_slot[0])
    _next_slot[0] = slot + 1.0 / rate
    return slot


class PoolUser(User):
    """A locust user that holds a pool of ``connections`` WebSocket
    connections, all driven by this user's one greenlet (one epoll set, no
    greenlet per connection, the fastws frame codec, an idle connection at
    rest keeps no parser or buffer).

    Each connection is reported like ``WebSocketUser``'s: ``CONNECT`` (TCP
    connect + validated 101, per connection), ``PING`` (round trip of the
    client PINGs sent every ``ping_interval``, spread over the interval),
    ``RECV`` (``on_message``; a response time only when ``message_latency``
    gives one), ``SEND``, and ``CLOSE`` (the closing handshake at the end; a
    close the user did not ask for is ``closed by server``, a failure unless
    1000/1001).  The server's PINGs are answered.

    Class attributes (override in a subclass): ``host`` (``ws://host:port``)
    and ``path``; ``connections`` (per user; env ``FASTWS_POOL_CONNECTIONS``,
    default 1000); ``ping_interval`` (s, None: no client PINGs); ``message_interval``
    (s, None: none): each open connection sends ``make_message(conn)`` that
    often (default: its send time as text, which ``message_latency`` reads
    back from an echo); ``reconnect`` (replace connections that ended);
    ``connect_rate`` (connects per second per process, env
    ``FASTWS_CONNECT_RATE``), ``max_connecting`` (handshakes in flight per
    user), ``source_addresses``, ``own_source_addresses`` (addresses only
    this process connects from, env ``FASTWS_LOCUST_OWN_SOURCES``, comma
    separated: the pool then picks their ports itself, in order, which stays
    cheap when tens of thousands are in use; used instead of
    ``source_addresses``), ``connect_timeout``, ``close_timeout``,
    ``max_size``, ``subprotocols``, ``headers``, ``name`` (the stats name,
    default the path).
    """

    abstract = True
    path = "/"
    name: str | None = None
    connections = int(os.environ.get("FASTWS_POOL_CONNECTIONS", "1000"))
    ping_interval: float | None = 30.0
    message_interval: float | None = None
    message_size = 32
    reconnect = False
    connect_rate = WebSocketUser.connect_rate
    max_connecting = 100
    source_addresses = WebSocketUser.source_addresses
    own_source_addresses: list[str] | None = _own_sources()
    connect_timeout = 10.0
    close_timeout = 10.0
    max_size = 1048576
    subprotocols: list[str] | None = None
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.pool: _Pool | None = None

    def url(self) -> str:
        path = self.path if "://" in self.path else (self.host or "").rstrip("/") + "/" + self.path.lstrip("/")
        return path

    def _stopping(self) -> bool:
        return self._state == "stopping"

    def hold(self, seconds: float | None = None) -> None:
        """Open the pool (paced) and hold it for ``seconds`` (None: until the user stops)."""
        if self.pool is None:
            self.pool = _Pool(self)
        until = None if seconds is None else time.monotonic() + seconds
        self.pool.run(until, self.connections, self._stopping)

    @task
    def hold_pool(self) -> None:
        self.hold(None)

    # ---------------------------------------------------------- hooks
    def on_connect(self, conn: PoolConnection) -> None:
        """Called when a connection of the pool is open (its 101 checked)."""

    def on_message(self, conn: PoolConnection, message: Message) -> None:
        """Called for every message; default: report ``RECV`` with its size and,
        if ``message_latency`` gives one, its latency."""
        latency = self.message_latency(message)
        self.pool.fire("RECV", self.pool.name, None if latency is None else _ms(latency), _size(message))

    def message_latency(self, message: Message) -> float | None:
        """Latency in seconds of a received message, or None (unknown).  Default:
        for a text message made by ``make_message`` (``"t=<send time> ..."``),
        now minus its send time."""
        if isinstance(message, str) and message.startswith("t="):
            try:
                return max(0.0, time.time() - float(message[2:].split(" ", 1)[0]))
            except ValueError:
                return None
        return None

    def make_message(self, conn: PoolConnection) -> str | bytes:
        """The message each connection sends every ``message_interval``."""
        text = f"t={time.time():.6f} "
        return text + "x" * max(0, self.message_size - len(text))

    def send(self, conn: PoolConnection, data: str | bytes, name: str | None = None) -> bool:
        """Send one message on ``conn`` (masked, a fresh key); reports ``SEND``
        (the time to hand it to the kernel, or queue it).  False if the
        connection is not open or broke."""
        pool = self.pool
        name = name or pool.name
        if conn.state != _OPEN:
            self.environment.events.request.fire(request_type="SEND", name=name, response_time=0.0,
                                                  response_length=0, exception=ConnectionClosed(1006, "not open"),
                                                  context={}, url=None)
            return False
        start = time.perf_counter()
        frame = pool.build_frame(OP_TEXT if isinstance(data, str) else OP_BINARY, data, mask=True)
        ok = pool.write(conn.sock.fileno(), conn, frame)
        pool.messages_out += 1
        pool.fire("SEND", name, _ms(time.perf_counter() - start), len(frame),
                  None if ok else ConnectionClosed(1006, "connection lost while sending"))
        return ok

    @property
    def open_connections(self) -> int:
        return self.pool.open if self.pool is not None else 0

    def on_stop(self) -> None:
        pool = self.pool
        if pool is not None:
            try:
                pool.close_all(self.close_timeout)
            finally:
                pool.release()
                self.pool = None
