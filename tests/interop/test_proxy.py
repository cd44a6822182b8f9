"""Proxies (issue #17): ``fastws.connect`` and ``fastws.syncclient.connect``
through real proxies that the tests start on loopback: Debian's tinyproxy
(HTTP CONNECT, Basic credentials) and PyPI's pproxy (SOCKS5 with
user:password, SOCKS4).

Every tunnel is proven, not assumed: the server sends back the address of
the peer it accepted, and that port must be one of the proxy process's own
TCP sockets (read from /proc); a direct connection's port must be the
client's. Then: wss:// (TLS with the server inside the tunnel), credentials
refused (not retried by the reconnect loops), the environment's
HTTPS_PROXY / ALL_PROXY / NO_PROXY, ``proxy=None``, a proxy that is down,
hangs or closes early, and the sans-I/O exchanges byte by byte.
"""
from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from types import SimpleNamespace

import pytest

import fastws
from fastws.exceptions import InvalidProxy, InvalidURI, ProxyError
from fastws.proxy import ConnectReader, Proxy, connect_request, parse_proxy, proxy_for, socks4, socks5
from fastws.syncclient import connect as sync_connect
from fastws.syncclient import connect_forever, is_transient

from conftest import ServerThread
from proxy_util import PASSWORD, USER, PProxy, TinyProxy, free_port, tcp_ports
from util import UNIT, arun, wait_until

trustme = pytest.importorskip("trustme")

CLIENTS = ("async", "sync")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy", "socks_proxy")


async def peer_echo(ws):
    """Say who connected (the peer's address as the server saw it), then echo."""
    await ws.send(json.dumps(list(ws.remote_address)[:2]))
    async for message in ws:
        await ws.send(message)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy variable of the machine leaks into a test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def servers():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    plain = ServerThread(peer_echo)
    tls = ServerThread(peer_echo, ssl=server_ctx)
    try:
        yield SimpleNamespace(ws=plain.port, wss=tls.port, ctx=client_ctx, down=free_port())
    finally:
        plain.stop()
        tls.stop()


@pytest.fixture(scope="module")
def tinyproxy(servers, tmp_path_factory):
    proxy = TinyProxy(tmp_path_factory.mktemp("tinyproxy"), [servers.ws, servers.wss, servers.down])
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def pproxy(tmp_path_factory):
    proxy = PProxy(tmp_path_factory.mktemp("pproxy"), "socks5")
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def pproxy4(tmp_path_factory):
    proxy = PProxy(tmp_path_factory.mktemp("pproxy4"), "socks4", auth=False)
    yield proxy
    proxy.stop()


def talk(client: str, url: str, ctx=None, timeout: float = 10.0, *, via=None, **kwargs):
    """Connect, read the server's view of the peer, echo one message, close.
    Returns (the peer's port as the server saw it, the client's own local
    port, whether TLS was used, whether the peer's port was one of the TCP
    sockets of process ``via`` (a proxy) while the connection was open)."""
    if client == "sync":
        ws = sync_connect(url, ssl=ctx, timeout=timeout * UNIT, **kwargs)
        try:
            peer = json.loads(ws.recv(timeout=5 * UNIT))
            ws.send("through")
            assert ws.recv(timeout=5 * UNIT) == "through"
            proxied = via is not None and peer[1] in tcp_ports(via.pid)
            return peer[1], ws.sock.getsockname()[1], isinstance(ws.sock, ssl.SSLSocket), proxied
        finally:
            ws.close()

    async def main():
        async with fastws.connect(url, ssl=ctx, open_timeout=timeout * UNIT, **kwargs) as ws:
            peer = json.loads(await ws.recv())
            await ws.send("through")
            assert await ws.recv() == "through"
            transport = ws._transport
            proxied = via is not None and peer[1] in tcp_ports(via.pid)
            return (peer[1], transport.get_extra_info("sockname")[1],
                    transport.get_extra_info("ssl_object") is not None, proxied)

    return arun(main())


def failure(client: str, url: str, timeout: float = 10.0, **kwargs) -> BaseException:
    """The exception one connection attempt raises."""
    if client == "sync":
        with pytest.raises(Exception) as info:
            sync_connect(url, timeout=timeout * UNIT, **kwargs).close()
        return info.value

    async def main():
        async with fastws.connect(url, open_timeout=timeout * UNIT, **kwargs):
            pass

    with pytest.raises(Exception) as info:
        arun(main())
    return info.value


