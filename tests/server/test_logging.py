"""Per-connection routine events: DEBUG lines and counters, not INFO lines;
per-connection errors rate-limited (fastws.metrics.LogLimiter).
See docs/guide/cli.md#logging.
"""
from __future__ import annotations

import logging
import socket

import pytest

from fastws.apps import EchoListener
from fastws.metrics import EVENTS, LogLimiter

from cliutil import wait_for
from util import UNIT, RawClient, build_frame


def _per_connection(records, level=logging.INFO):
    return [r for r in records if r.name.startswith("fastws") and r.levelno >= level
            and r.name != "fastws.access"]


def test_200_half_open_connections_no_info_lines_counted(serve_thread, caplog):
    st = serve_thread(EchoListener, handshake_timeout=0.5 * UNIT, timer_tick=0.05 * UNIT)
    events = st.server.counters.events
    socks = []
    with caplog.at_level(logging.DEBUG, logger="fastws"):
        try:
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", st.port), timeout=10 * UNIT)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
                socks.append(s)
            assert wait_for(lambda: events["handshake_timeout"] >= 200, 20 * UNIT), events
            for s in socks:  # the server dropped each of them
                assert s.recv(100) == b""
        finally:
            for s in socks:
                s.close()
        assert wait_for(lambda: not st.server.connections, 5 * UNIT)
    assert events["handshake_timeout"] == 200
    assert _per_connection(caplog.records) == [], caplog.text[:2000]
    debug = [r for r in caplog.records if r.name == "fastws.protocol" and "timed out" in r.getMessage()]
    assert len(debug) == 200 and all(r.levelno == logging.DEBUG for r in debug)
    # and on /metrics, with the bounded event label
    from fastws.metrics import instrument

    pytest.importorskip("prometheus_client")
    body = st.call(lambda: instrument(st.server).metrics_response().body).decode()
    lines = [line for line in body.splitlines() if line.startswith("fastws_connection_events_total{")]
    assert 'fastws_connection_events_total{event="handshake_timeout"} 200.0' in lines
    assert len(lines) == len(EVENTS)


def test_protocol_error_and_keepalive_timeout_are_debug_and_counted(serve_thread, caplog):
    st = serve_thread(EchoListener, ping_interval=0.2 * UNIT, ping_timeout=0.2 * UNIT, timer_tick=0.05 * UNIT)
    events = st.server.counters.events
    with caplog.at_level(logging.DEBUG, logger="fastws"):
        c = RawClient(st.port)
        c.send_raw(build_frame(1, b"x", mask_key=None))  # unmasked client frame: 1002
        assert c.recv_close()[0] == 1002
        c.close()
        c = RawClient(st.port, timeout=10)  # never answers the pings
        assert c.recv_close()[0] == 1011
        c.close()
        assert wait_for(lambda: events["protocol_error"] == 1 and events["keepalive_timeout"] == 1, 5 * UNIT)
    assert _per_connection(caplog.records) == [], caplog.text
    assert st.server.counters.ping_timeouts == 1


def test_per_connection_errors_are_rate_limited(serve_thread, caplog):
    """An application that fails on every connection: at most ``burst`` ERROR
    records per interval, then one summary (here at shutdown)."""
    async def boom(ws):
        await ws.recv()
        raise RuntimeError("bug")

    st = serve_thread(boom)
    burst = st.server.counters.log.burst
    n = burst + 5
    with caplog.at_level(logging.DEBUG, logger="fastws"):
        for _ in range(n):
            c = RawClient(st.port)
            c.send(1, b"x")
            assert c.recv_close()[0] == 1011
            c.close()
        assert wait_for(lambda: st.server.counters.ws_closed == n, 5 * UNIT)
        st.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("fastws")]
    assert len([r for r in errors if "error in connection handler" in r.getMessage()]) == burst
    summaries = [r.getMessage() for r in errors if "suppressed" in r.getMessage()]
    assert summaries == [f"suppressed 5 similar messages (handler_error) in {st.server.counters.log.interval:g}s"]


def test_log_limiter_window():
    now = [0.0]
    limiter = LogLimiter(burst=3, interval=10.0, clock=lambda: now[0])
    log = logging.getLogger("fastws.test_limiter")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)
    log.propagate = False
    try:
        logged = [limiter.log(log, logging.WARNING, "kind", "event %d", i) for i in range(10)]
        assert logged == [True] * 3 + [False] * 7
        limiter.log(log, logging.WARNING, "other", "another kind")  # kinds have their own budget
        now[0] = 10.0
        assert limiter.log(log, logging.WARNING, "kind", "event %d", 10)
        limiter.flush()  # nothing pending
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert records == ["event 0", "event 1", "event 2", "another kind",
                       "suppressed 7 similar messages (kind) in 10s", "event 10"]


def test_events_are_a_fixed_set():
    from fastws.metrics import ServerCounters

    c = ServerCounters()
    assert set(c.events) == set(EVENTS)
    with pytest.raises(KeyError):
        c.event("made_up")
