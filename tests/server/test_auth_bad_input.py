"""Bad input against ``authenticate=JWTAuth(...)``, end to end (issue #15).

A malformed token (garbage, broken base64, ``alg: none``, a header bomb), a
huge header, a JWKS server that hangs, never finishes its body, announces
2 GB or answers garbage: each gets a clear refusal (the status, an RFC 6750
challenge), within the handshake's time, with no traceback in the server's
log, on both API levels; the websockets client is the peer. Run again with
FASTWS_PURE_PYTHON=1 for the twins (tests/run.sh does).
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time

import pytest
import websockets.sync.client as wsclient
from websockets.exceptions import InvalidStatus

import fastws

from util import UNIT, RawClient

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")
pytest.importorskip("cryptography", reason="cryptography is not installed (PyJWT[crypto])")

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from fastws.auth import JWTAuth  # noqa: E402

SECRET = "bad-input-secret-0123456789abcdef!"


class Who(fastws.Listener):
    def on_connect(self, ws):
        super().on_connect(ws)
        ws.send(json.dumps(ws.user))


async def who(ws):
    await ws.send(json.dumps(ws.user))
    await ws.wait_closed()


@pytest.fixture(params=["listener", "handler"])
def start(request, serve_thread):
    """start(auth, **options) -> ServerThread of one API level."""
    app = Who if request.param == "listener" else who

    def start(auth, **options):
        return serve_thread(app, authenticate=auth, **options)
    return start


@pytest.fixture
def server_log(caplog):
    """The fastws.* records at DEBUG and above; the test checks none has a traceback."""
    caplog.set_level(logging.DEBUG, logger="fastws")
    yield caplog
    bad = [r for r in caplog.records if r.name.startswith("fastws")
           and (r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage())]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def good(**extra) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + 300, **extra}, SECRET, algorithm="HS256")


def refusal(port: int, headers: list) -> InvalidStatus:
    """The websockets client's InvalidStatus for an upgrade with these headers."""
    with pytest.raises(InvalidStatus) as info:
        wsclient.connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers,
                         open_timeout=5 * UNIT).close()
    return info.value


def challenge(exc: InvalidStatus) -> str:
    return exc.response.headers.get("WWW-Authenticate", "")