def reconnect_failure(client: str, url: str, attempts: int = 3, **kwargs):
    """Run the reconnect loop (``async for`` / ``connect_forever``) with a
    fake sleep that records the delays and stops the loop after ``attempts``
    retries: (the exception that ended the loop, the delays slept)."""
    delays: list = []

    class Stop(Exception):
        pass

    if client == "sync":
        def sleep(delay):
            delays.append(delay)
            if len(delays) >= attempts:
                raise Stop

        with pytest.raises(Exception) as info:
            for ws in connect_forever(url, sleep=sleep, timeout=5 * UNIT, **kwargs):
                ws.close()
        return info.value, delays

    async def sleep(delay):
        delays.append(delay)
        if len(delays) >= attempts:
            raise Stop

    async def main():
        c = fastws.connect(url, open_timeout=5 * UNIT, **kwargs)
        c._sleep = sleep
        async for ws in c:
            await ws.close()

    with pytest.raises(Exception) as info:
        arun(main())
    return info.value, delays


# --------------------------------------------------------------------------
# Through the proxies
# --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("kind", ["http", "socks5", "socks5h"])
@pytest.mark.parametrize("client", CLIENTS)
def test_through_the_proxy(client, kind, scheme, servers, tinyproxy, pproxy):
    """The connection the server accepted is one the proxy opened; wss://
    runs TLS with the server (its certificate checked for "localhost")
    inside the tunnel; credentials in the URL are accepted."""
    proxy, url = (tinyproxy, tinyproxy.url()) if kind == "http" else (pproxy, pproxy.url(kind))
    port = servers.ws if scheme == "ws" else servers.wss
    target = f"{scheme}://localhost:{port}/"
    peer, local, tls, proxied = talk(client, target, servers.ctx if scheme == "wss" else None, via=proxy, proxy=url)
    assert proxied, "the server's peer is not a socket of the proxy"
    assert peer != local
    assert tls == (scheme == "wss")


@pytest.mark.parametrize("kind", ["http", "socks5h"])
def test_stock_asyncio_loop(kind, servers, tinyproxy, pproxy):
    """The async client's tunnel on asyncio's own loop too (the tests run on uvloop)."""
    proxy, url = (tinyproxy, tinyproxy.url()) if kind == "http" else (pproxy, pproxy.url(kind))

    async def main():
        async with fastws.connect(f"wss://localhost:{servers.wss}/", ssl=servers.ctx, proxy=url) as ws:
            peer = json.loads(await ws.recv())
            return peer[1] in tcp_ports(proxy.pid), ws._transport.get_extra_info("ssl_object") is not None

    with asyncio.Runner() as runner:  # the default loop factory
        assert runner.get_loop().__class__.__module__.startswith("asyncio")
        assert runner.run(asyncio.wait_for(main(), 10 * UNIT)) == (True, True)


@pytest.mark.parametrize("client", CLIENTS)
def test_socks4(client, servers, pproxy4):
    """SOCKS4: the name is resolved by the client (pproxy has no SOCKS4a:
    socks4a:// is checked byte by byte in test_socks4_exchange)."""
    for host in ("localhost", "127.0.0.1"):
        _, _, _, proxied = talk(client, f"ws://{host}:{servers.ws}/", via=pproxy4,
                                proxy=f"socks4://{USER}@127.0.0.1:{pproxy4.port}")
        assert proxied


@pytest.mark.parametrize("client", CLIENTS)
def test_a_direct_connection_is_the_clients_own(client, servers, tinyproxy):
    """The check above can fail: without a proxy the peer is the client."""
    peer, local, _, proxied = talk(client, f"ws://127.0.0.1:{servers.ws}/", via=tinyproxy, proxy=None)
    assert peer == local and not proxied


# --------------------------------------------------------------------------
# The proxy refuses: clear errors, not retried
# --------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_http_proxy_credentials_refused(client, servers, tinyproxy):
    url = f"ws://127.0.0.1:{servers.ws}/"
    wrong = failure(client, url, proxy=tinyproxy.url(f"{USER}:wrong"))
    assert isinstance(wrong, ProxyError) and wrong.status in (401, 407)  # tinyproxy: 401 for wrong ones
    assert "did not accept the credentials" in str(wrong) and "wrong" not in str(wrong)
    missing = failure(client, url, proxy=tinyproxy.url(None))
    assert isinstance(missing, ProxyError) and missing.status == 407
    assert "it wants credentials" in str(missing)
    assert not is_transient(wrong) and not is_transient(missing)
    exc, delays = reconnect_failure(client, url, proxy=tinyproxy.url(f"{USER}:wrong"))
    assert isinstance(exc, ProxyError) and delays == []  # raised at once, never retried


