"""``proxy_protocol=True``: the PROXY header (v1, v2) at the start of a
connection gives the client's address, on both API levels.

Raw sockets write the headers here (fastws/proxyproto.py's tests check the
parser byte by byte; tests/interop/test_haproxy.py runs a real HAProxy). The
codec is the one fastws picked: run again with FASTWS_PURE_PYTHON=1.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import struct

import pytest

import fastws
from fastws.exceptions import ConfigError
from fastws.proxyproto import V2_SIGNATURE

from cliutil import Command
from cliutil import run as cli_run
from util import UNIT, RawClient, RemoteAddressListener, UPGRADE, arun, remote_address_handler, wait_until


APPS = {"listener": RemoteAddressListener, "handler": remote_address_handler}


@pytest.fixture(params=sorted(APPS))
def start(request, serve_thread):
    def start(**options):
        options.setdefault("proxy_protocol", True)
        return serve_thread(APPS[request.param], **options)
    return start


class ProxiedClient(RawClient):
    """A raw client that writes ``prefix`` (a PROXY header) before its upgrade request."""

    def __init__(self, port, prefix=b"", source="127.0.0.1", split=False, timeout=5.0):
        self.sock = socket.socket()
        self.sock.settimeout(timeout * UNIT)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = UPGRADE.format(path="/", port=port, key=key, extra="").encode()
        if split:
            self.sock.sendall(prefix)
            self.sock.sendall(request)  # may arrive as a read of its own
        else:
            self.sock.sendall(prefix + request)
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head


def v1(src="203.0.113.9", sport=4242, dst="127.0.0.1", dport=8765, proto="TCP4"):
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(command=1, family=0x11, block=b""):
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def v2_inet(src, sport, dst="127.0.0.1", dport=8765, tlvs=b""):
    return v2(block=socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs)


def v2_inet6(src, sport, dst="::1", dport=8765):
    return v2(family=0x21, block=socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
              + struct.pack("!HH", sport, dport))


def seen(client) -> str:
    assert client.status == 101, client.head
    opcode, payload = client.recv_data()
    return payload.decode()


def refused_unread(port, data, source="127.0.0.1") -> bytes:
    """Send ``data``; what the server answers before it closes (b"": nothing)."""
    with socket.socket() as sock:
        sock.settimeout(5 * UNIT)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        got = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return got
                got += chunk
        except ConnectionResetError:
            return got


# ------------------------------------------------------------------ the address
@pytest.mark.parametrize("split", [False, True])
def test_v1_and_v2_give_the_client_address(start, split):
    st = start()
    for prefix, expected in [
        (v1(), ("203.0.113.9", 4242)),
        (v1("2001:db8::9", 4243, "::1", proto="TCP6"), ("2001:db8::9", 4243, 0, 0)),
        (v2_inet("198.51.100.20", 5000), ("198.51.100.20", 5000)),
        (v2_inet("198.51.100.21", 5001, tlvs=b"\xea\x00\x05\x01vpce"), ("198.51.100.21", 5001)),
        (v2_inet6("2001:db8::20", 5002), ("2001:db8::20", 5002, 0, 0)),
    ]:
        client = ProxiedClient(st.port, prefix, split=split)
        assert seen(client) == repr(expected)
        client.send(1, b"still a WebSocket")
        assert client.recv_data() == (1, b"still a WebSocket")
        client.close()


def test_local_unknown_and_unspec_keep_the_socket_address(start):
    """v2 LOCAL (a health check), v1 UNKNOWN and v2 AF_UNSPEC: the real endpoint."""
    st = start(forwarded_allow_ips=["127.0.0.0/8"])
    for prefix in (v2(command=0, family=0), v2(command=0, family=0x11, block=b"\0" * 12),
                   b"PROXY UNKNOWN\r\n", v2(command=1, family=0)):
        client = ProxiedClient(st.port, prefix, source="127.0.0.3")
        address = eval(seen(client))
        assert address[0] == "127.0.0.3" and address[1] == client.sock.getsockname()[1]
        client.close()


def test_a_health_check_over_local_gets_plain_http(serve_thread):
    """What an AWS NLB health check does: a LOCAL header, then GET /healthz."""
    st = serve_thread(RemoteAddressListener, proxy_protocol=True,
                      http_handler=lambda request: fastws.Response(200, "OK", [], b"ok\n"))
    answer = refused_unread(st.port, v2(command=0, family=0) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok\n")


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                                   # no header
    b"PROXY TCP4 203.0.113.256 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n",    # a bad address
    b"PROXY TCP4 " + b"1" * 200 + b"\r\n",                                  # over 107 bytes
    v2(family=0x12, block=b"\0" * 12) + b"GET / HTTP/1.1\r\n\r\n",          # UDP
    V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 64,                        # 64 KiB announced
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 64,           # TLS to a plain port
])
def test_a_bad_header_closes_without_an_answer(start, data, caplog):
    st = start()
    with caplog.at_level(logging.WARNING, logger="fastws.server"):
        assert refused_unread(st.port, data) == b""
        wait_until(lambda: st.server.counters.refused_by.get("proxy_protocol") == 1)
    assert st.server.counters.upgraded == 0
    assert "bad PROXY protocol header from 127.0.0.1" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_header_that_never_ends_is_cut_by_handshake_timeout(start):
    st = start(handshake_timeout=0.5, timer_tick=0.1)
    for partial in (b"PROXY TCP4 203.0.113.9", V2_SIGNATURE + b"\x21\x11\x00\x0c\x01\x02"):
        with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
            sock.sendall(partial)
            assert sock.recv(100) == b""  # closed by the server, no answer
    assert st.server.counters.events["handshake_timeout"] == 2
    assert not st.server.connections


def test_a_truncated_header_then_eof_closes(start):
    st = start()
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.9 127")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    wait_until(lambda: not st.server.connections)
    assert st.server.counters.upgraded == 0


def test_an_untrusted_peer_is_closed_unread(start, caplog):
    """From a peer not in forwarded_allow_ips a PROXY header is not believed:
    the connection is closed before anything is read, with or without one."""
    st = start(forwarded_allow_ips=["127.0.0.1"])
    with caplog.at_level(logging.WARNING, logger="fastws.server"):
        assert refused_unread(st.port, v1() + UPGRADE.encode(), source="127.0.0.2") == b""
        assert refused_unread(st.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2") == b""
        wait_until(lambda: st.server.counters.refused_by.get("proxy_untrusted") == 2)
    assert "connection from 127.0.0.2, not in forwarded_allow_ips" in caplog.text
    # the trusted proxy still gets through
    assert seen(ProxiedClient(st.port, v1())) == repr(("203.0.113.9", 4242))


def test_cidr_and_any_in_forwarded_allow_ips(start):
    st = start(forwarded_allow_ips=["127.0.0.0/30"])
    assert seen(ProxiedClient(st.port, v1(), source="127.0.0.3")) == repr(("203.0.113.9", 4242))
    assert refused_unread(st.port, v1(), source="127.0.0.4") == b""


def test_off_by_default_a_header_is_a_bad_request(serve_thread):
    """Without proxy_protocol nothing reads a PROXY header: it is not HTTP (400)."""
    st = serve_thread(RemoteAddressListener)
    answer = refused_unread(st.port, v1() + UPGRADE.format(path="/", port=1, key="x", extra="").encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    # the server's own subclass of the plain class: nothing mixed in
    assert st.server._connection_class.__bases__ == (fastws.server.ServerConnection,)


def test_proxy_protocol_must_be_a_bool():
    with pytest.raises(ConfigError, match="proxy_protocol must be True or False"):
        fastws.Server(RemoteAddressListener, proxy_protocol="yes")


# ------------------------------------------------------------------ where the address is used
def test_per_ip_limits_count_the_proxied_address(start):
    st = start(limit_connections_per_ip=1)
    a = ProxiedClient(st.port, v1("203.0.113.1", 1000))
    b = ProxiedClient(st.port, v2_inet("203.0.113.2", 1000))  # the same proxy, another client
    assert seen(a) == repr(("203.0.113.1", 1000)) and seen(b) == repr(("203.0.113.2", 1000))
    again = ProxiedClient(st.port, v1("203.0.113.1", 1001))
    assert again.status == 429 and b"Retry-After: " in again.head
    a.close()
    wait_until(lambda: "203.0.113.1" not in st.server._client_limits.open)
    assert seen(ProxiedClient(st.port, v1("203.0.113.1", 1002))) == repr(("203.0.113.1", 1002))


def test_forwarded_headers_are_believed_only_from_a_trusted_proxied_address(start):
    """The PROXY address goes through forwarded_allow_ips like a socket's:
    the client's own X-Forwarded-For is not believed."""
    st = start(limit_connections_per_ip=1)
    key = base64.b64encode(os.urandom(16)).decode()
    spoof = UPGRADE.format(path="/", port=st.port, key=key, extra="X-Forwarded-For: 192.0.2.99\r\n").encode()
    a = ProxiedClient(st.port, v1("203.0.113.5", 1000))
    assert seen(a) == repr(("203.0.113.5", 1000))
    answer = refused_unread(st.port, v1("203.0.113.5", 1001) + spoof)
    assert answer.startswith(b"HTTP/1.1 429 ")  # counted as 203.0.113.5, not as 192.0.2.99
    assert st.server._client_limits.open == {"203.0.113.5": 1}


