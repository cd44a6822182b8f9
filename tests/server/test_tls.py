"""wss:// with certificates made by trustme; websockets and aiohttp clients."""
from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest

trustme = pytest.importorskip("trustme")

import aiohttp  # noqa: E402
import websockets  # noqa: E402
import websockets.sync.client as ws_sync  # noqa: E402

import fastws  # noqa: E402
from cliutil import Command, get  # noqa: E402
from util import arun  # noqa: E402


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _pems(tmp_path, cert, name):
    certfile, keyfile = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    return str(certfile), str(keyfile)


def _client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def wss(tmp_path, ca):
    certfile, keyfile = _pems(tmp_path, ca.issue_cert("127.0.0.1", "localhost"), "good")
    cmd = Command("run", "echo", "--port", "0", "--ssl-certfile", certfile, "--ssl-keyfile", keyfile,
                  "--log-level", "warning")
    yield cmd
    assert cmd.stop() == 0
    assert "Traceback" not in cmd.stderr


def test_websockets_client_over_wss(wss, ca):
    assert "wss://127.0.0.1:" in wss.line, wss.line
    with ws_sync.connect(f"wss://localhost:{wss.port}/", ssl=_client_ctx(ca)) as ws:
        ws.send("secure")
        assert ws.recv(timeout=5) == "secure"
        ws.send(b"\x01" * 100_000)
        assert ws.recv(timeout=5) == b"\x01" * 100_000


def test_aiohttp_client_over_wss_and_https_health(wss, ca):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"wss://localhost:{wss.port}/", ssl=_client_ctx(ca)) as ws:
                await ws.send_str("via aiohttp")
                assert (await ws.receive(timeout=5)).data == "via aiohttp"
                await ws.close()
                assert ws.close_code == 1000
    arun(main())
    status, _, body = get(f"https://localhost:{wss.port}/healthz", context=_client_ctx(ca))
    assert status == 200 and body == b"ok\n"


def test_untrusted_certificate_refused_by_clients(wss, ca):
    other = trustme.CA()  # the client trusts another CA
    with pytest.raises(ssl.SSLCertVerificationError):
        ws_sync.connect(f"wss://localhost:{wss.port}/", ssl=_client_ctx(other))

    async def main():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.ws_connect(f"wss://localhost:{wss.port}/", ssl=_client_ctx(other))
    arun(main())
    # the server shrugs the failed handshakes off and serves the next client
    with ws_sync.connect(f"wss://localhost:{wss.port}/", ssl=_client_ctx(ca)) as ws:
        ws.send("after")
        assert ws.recv(timeout=5) == "after"


def test_wrong_hostname_and_expired_certificate_refused(tmp_path, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    cases = {
        "wronghost": ca.issue_cert("example.org"),
        "expired": ca.issue_cert("127.0.0.1", "localhost", not_before=now - datetime.timedelta(days=30),
                                 not_after=now - datetime.timedelta(days=1)),
    }
    for name, cert in cases.items():
        certfile, keyfile = _pems(tmp_path, cert, name)
        with Command("run", "echo", "--port", "0", "--ssl-certfile", certfile, "--ssl-keyfile", keyfile,
                     "--log-level", "error") as cmd:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                ws_sync.connect(f"wss://localhost:{cmd.port}/", ssl=_client_ctx(ca))
            assert ("expired" if name == "expired" else "match") in str(info.value), info.value

            async def main():
                async with aiohttp.ClientSession() as session:
                    with pytest.raises(aiohttp.ClientConnectorCertificateError):
                        await session.ws_connect(f"wss://localhost:{cmd.port}/", ssl=_client_ctx(ca))
            arun(main())


def test_ssl_context_in_the_api(ca):
    """fastws.serve(..., ssl=ctx) and fastws.connect(wss://, ssl=ctx)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)

    async def main():
        async def echo(ws):
            async for m in ws:
                await ws.send(m)
        async with fastws.serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
            async with websockets.connect(f"wss://localhost:{server.port}/", ssl=_client_ctx(ca)) as ws:
                await ws.send("api")
                assert await asyncio.wait_for(ws.recv(), 5) == "api"
    arun(main())


def test_bad_key_is_one_line_exit_2(tmp_path, ca):
    from cliutil import run

    certfile, _ = _pems(tmp_path, ca.issue_cert("localhost"), "a")
    _, otherkey = _pems(tmp_path, ca.issue_cert("localhost"), "b")
    out = run("run", "echo", "--ssl-certfile", certfile, "--ssl-keyfile", otherkey)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "cannot load the TLS certificate" in out.stderr, out.stderr
