"""fastws behind a real HAProxy (TCP mode, ``send-proxy`` and ``send-proxy-v2``).

HAProxy (Debian's package; tests/haproxy_util.py) runs on free loopback
ports in front of a fastws server with ``proxy_protocol=True``; clients (the
``websockets`` library) connect to HAProxy from other loopback addresses
(127.0.0.2, 127.0.0.3), so the socket fastws sees is always HAProxy's
127.0.0.1 and only the PROXY header can tell the client. Both API levels,
both header versions; the codec is the one fastws picked (run again with
FASTWS_PURE_PYTHON=1).
"""
from __future__ import annotations

import pytest
import websockets.sync.client as wsclient
from websockets.exceptions import InvalidStatus

import fastws

from haproxy_util import HAProxy, connect_from, haproxy_or_skip
from util import UNIT, UPGRADE, RemoteAddressListener, remote_address_handler, wait_until


APPS = {"listener": RemoteAddressListener, "handler": remote_address_handler}


@pytest.fixture(params=sorted(APPS))
def app(request):
    haproxy_or_skip()
    return APPS[request.param]


def client(source: str, port: int):
    """A websockets client through HAProxy from ``source``."""
    return wsclient.connect(f"ws://127.0.0.1:{port}/", sock=connect_from(source, port),
                            open_timeout=5 * UNIT, close_timeout=5 * UNIT)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_server_sees_the_client_address_through_haproxy(app, version, serve_thread, tmp_path):
    st = serve_thread(app, proxy_protocol=True)
    with HAProxy(tmp_path, st.port) as haproxy:
        port = haproxy.port_v1 if version == "v1" else haproxy.port_v2
        for source in ("127.0.0.2", "127.0.0.3"):
            with client(source, port) as ws:
                host, client_port = eval(ws.recv(timeout=5 * UNIT))
                assert host == source
                assert client_port == ws.socket.getsockname()[1]  # the port HAProxy saw
                ws.send("through haproxy")
                assert ws.recv(timeout=5 * UNIT) == "through haproxy"
                ws.send(b"\x00" * 100_000)
                assert ws.recv(timeout=5 * UNIT) == b"\x00" * 100_000
    assert st.server.counters.upgraded == 2
    assert not st.server.counters.refused_by


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_per_ip_limit_counts_the_clients_not_haproxy(app, version, serve_thread, tmp_path):
    """Two clients through the same HAProxy are two addresses; a second
    connection from one of them is the one refused (429 with Retry-After)."""
    st = serve_thread(app, proxy_protocol=True, limit_connections_per_ip=1)
    with HAProxy(tmp_path, st.port) as haproxy:
        port = haproxy.port_v1 if version == "v1" else haproxy.port_v2
        with client("127.0.0.2", port) as a, client("127.0.0.3", port) as b:
            assert eval(a.recv(timeout=5 * UNIT))[0] == "127.0.0.2"
            assert eval(b.recv(timeout=5 * UNIT))[0] == "127.0.0.3"
            assert st.server._client_limits.open == {"127.0.0.2": 1, "127.0.0.3": 1}
            with pytest.raises(InvalidStatus) as info:
                client("127.0.0.2", port)
            assert info.value.response.status_code == 429
            assert info.value.response.headers["Retry-After"]
        wait_until(lambda: not st.server._client_limits.open)
        with client("127.0.0.2", port) as again:  # released when the first ended
            assert eval(again.recv(timeout=5 * UNIT))[0] == "127.0.0.2"


def test_haproxy_health_checks_over_the_proxy_protocol(serve_thread, tmp_path):
    """HAProxy's own checks carry a header too (v1: a TCP4 line with its own
    addresses; v2: LOCAL, which keeps the socket's address): answered as
    plain HTTP (200), never refused."""
    haproxy_or_skip()
    checks = []

    def http_handler(request):
        checks.append(request.path)
        return fastws.Response(200, "OK", [], b"ok\n")

    st = serve_thread(RemoteAddressListener, proxy_protocol=True, http_handler=http_handler)
    with HAProxy(tmp_path, st.port, health=True) as haproxy:
        wait_until(lambda: len(checks) >= 6)
        with client("127.0.0.2", haproxy.port_v2) as ws:
            assert eval(ws.recv(timeout=5 * UNIT))[0] == "127.0.0.2"
    assert set(checks) == {"/healthz"}
    assert not st.server.counters.refused_by


def test_without_proxy_protocol_haproxy_headers_are_refused(serve_thread, tmp_path):
    """A server not told about the proxy does not read its header as one:
    the client gets 400, never a connection under a wrong address."""
    haproxy_or_skip()
    st = serve_thread(RemoteAddressListener)
    with HAProxy(tmp_path, st.port) as haproxy:
        for port in (haproxy.port_v1, haproxy.port_v2):
            # a raw client: websockets' own may trip on the close that follows the 400
            with connect_from("127.0.0.2", port) as sock:
                sock.sendall(UPGRADE.format(path="/", port=port, key="dGhlIHNhbXBsZSBub25jZQ==",
                                            extra="").encode())
                answer = b""
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except ConnectionResetError:  # HAProxy may pass the server's close on as a reset
                    pass
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer
        # what the server did, whatever reached the client
        wait_until(lambda: st.server.counters.refused_by.get("http_400") == 2)
    assert st.server.counters.upgraded == 0