def test_the_access_log_and_authenticate_see_the_client(start, caplog):
    seen_by_hook = []

    def authenticate(request):
        seen_by_hook.append(request.headers.get("Host"))
        return {"sub": "u"}

    st = start(authenticate=authenticate)
    with caplog.at_level(logging.INFO, logger="fastws.access"):
        client = ProxiedClient(st.port, v2_inet("198.51.100.7", 6000))
        assert seen(client) == repr(("198.51.100.7", 6000))
        wait_until(lambda: "198.51.100.7:6000" in caplog.text)
    assert seen_by_hook
    assert '198.51.100.7:6000 - "GET / HTTP/1.1" 101' in caplog.text


async def _unix_exchange(path, data) -> bytes:
    """Send ``data`` over the Unix socket; what comes back until the first
    frame's payload is in (or the server closes)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    got = b""
    try:
        while True:
            head, sep, rest = got.partition(b"\r\n\r\n")
            if sep and len(rest) >= 2 and len(rest) >= 2 + rest[1]:
                return got
            try:
                chunk = await reader.read(65536)
            except (BrokenPipeError, ConnectionResetError):
                return got
            if not chunk:
                return got
            got += chunk
    finally:
        writer.close()


def _unix_seen(answer: bytes) -> str:
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), answer
    return rest[2:2 + rest[1]].decode()


@pytest.mark.parametrize("app", sorted(APPS))
def test_unix_socket_proxy(app, tmp_path):
    """HAProxy in front through a Unix socket: trusted with "unix:"; an
    AF_UNIX v2 header gives the client's path."""
    path = str(tmp_path / "ws.sock")
    request = UPGRADE.format(path="/", port=1, key="dGhlIHNhbXBsZSBub25jZQ==", extra="").encode()
    unix_block = b"/tmp/client.sock".ljust(108, b"\0") + b"/tmp/ws.sock".ljust(108, b"\0")

    async def main():
        async with fastws.serve(APPS[app], unix_path=path, proxy_protocol=True,
                                forwarded_allow_ips=["unix:"]):
            assert _unix_seen(await _unix_exchange(path, v1() + request)) == repr(("203.0.113.9", 4242))
            assert _unix_seen(await _unix_exchange(path, v2(family=0x31, block=unix_block) + request)) == \
                repr("/tmp/client.sock")
            local = _unix_seen(await _unix_exchange(path, v2(command=0, family=0) + request))
            assert local in (repr(""), repr(None))  # the socket's own peername: unnamed

    arun(main())