@pytest.mark.parametrize("client", CLIENTS)
def test_socks_credentials_refused(client, servers, pproxy):
    url = f"ws://127.0.0.1:{servers.ws}/"
    wrong = failure(client, url, proxy=pproxy.url(credentials=f"{USER}:wrong"))
    assert isinstance(wrong, ProxyError) and "did not accept the credentials" in str(wrong)
    assert not is_transient(wrong)
    exc, delays = reconnect_failure(client, url, proxy=pproxy.url(credentials=f"{USER}:wrong"))
    assert isinstance(exc, ProxyError) and delays == []


@pytest.mark.parametrize("client", CLIENTS)
def test_http_proxy_forbids_the_port(client, servers, tinyproxy):
    """tinyproxy's ConnectPort list does not hold this port: 403, not retried."""
    url = f"ws://127.0.0.1:{free_port()}/"
    exc = failure(client, url, proxy=tinyproxy.url())
    assert isinstance(exc, ProxyError) and exc.status == 403 and "does not allow" in str(exc)
    exc, delays = reconnect_failure(client, url, proxy=tinyproxy.url())
    assert isinstance(exc, ProxyError) and delays == []


# --------------------------------------------------------------------------
# Transient failures: retried
# --------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_down_is_retried(client, servers):
    """Nothing listens on the proxy's port: connection refused, retried."""
    url = f"ws://127.0.0.1:{servers.ws}/"
    exc = failure(client, url, proxy=f"http://127.0.0.1:{free_port()}")
    assert isinstance(exc, ConnectionRefusedError) and is_transient(exc)
    exc, delays = reconnect_failure(client, url, proxy=f"socks5://127.0.0.1:{free_port()}")
    assert len(delays) == 3 and type(exc).__name__ == "Stop"


@pytest.mark.parametrize("client", CLIENTS)
def test_server_down_behind_the_proxy_is_retried(client, servers, tinyproxy, pproxy):
    """The proxy is up, the server is not: tinyproxy answers 5xx, pproxy
    closes the tunnel; both are transient."""
    url = f"ws://127.0.0.1:{servers.down}/"
    http = failure(client, url, proxy=tinyproxy.url())
    assert isinstance(http, ProxyError) and http.status >= 500 and is_transient(http)
    socks = failure(client, url, proxy=pproxy.url())
    assert is_transient(socks), repr(socks)
    exc, delays = reconnect_failure(client, url, proxy=tinyproxy.url())
    assert len(delays) == 3 and type(exc).__name__ == "Stop"


class Silent:
    """A loopback listener that accepts and then says nothing (``close``:
    or closes each connection once it has read something)."""

    def __init__(self, close: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.close_early = close
        self.conns: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.close_early:
                conn.recv(1024)
                conn.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        except OSError:
            pass
        self.sock.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)


@pytest.mark.parametrize("kind", ["http", "socks5"])
@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_that_hangs_times_out(client, kind, servers):
    silent = Silent()
    try:
        start = time.monotonic()
        exc = failure(client, f"ws://127.0.0.1:{servers.ws}/", timeout=0.5, proxy=f"{kind}://127.0.0.1:{silent.port}")
        assert isinstance(exc, TimeoutError) and "proxy" in str(exc) and is_transient(exc)
        assert time.monotonic() - start < 5 * UNIT
    finally:
        silent.stop()


@pytest.mark.parametrize("kind", ["http", "socks5", "socks4a"])
@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_that_closes_early(client, kind, servers):
    silent = Silent(close=True)
    try:
        exc = failure(client, f"ws://127.0.0.1:{servers.ws}/", proxy=f"{kind}://127.0.0.1:{silent.port}")
        assert isinstance(exc, ProxyError) and "closed the connection" in str(exc) and is_transient(exc)
    finally:
        silent.stop()


# --------------------------------------------------------------------------
# The environment, NO_PROXY, proxy=None
# --------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_environment(client, monkeypatch, servers, tinyproxy, pproxy):
    url = f"ws://127.0.0.1:{servers.ws}/"
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url())
    _, _, _, proxied = talk(client, url, via=tinyproxy)  # proxy=True, the default
    assert proxied

    peer, local, _, proxied = talk(client, url, via=tinyproxy, proxy=None)  # turned off
    assert peer == local and not proxied

    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", pproxy.url("socks5h"))
    _, _, tls, proxied = talk(client, f"wss://localhost:{servers.wss}/", servers.ctx, via=pproxy)
    assert proxied and tls

    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    peer, local, _, proxied = talk(client, url, via=pproxy)
    assert peer == local and not proxied
    monkeypatch.setenv("NO_PROXY", f"localhost:{servers.wss}")  # host:port entries too
    peer, local, _, proxied = talk(client, f"wss://localhost:{servers.wss}/", servers.ctx, via=pproxy)
    assert peer == local and not proxied


