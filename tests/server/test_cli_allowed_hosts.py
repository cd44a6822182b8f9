"""The Host allowlist (``allowed_hosts=``, ``--allowed-hosts``) and the
same-origin defaults of ``fastws chat``/``fastws push`` through the command.

Real clients: the websockets sync client on a socket connected to 127.0.0.1
but naming another host in its URI (so its Host header is that name, as after
DNS rebinding), and http.client with an explicit Host.
"""
from __future__ import annotations

import http.client
import socket

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

import fastws
from fastws import handshake
from cliutil import Command, run
from util import UNIT


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def hello(request):
    return fastws.Response(200, "OK", [("Content-Type", "text/plain")], b"hello\n")


def ws_as(port, host, path="/", **kwargs):
    """A WebSocket to 127.0.0.1:port whose request says ``Host: host:port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
    return ws_sync.connect(f"ws://{host}:{port}{path}", sock=sock, open_timeout=5 * UNIT, **kwargs)


def http_as(port, host, method="GET", path="/", body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def refused_upgrade(port, host, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        ws_as(port, host, **kwargs)
    return info.value.response.status_code


def test_hosts_outside_the_allowlist_get_400(serve_thread):
    st = serve_thread(echo, http_handler=hello,
                      allowed_hosts=["example.com", ".good.org", "*.apps.net", "127.0.0.1", "[::1]"])
    for host in ("example.com", "EXAMPLE.COM", "good.org", "a.b.good.org", "x.apps.net", "127.0.0.1"):
        with ws_as(st.port, host) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5 * UNIT) == "hi"
        assert http_as(st.port, f"{host}:{st.port}") == (200, b"hello\n"), host
    assert http_as(st.port, "[::1]:80") == (200, b"hello\n")
    for host in ("evil.example", "example.com.evil.example", "apps.net", "notgood.org", "localhost",
                 "10.0.0.1"):
        assert refused_upgrade(st.port, host) == 400, host
        status, body = http_as(st.port, f"{host}:{st.port}")
        assert status == 400 and b"Host not allowed" in body, host
    for value in ("example.com@evil", "example.com:80:80", "", "example.com/x"):
        assert http_as(st.port, value)[0] == 400, value
    # Checked before the server's own origin policy and subprotocol choice.
    assert refused_upgrade(st.port, "evil.example", origin="http://evil.example") == 400


def test_allowed_hosts_validated_at_start_up():
    for bad in ("example.com", [], ["http://example.com"], ["example.com:8080"], [None], ["*.[::1]"], 42):
        with pytest.raises(fastws.ConfigError):
            fastws.serve(echo, "127.0.0.1", 0, allowed_hosts=bad)
    with pytest.raises(fastws.ConfigError):
        fastws.run(echo, "127.0.0.1", 0, allowed_hosts="example.com")


def test_off_by_default_and_the_fast_path_is_untouched(serve_thread, monkeypatch):
    """Without allowed_hosts any Host is answered, and a plain upgrade takes
    the 101 short cut: check_request (the general way) is never called."""
    calls = []
    general = handshake.check_request
    monkeypatch.setattr(handshake, "check_request", lambda *a, **k: calls.append(1) or general(*a, **k))
    st = serve_thread(echo)
    assert st.server.allowed_hosts is None
    with ws_as(st.port, "anything.example") as ws:
        ws.send("x")
        assert ws.recv(timeout=5 * UNIT) == "x"
    assert calls == []
    st2 = serve_thread(echo, allowed_hosts=["*"])
    with ws_as(st2.port, "anything.example"):
        pass
    assert calls == [1]


def test_cli_allowed_hosts_for_every_serving_command():
    with Command("chat", "--port", "0", "--log-level", "warning",
                 "--allowed-hosts", "chat.example,localhost") as cmd:
        assert http_as(cmd.port, f"chat.example:{cmd.port}")[0] == 200
        assert http_as(cmd.port, f"127.0.0.1:{cmd.port}")[0] == 400
        assert http_as(cmd.port, f"rebound.evil:{cmd.port}", path="/healthz")[0] == 400
        assert refused_upgrade(cmd.port, "rebound.evil", path="/ws") == 400
        with ws_as(cmd.port, "localhost", path="/ws"):
            pass
    with Command("echo", "--port", "0", "--log-level", "warning",
                 env={"FASTWS_ALLOWED_HOSTS": ".example.com"}) as cmd:
        assert refused_upgrade(cmd.port, "127.0.0.1") == 400
        with ws_as(cmd.port, "ws.example.com") as ws:
            ws.send("e")
            assert ws.recv(timeout=5 * UNIT) == "e"
    with Command("push", "--port", "0", "--log-level", "warning", "--allowed-hosts", "push.example") as cmd:
        assert http_as(cmd.port, "evil.example", "POST", "/publish/t", b"x")[0] == 400
        assert http_as(cmd.port, "push.example", "POST", "/publish/t", b"x") == (200, b'{"delivered":0}\n')


def test_cli_bad_allowed_hosts_one_line_exit_2():
    out = run("echo", "--port", "0", "--allowed-hosts", "http://example.com")
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "allowed_hosts" in out.stderr, out.stderr


def test_cli_push_same_origin_by_default_and_origins_flag():
    with Command("push", "--port", "0", "--log-level", "warning") as cmd:
        host = f"127.0.0.1:{cmd.port}"
        assert http_as(cmd.port, host, "POST", "/publish/t", b"x",
                       {"Origin": "http://evil.example", "Content-Type": "text/plain"})[0] == 403
        assert http_as(cmd.port, host, "POST", "/publish/t", b"x", {"Origin": f"http://{host}"})[0] == 200
        assert refused_upgrade(cmd.port, "127.0.0.1", path="/ws", origin="http://evil.example") == 403
    with Command("push", "--port", "0", "--log-level", "warning", "--origins", "https://app.example") as cmd:
        host = f"127.0.0.1:{cmd.port}"
        assert http_as(cmd.port, host, "POST", "/publish/t", b"x", {"Origin": "https://app.example"})[0] == 200
        assert http_as(cmd.port, host, "POST", "/publish/t", b"x")[0] == 200  # no Origin: a backend
        assert http_as(cmd.port, host, "POST", "/publish/t", b"x", {"Origin": "http://evil.example"})[0] == 403
    with Command("chat", "--port", "0", "--log-level", "warning", "--origins", "*") as cmd:
        with ws_as(cmd.port, "127.0.0.1", path="/ws", origin="http://evil.example"):
            pass