def test_unix_socket_peer_not_trusted_by_default(tmp_path):
    path = str(tmp_path / "ws.sock")

    async def main():
        async with fastws.serve(RemoteAddressListener, unix_path=path, proxy_protocol=True) as server:
            assert await _unix_exchange(path, v1()) == b""
            assert server.counters.refused_by == {"proxy_untrusted": 1}

    arun(main())


# ------------------------------------------------------------------ TLS, the command
def test_proxy_protocol_with_ssl_is_a_config_error():
    """The proxy's header comes before the client's TLS bytes, in clear: TLS
    is terminated at the proxy instead (docs/deployment/proxies.md)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    async def main():
        with pytest.raises(ConfigError, match="terminate TLS at the proxy"):
            await fastws.serve(RemoteAddressListener, "127.0.0.1", 0, ssl=ctx, proxy_protocol=True)

    arun(main())


@pytest.mark.parametrize("command, how", [("echo", "flag"), ("chat", "env"), ("push", "flag")])
def test_the_fastws_command(command, how):
    """``--proxy-protocol`` / ``FASTWS_PROXY_PROTOCOL=1`` on the built-in apps:
    the access log names the client of the header; a connection without one
    is closed unanswered."""
    args = ["run", command, "--port", "0", "--access-log"] + (["--proxy-protocol"] if how == "flag" else [])
    env = {"FASTWS_PROXY_PROTOCOL": "1"} if how == "env" else {}
    cmd = Command(*args, env=env)
    try:
        path = "/ws" if command in ("chat", "push") else "/"
        with socket.create_connection(("127.0.0.1", cmd.port), timeout=5 * UNIT) as sock:
            sock.sendall(v1("203.0.113.77", 4444) + UPGRADE.format(
                path=path, port=cmd.port, key="dGhlIHNhbXBsZSBub25jZQ==", extra="").encode())
            assert sock.recv(12) == b"HTTP/1.1 101"
        assert refused_unread(cmd.port, UPGRADE.format(path=path, port=cmd.port, key="x", extra="").encode()) == b""
    finally:
        cmd.stop()
    assert '203.0.113.77:4444 - "GET ' in cmd.stderr, cmd.stderr
    assert "bad PROXY protocol header from 127.0.0.1" in cmd.stderr


def test_the_command_refuses_a_bad_value_and_tls():
    out = cli_run("echo", "--proxy-protocol", "maybe")
    assert out.returncode == 2 and "not a boolean" in out.stderr and "Traceback" not in out.stderr
    out = cli_run("echo", env={"FASTWS_PROXY_PROTOCOL": "maybe"})
    assert out.returncode == 2 and "not a boolean" in out.stderr
    out = cli_run("echo", "--help")
    assert "--proxy-protocol" in out.stdout and "FASTWS_PROXY_PROTOCOL" in out.stdout.replace("\n", "").replace(" ", "")


@pytest.mark.parametrize("header", [v1(), v2_inet("198.51.100.30", 7000)], ids=["v1", "v2"])
def test_a_header_cut_across_reads(start, header):
    """The first read holds part of the header: the rest is awaited (held,
    bounded), then the request is read as usual."""
    from fastws.proxyproto import ProxyHeaderReader

    st = start()
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall(header[:9])
        wait_until(lambda: any(type(getattr(c, "_proxy", None)) is ProxyHeaderReader
                               for c in list(st.server.connections)))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(header[9:] + UPGRADE.format(path="/", port=st.port, key=key, extra="").encode())
        client = RawClient.__new__(RawClient)
        client.sock, client.buf = sock, b""
        client.status = int(client._read_until(b"\r\n\r\n").split(b" ", 2)[1])
        client.head = b""
        expected = ("203.0.113.9", 4242) if header.startswith(b"PROXY") else ("198.51.100.30", 7000)
        assert seen(client) == repr(expected)


@pytest.mark.parametrize("options", [{}, {"proxy_protocol": True, "limit_connections_per_ip": 5}])
def test_the_server_keeps_its_attributes_inline(options):
    """Options add no attribute to the Server: at 30 instance attributes
    CPython stops keeping them inline, and each ``server.x`` the handshake
    reads falls off the specialized LOAD_ATTR_INSTANCE_VALUE (seen as a
    few % more instructions per handshake)."""
    import contextlib
    import dis
    import io

    server = fastws.Server(RemoteAddressListener, **options)

    def read(s):
        return s.origins

    for _ in range(64):
        read(server)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dis.dis(read, adaptive=True)
    loads = [line.split()[1] for line in out.getvalue().splitlines() if "LOAD_ATTR" in line]
    assert loads == ["LOAD_ATTR_INSTANCE_VALUE"], (loads, len(vars(server)))
