"""GET /healthz, GET /metrics (parsed with prometheus_client) and --limit-connections."""
from __future__ import annotations

import contextlib
import socket
import struct
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


# ---------------------------------------------------------------- HEAD (RFC 9110 9.3.2)

def _raw_exchange(port, raw):
    """(head, content) of the answer to ``raw``, read with a raw socket until
    the server closes: every byte after the head is content."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    return head, content


def _content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, val = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(val)
    return None


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/other"])
def test_head_gets_the_get_head_and_no_content(echo, path):
    port = echo.port
    head, content = _raw_exchange(port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    get_head, get_content = _raw_exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert content == b"", (path, content[:200])
    assert head.split(b"\r\n", 1)[0] == get_head.split(b"\r\n", 1)[0]  # same status line
    assert _content_length(get_head) == len(get_content) > 0
    if path == "/metrics":  # the counters moved between the two scrapes: the length may differ a little
        assert abs(_content_length(head) - len(get_content)) < 64
    else:
        assert _content_length(head) == len(get_content)


def test_head_with_http_client(echo):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=5 * UNIT)
    try:
        conn.request("HEAD", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "3"
        assert resp.read() == b""
        conn.request("GET", "/healthz")  # the server closed: http.client reconnects
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok\n")
    finally:
        conn.close()


def test_head_from_http_handler_and_refusals(serve_thread):
    """Any plain-HTTP answer: an http_handler's Response (sync or async) and
    the refusal of a HEAD with Upgrade (405)."""
    import fastws
    from fastws.apps import EchoListener

    page = b"<html>" + b"x" * 5000 + b"</html>"

    def http(request):
        return fastws.Response(200, "OK", [("Content-Type", "text/html")], page)

    async def ahttp(request):
        return fastws.Response(404, "Not Found", [], b"nope\n")

    for handler, status, length in ((http, 200, len(page)), (ahttp, 404, 5)):
        st = serve_thread(EchoListener, http_handler=handler)
        head, content = _raw_exchange(st.port, b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status) and content == b""
        assert _content_length(head) == length
    upgrade = (b"HEAD / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head, content = _raw_exchange(st.port, upgrade)
    get_head, get_content = _raw_exchange(st.port, upgrade.replace(b"HEAD", b"POST", 1))
    assert head.startswith(b"HTTP/1.1 405 ") and content == b""
    assert _content_length(head) == len(get_content) > 0


def test_response_to_bytes_head():
    from fastws.http import Response

    r = Response(200, "OK", [("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], b"hello")
    full = r.to_bytes()
    assert r.to_bytes(head=True) == full[:-5] and full.endswith(b"\r\n\r\nhello")
    assert b"Content-Length: 5\r\n" in r.to_bytes(head=True)


# ---------------------------------------------------------------- close codes: a bounded label set

def _close_series(samples):
    return {(name, labels) for (name, labels) in samples if name.startswith("fastws_close_codes_")}


def test_close_code_labels_bounded_end_to_end(echo):
    """Clients closing with codes of their choice (3000-4999 and standard
    ones): the codes land in 3xxx/4xxx, the standard ones keep their number."""
    port = echo.port
    codes = [3000, 3001, 3999, 4000, 4321, 4999, 1001]
    for code in codes:
        c = RawClient(port, "/")
        c.send(0x8, struct.pack("!H", code))
        assert c.recv_close()[0] == code  # echoed
        c.close()
    m = wait_for(lambda: (lambda m: m if value(m, "fastws_websockets_open") == 0
                          and value(m, "fastws_websockets_total") == len(codes) else None)(metrics(port)))
    assert value(m, "fastws_close_codes_received_total", code="3xxx") == 3
    assert value(m, "fastws_close_codes_received_total", code="4xxx") == 3
    assert value(m, "fastws_close_codes_received_total", code="1001") == 1
    assert value(m, "fastws_close_codes_sent_total", code="4xxx") == 3
    labels = {dict(lab)["code"] for _, lab in _close_series(m)}
    assert labels == {"3xxx", "4xxx", "1001"}


def test_close_code_labels_bounded_2000_codes():
    """2,000 connections closed with distinct codes: a handful of series and a
    small scrape (the fold and the scrape of a real Server, without 2,000 sockets)."""
    from prometheus_client.parser import text_string_to_metric_families

    import fastws
    from fastws.apps import echo_handler
    from fastws.metrics import close_code_label, instrument

    server = fastws.Server(echo_handler)
    obs = instrument(server)

    class Conn:
        path = "/"

        def __init__(self, code):
            self.close_code = self.sent_close_code = code

    for i in range(2000):
        server.counters.fold(Conn(3000 + i))
    body = obs.metrics_response().body
    series = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples
              if s.name.startswith("fastws_close_codes_")]
    assert {s.labels["code"] for s in series} == {"3xxx", "4xxx"}
    assert sum(s.value for s in series if s.name == "fastws_close_codes_received_total") == 2000
    assert len(series) == 4 and len(body) < 8000, (len(series), len(body))
    assert [close_code_label(c) for c in (1000, 1015, 1016, 2999, 3000, 3999, 4000, 4999, 5000, 0)] == [
        "1000", "1015", "other", "other", "3xxx", "3xxx", "4xxx", "4xxx", "other", "other"]