NOW = int(time.time())
PAYLOAD = b64(json.dumps({"sub": "root", "exp": NOW + 300}).encode())
MALFORMED = {
    "garbage": "garbage",
    "two-parts": "a.b",
    "bad-base64": "eyJhbGciOiJIUzI1NiJ9.!!!.sig",
    "header-not-json": f"{b64(b'not json')}.{PAYLOAD}.sig",
    "header-a-list": f"{b64(b'[1,2]')}.{PAYLOAD}.sig",
    "alg-none": f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{PAYLOAD}.",
    "alg-None": f"{b64(json.dumps({'alg': 'None'}).encode())}.{PAYLOAD}.",
    "alg-HS256-signed-with-empty-key": (
        f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{PAYLOAD}."
        + b64(__import__('hmac').new(b"", f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{PAYLOAD}".encode(),
                                     "sha256").digest())),
    "payload-garbage": f"{b64(json.dumps({'alg': 'HS256'}).encode())}.%%%%.sig",
    "nested-header": b64(('{"alg":"HS256","x":' + "[" * 2000 + "]" * 2000 + "}").encode()) + ".e30.sig",
    "non-ascii": "\u00e9t\u00e9.x.y",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_tokens_get_401(start, server_log, name):
    st = start(JWTAuth(secret=SECRET))
    tok = MALFORMED[name]
    headers = [("Authorization", f"Bearer {tok}")] if tok.isascii() else []
    if not tok.isascii():
        # Not sendable through websockets' header checks: raw bytes (latin-1 on the wire).
        client = RawClient(st.port, "/ws", extra=f"Authorization: Bearer {tok}\r\n")
        assert client.status in (400, 401), client.head
        client.close()
        return
    exc = refusal(st.port, headers)
    assert exc.response.status_code == 401, (name, exc.response)
    assert 'error="invalid_token"' in challenge(exc), challenge(exc)
    body = exc.response.body.decode().strip()
    assert body in ("Unauthorized: malformed token", "Unauthorized: algorithm not allowed",
                    "Unauthorized: invalid token", "Unauthorized: invalid signature"), (name, body)
    # The server still serves a good token afterwards.
    with wsclient.connect(f"ws://127.0.0.1:{st.port}/ws", additional_headers=[("Authorization",
                          f"Bearer {good()}")], open_timeout=5 * UNIT) as ws:
        assert json.loads(ws.recv(timeout=5 * UNIT))["sub"] == "alice"


@pytest.mark.parametrize("name", ["bad-base64", "alg-none", "garbage"])
def test_malformed_tokens_from_every_source(start, server_log, name):
    """The same refusals when the token comes in the query, a cookie or a
    ``bearer.`` subprotocol (what browsers send)."""
    st = start(JWTAuth(secret=SECRET), subprotocols=["chat"])
    tok = MALFORMED[name]
    for path, headers in (
        (f"/ws?token={tok}", []),
        ("/ws", [("Cookie", f"theme=dark; token={tok}")]),
        ("/ws", [("Sec-WebSocket-Protocol", f"chat, bearer.{tok}")]),
    ):
        with pytest.raises(InvalidStatus) as info:
            wsclient.connect(f"ws://127.0.0.1:{st.port}{path}", additional_headers=headers,
                             open_timeout=5 * UNIT).close()
        assert info.value.response.status_code == 401, (path, headers)
        assert 'error="invalid_token"' in challenge(info.value)


def test_a_60kb_authorization_header_is_refused_at_once(start, server_log):
    """A head over max_head (8 KiB) is refused before the hook runs: 431,
    the connection closed, nothing held."""
    st = start(JWTAuth(secret=SECRET))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", st.port), timeout=5 * UNIT) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Authorization: Bearer " + b"A" * 60_000 + b"\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    status = int(data.split(b" ", 2)[1])
    assert status == 431, data[:200]
    assert time.monotonic() - started < 2 * UNIT


def test_a_token_over_max_token_size_within_the_head(start, server_log):
    """A 6 KB token fits an 8 KiB head but not max_token_size=4096: 401
    ``token too large``, before any decoding."""
    st = start(JWTAuth(secret=SECRET, max_token_size=4096))
    big = good(pad="x" * 4500)
    assert 4096 < len(big) < 7000
    exc = refusal(st.port, [("Authorization", f"Bearer {big}")])
    assert exc.response.status_code == 401
    assert 'error_description="token too large"' in challenge(exc)


# ---------------------------------------------------------------- JWKS misbehaving

class BadJWKS:
    """A real HTTP server on 127.0.0.1 that misbehaves as ``mode`` says:
    ``hang`` (never answers), ``stall-body`` (headers, a few bytes, then
    nothing), ``huge-length`` (announces 2 GB and sends nothing more),
    ``flood`` (streams chunks without end), ``garbage`` (200 with random
    bytes). Every connection is held at most until ``stop()``."""

    def __init__(self, mode: str):
        self.mode = mode
        self.hits = 0
        self.sent = 0
        self.release = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks"
        self.threads = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(10)
            try:
                if not conn.recv(65536).startswith(b"GET /jwks "):
                    return  # not our client (another process probing a port)
                self.hits += 1
                if self.mode == "garbage":
                    body = bytes(range(256)) * 8
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                elif self.mode in ("stall-body", "huge-length"):
                    length = 100 if self.mode == "stall-body" else 2 * 1024**3
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % length)
                    if self.mode == "stall-body":
                        conn.sendall(b'{"keys": [')
                elif self.mode == "flood":  # chunked: no length to refuse up front
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
                    while not self.release.is_set():
                        conn.sendall(chunk)
                        self.sent += 65536
                self.release.wait(30)
            except OSError:
                pass  # the client gave up: what it should do

    def stop(self):
        self.release.set()
        self.sock.close()
        for t in self.threads:
            t.join(10)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("mode, logged", [
    ("hang", "no answer within"),
    ("stall-body", ""),            # a socket timeout or the overall deadline: either is fine
    ("huge-length", "answer over"),
    ("flood", "answer over"),
    ("garbage", "not JSON"),
])
def test_misbehaving_jwks_gets_a_prompt_401(start, server_log, rsa_key, mode, logged):
    jwks = BadJWKS(mode)
    auth = JWTAuth(jwks_url=jwks.url, jwks_options={"timeout": 1.0})
    try:
        st = start(auth)
        tok = jwt.encode({"sub": "alice", "exp": int(time.time()) + 300}, rsa_key, algorithm="RS256",
                         headers={"kid": "k1"})
        started = time.monotonic()
        exc = refusal(st.port, [("Authorization", f"Bearer {tok}")])
        elapsed = time.monotonic() - started
        assert exc.response.status_code == 401
        assert 'error_description="unknown signing key"' in challenge(exc)
        assert elapsed < 3 * UNIT, elapsed  # within the JWKS timeout, far within the handshake's
        if mode in ("huge-length", "garbage"):
            assert elapsed < 0.9, elapsed  # refused on what was read, without waiting for the timeout
        warnings = [r.getMessage() for r in server_log.records
                    if r.name == "fastws.auth" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "fetch failed" in warnings[0] and logged in warnings[0], warnings
        # Within the refetch interval a second handshake is refused at once, with no new fetch.
        started = time.monotonic()
        assert refusal(st.port, [("Authorization", f"Bearer {tok}")]).response.status_code == 401
        assert time.monotonic() - started < 0.5 * UNIT
        assert jwks.hits == 1
        if mode == "flood":
            assert jwks.sent < 64 * 2**20  # stopped reading after max_size (1 MiB), not 2 GB
    finally:
        auth.close()
        jwks.stop()