def test_environment_order(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://h:1")
    assert proxy_for(False, "example.com", 80) == "http://h:1"
    assert proxy_for(True, "example.com", 443) is None  # HTTP_PROXY is for http:// and ws:// only
    monkeypatch.setenv("HTTPS_PROXY", "http://s:2")
    assert proxy_for(False, "example.com", 80) == "http://s:2"
    assert proxy_for(True, "example.com", 443) == "http://s:2"
    monkeypatch.setenv("ALL_PROXY", "socks5h://a:3")
    assert proxy_for(True, "example.com", 443) == "http://s:2"
    monkeypatch.setenv("WSS_PROXY", "socks5://w:4")
    assert proxy_for(True, "example.com", 443) == "socks5://w:4"
    monkeypatch.setenv("no_proxy", ".example.com")
    assert proxy_for(True, "www.example.com", 443) is None
    assert proxy_for(True, "example.org", 443) == "socks5://w:4"
    monkeypatch.setenv("no_proxy", "*")
    assert proxy_for(True, "example.org", 443) is None


def test_bad_proxy_in_the_environment(monkeypatch, servers):
    monkeypatch.setenv("HTTPS_PROXY", "ftp://127.0.0.1:21")
    for client in CLIENTS:
        exc = failure(client, f"ws://127.0.0.1:{servers.ws}/")
        assert isinstance(exc, InvalidProxy) and "ftp" in str(exc)


# --------------------------------------------------------------------------
# Proxy URLs
# --------------------------------------------------------------------------


def test_parse_proxy():
    assert parse_proxy("http://u:p%40ss%3A@Proxy.example:3128") == Proxy("http", "proxy.example", 3128, "u", "p@ss:")
    assert parse_proxy("proxy.example:3128") == Proxy("http", "proxy.example", 3128)
    assert parse_proxy("http://[::1]:8080/") == Proxy("http", "::1", 8080)
    assert parse_proxy("socks5h://10.0.0.1") == Proxy("socks5h", "10.0.0.1", 1080)
    assert parse_proxy("socks4a://id@h") == Proxy("socks4a", "h", 1080, "id")
    assert parse_proxy("http://h") == Proxy("http", "h", 80)
    assert "secret" not in repr(parse_proxy("http://u:secret@h:1"))


@pytest.mark.parametrize("url, words", [
    ("https://h:443", "TLS to the proxy"),
    ("ftp://h:21", "scheme 'ftp'"),
    ("http://:8080", "no host"),
    ("http://h:99999", "invalid proxy URL"),
    ("http://h:port", "invalid proxy URL"),
    ("http://h:1/path", "no path"),
    ("http://h:1?q=1", "no path"),
    ("http://user@h:1", "without a password"),
    ("socks4://id:pw@h", "no password"),
    (f"socks5://{'u' * 256}:p@h", "1 to 255 bytes"),
    ("http://u:%ff@h", "not UTF-8"),
])
def test_bad_proxy_urls(url, words):
    with pytest.raises(InvalidProxy, match=words) as info:
        parse_proxy(url)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidURI)


def test_bad_proxy_url_raises_at_once():
    with pytest.raises(InvalidProxy):
        fastws.connect("ws://127.0.0.1:1/", proxy="gopher://h")
    with pytest.raises(InvalidProxy):
        sync_connect("ws://127.0.0.1:1/", proxy="gopher://h")


# --------------------------------------------------------------------------
# The exchanges, sans-I/O
# --------------------------------------------------------------------------


def run_steps(steps, replies):
    """Drive an exchange with canned replies; (bytes sent, the outcome)."""
    sent = []
    out, need = next(steps)
    try:
        for reply in replies:
            sent.append(out)
            out, need = steps.send(reply)
    except StopIteration:
        return sent, "open"
    sent.append(out)
    return sent, need


