"""GET /healthz, GET /metrics (parsed with prometheus_client) and --limit-connections."""
from __future__ import annotations

import contextlib
import socket
import time

import pytest

pytest.importorskip("prometheus_client")

import websockets.sync.client as ws_sync  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from cliutil import Command, get, metrics, value, wait_for  # noqa: E402
from util import UNIT, RawClient  # noqa: E402


@pytest.fixture
def echo():
    cmd = Command("run", "echo", "--port", "0", "--log-level", "error", "--origins", "https://ok.example,none",
                  "--limit-connections", "3", "--ping-interval", "1", "--ping-timeout", "1")
    yield cmd
    assert cmd.stop() == 0
    assert "Traceback" not in cmd.stderr


def test_counters_move(echo):
    port = echo.port
    before = metrics(port)
    assert value(before, "fastws_websockets_open") == 0
    assert value(before, "fastws_draining") == 0
    with ws_sync.connect(f"ws://127.0.0.1:{port}/", origin="https://ok.example") as ws:
        for _ in range(10):
            ws.send("hello")  # payload 5
            assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00" * 1000)
        ws.recv(timeout=5)
        during = metrics(port)  # counted live, before the connection closes
        assert value(during, "fastws_websockets_open") == 1
        assert value(during, "fastws_messages_received_total") - value(before, "fastws_messages_received_total") == 11
        assert value(during, "fastws_messages_sent_total") - value(before, "fastws_messages_sent_total") == 11
        assert value(during, "fastws_bytes_sent_total") - value(before, "fastws_bytes_sent_total") == 10 * 5 + 1000
        # in: 10 masked frames of 11 bytes and one of 1008 (frames only, not the upgrade request)
        assert value(during, "fastws_bytes_received_total") - value(before, "fastws_bytes_received_total") == 1118
    after = wait_for(lambda: (lambda m: m if value(m, "fastws_websockets_open") == 0 else None)(metrics(port)))
    # folded into the totals when it closed: nothing lost
    assert value(after, "fastws_messages_received_total") - value(before, "fastws_messages_received_total") == 11
    assert value(after, "fastws_bytes_sent_total") - value(before, "fastws_bytes_sent_total") == 10 * 5 + 1000
    assert value(after, "fastws_websockets_total") - value(before, "fastws_websockets_total") == 1
    assert value(after, "fastws_close_codes_received_total", code="1000") == 1
    assert value(after, "fastws_close_codes_sent_total", code="1000") == 1


def test_refusals_by_reason_and_limit(echo):
    port = echo.port
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(f"ws://127.0.0.1:{port}/", origin="https://evil.example")
    assert info.value.response.status_code == 403
    with contextlib.ExitStack() as stack:
        for _ in range(3):  # no Origin: allowed ("none")
            stack.enter_context(ws_sync.connect(f"ws://127.0.0.1:{port}/"))
        with pytest.raises(InvalidStatus) as info:
            ws_sync.connect(f"ws://127.0.0.1:{port}/")
        response = info.value.response
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        m = metrics(port)
        assert value(m, "fastws_handshakes_refused_total", reason="http_403") == 1
        assert value(m, "fastws_handshakes_refused_total", reason="limit") == 1
        assert value(m, "fastws_websockets_open") == 3
    # below the limit again: accepted
    assert wait_for(lambda: value(metrics(port), "fastws_websockets_open") == 0)
    with ws_sync.connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send("back")
        assert ws.recv(timeout=5) == "back"


def test_pings_and_heartbeat_timeouts(echo):
    port = echo.port
    raw = RawClient(port, "/", timeout=10)  # reads, never answers pings
    assert raw.status == 101
    assert raw.recv_frame()[1] == 0x9
    assert raw.recv_close()[0] == 1011
    raw.close()
    m = wait_for(lambda: (lambda m: m if value(m, "fastws_close_codes_sent_total", code="1011") else None)(
        metrics(port)))
    assert value(m, "fastws_pings_sent_total") >= 1
    assert value(m, "fastws_ping_timeouts_total") == 1


def test_healthz_and_other_paths(echo):
    status, _, body = get(f"http://127.0.0.1:{echo.port}/healthz")
    assert (status, body) == (200, b"ok\n")
    assert get(f"http://127.0.0.1:{echo.port}/other")[0] == 426


def test_no_metrics_flag():
    with Command("run", "echo", "--port", "0", "--no-metrics", "--log-level", "error") as cmd:
        assert get(f"http://127.0.0.1:{cmd.port}/metrics")[0] == 426
        assert get(f"http://127.0.0.1:{cmd.port}/healthz")[0] == 200


def test_workers_metrics_per_worker_label():
    with Command("run", "echo", "--port", "0", "--workers", "2", "--log-level", "error") as cmd:
        def both():
            try:
                m = metrics(cmd.port)
            except OSError:
                return None
            workers = {dict(labels).get("worker") for (name, labels) in m if name == "fastws_websockets_open"}
            return m if workers == {"0", "1"} else None
        m = wait_for(both, 20 * UNIT)
        assert m, "both workers should appear in /metrics"
        for _ in range(6):
            with ws_sync.connect(f"ws://127.0.0.1:{cmd.port}/") as ws:
                ws.send("x")
                ws.recv(timeout=5)

        def all_counted():
            m = metrics(cmd.port)
            total = sum(v for (name, labels), v in m.items() if name == "fastws_messages_received_total")
            return m if total == 6 else None
        assert wait_for(all_counted, 10 * UNIT), "every worker's messages counted within the snapshot interval"


def test_metrics_scrape_is_cheap_with_many_connections():
    """A scrape sums per-connection fields: check it answers with 1,000 open
    sockets (the time it takes is measured in bench/, not asserted here)."""
    with Command("run", "echo", "--port", "0", "--log-level", "error") as cmd:
        socks = []
        try:
            for _ in range(1000):
                socks.append(socket.create_connection(("127.0.0.1", cmd.port)))
            assert wait_for(lambda: value(metrics(cmd.port), "fastws_connections_open") >= 1000, 10 * UNIT)
        finally:
            for s in socks:
                s.close()
        time.sleep(0.1)