def test_connect_request():
    proxy = parse_proxy(f"http://{USER}:{PASSWORD}@h:1")
    request = connect_request(proxy, "::1", 8080, "fastws")
    assert request == (b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: fastws\r\n"
                       b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n")
    with pytest.raises(InvalidURI):
        connect_request(proxy, "h\r\nX: y", 80)


def test_connect_reader():
    reader = ConnectReader()
    assert reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Con") is None
    assert reader.feed(b"nection established\r\nVia: t\r\n\r\n") == (200, "Connection established")
    assert reader.leftover == b""
    reader = ConnectReader(max_head=64)
    with pytest.raises(ProxyError, match="over 64 bytes"):
        reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20)
    with pytest.raises(ProxyError, match="did not answer CONNECT with HTTP"):
        ConnectReader().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    reader = ConnectReader()
    assert reader.feed(b"HTTP/1.0 200 OK\r\n\r\n\x16\x03") == (200, "OK") and reader.leftover == b"\x16\x03"


def test_socks5_exchange():
    proxy = parse_proxy("socks5h://u:p@h")
    sent, outcome = run_steps(socks5(proxy, "example.com", 443), [
        b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x03\x0b", b"example.net\x01\xbb"])
    assert sent == [b"\x05\x02\x00\x02", b"\x01\x01u\x01p", b"\x05\x01\x00\x03\x0bexample.com\x01\xbb", b""]
    assert outcome == "open"
    # socks5:// with the address resolved here (IPv6), no credentials
    sent, outcome = run_steps(socks5(parse_proxy("socks5://h"), "example.com", 80, "::1"), [
        b"\x05\x00", b"\x05\x00\x00\x01\x7f", b"\x00\x00\x01\x00\x50"])
    assert sent[1] == b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x50" and outcome == "open"
    # refusals
    with pytest.raises(ProxyError, match="connection refused") as info:
        run_steps(socks5(proxy, "example.com", 443), [b"\x05\x00", b"\x05\x05\x00\x01\x00"])
    assert info.value.code == 5 and info.value.transient
    with pytest.raises(ProxyError, match="not allowed by ruleset") as info:
        run_steps(socks5(proxy, "example.com", 443), [b"\x05\x00", b"\x05\x02\x00\x01\x00"])
    assert not info.value.transient
    with pytest.raises(ProxyError, match="none of the authentication methods") as info:
        run_steps(socks5(parse_proxy("socks5://h"), "example.com", 443), [b"\x05\xff"])
    assert not info.value.transient
    with pytest.raises(ProxyError, match="did not accept the credentials"):
        run_steps(socks5(proxy, "example.com", 443), [b"\x05\x02", b"\x01\x01"])
    with pytest.raises(ProxyError, match="not a SOCKS5 proxy"):
        run_steps(socks5(proxy, "example.com", 443), [b"HT"])
    with pytest.raises(ProxyError, match="closed the connection") as info:
        run_steps(socks5(proxy, "example.com", 443), [b"\x05\x00", b"\x05\x00"])  # ended after 2 of 5 bytes
    assert info.value.transient
    with pytest.raises(InvalidURI):
        run_steps(socks5(proxy, "x" * 256, 443), [])


def test_socks4_exchange():
    sent, outcome = run_steps(socks4(parse_proxy("socks4a://id@h"), "example.com", 80), [b"\x00\x5a" + bytes(6)])
    assert sent == [b"\x04\x01\x00\x50\x00\x00\x00\x01id\x00example.com\x00"] and outcome == "open"
    sent, outcome = run_steps(socks4(parse_proxy("socks4://h"), "example.com", 80, "10.1.2.3"),
                              [b"\x00\x5a" + bytes(6)])
    assert sent == [b"\x04\x01\x00\x50\x0a\x01\x02\x03\x00"]
    with pytest.raises(ProxyError, match="rejected or failed"):
        run_steps(socks4(parse_proxy("socks4a://h"), "example.com", 80), [b"\x00\x5b" + bytes(6)])


def test_proxy_errors_and_the_reconnect_policy():
    assert is_transient(ProxyError("x", status=502, transient=True))
    assert not is_transient(ProxyError("x", status=407))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError("the proxy ... did not open the tunnel in time"))


def test_open_timeout_bounds_a_stuck_tunnel():
    """The async client's message names the proxy when the tunnel is what timed out."""
    silent = Silent()
    try:
        async def main():
            with pytest.raises(TimeoutError, match="did not open the tunnel within open_timeout"):
                await fastws.connect(f"ws://127.0.0.1:{silent.port}/", proxy=f"http://127.0.0.1:{silent.port}",
                                     open_timeout=0.3 * UNIT)

        arun(main())
        # the client closed its socket to the proxy: the listener reads the request, then the end
        conn = wait_until(lambda: silent.conns and silent.conns[0])
        conn.settimeout(5 * UNIT)
        received = b""
        while chunk := conn.recv(4096):
            received += chunk
        assert received.startswith(b"CONNECT 127.0.0.1:")
    finally:
        silent.stop()
