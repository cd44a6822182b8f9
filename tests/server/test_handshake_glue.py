"""The server's side of an accepted handshake, short of the parser: the drain's
503, the CLI's /healthz and /metrics hook (no Python call per upgrade when it
has nothing to check), and the access log following the logging
configuration (docs/design/handshake.md#where-the-instructions-go)."""
from __future__ import annotations

import logging

import pytest

import fastws
from fastws.apps import EchoListener, echo_handler
from fastws.metrics import DRAIN_RETRY_AFTER, Observability

from util import RawClient, http_request

APPS = {"listener": EchoListener, "handler": echo_handler}


def _upgrade(port: int, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@pytest.mark.parametrize("api", sorted(APPS))
@pytest.mark.parametrize("hook", [False, True])
def test_upgrades_get_503_while_the_server_drains(serve_thread, api, hook):
    """A draining server (fastws.run's graceful shutdown sets ``draining``)
    refuses new upgrades with 503 and Retry-After, with or without a
    process_request hook and without fastws.metrics; plain HTTP is
    answered as before."""
    seen = []
    options = {"process_request": lambda request: seen.append(request.path)} if hook else {}
    st = serve_thread(APPS[api], **options)
    c = RawClient(st.port)
    assert c.status == 101
    c.close()
    st.call(setattr, st.server, "draining", True)
    status, head, body = http_request(st.port, _upgrade(st.port))
    assert status == 503 and f"retry-after: {DRAIN_RETRY_AFTER}\r\n".encode() in head.lower()
    assert body == b"the server is shutting down\n"
    assert st.server.counters.refused_by["draining"] == 1
    status, _, _ = http_request(st.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 426
    st.call(setattr, st.server, "draining", False)
    c = RawClient(st.port)
    assert c.status == 101
    c.close()
    assert seen == (["/", "/", "/"] if hook else [])


def test_observability_hooks_upgrades_only_when_it_has_something_to_check():
    def app_hook(request):
        return None

    def hook_of(**kwargs):
        server = fastws.Server(EchoListener, **({"process_request": kwargs.pop("app")} if "app" in kwargs else {}))
        Observability(server, **kwargs)
        return server.process_request

    assert hook_of() is None  # the CLI's defaults: the server drains by itself
    assert hook_of(limit_connections=3) is not None
    assert hook_of(app=app_hook) is not None
    assert hook_of(retry_after=DRAIN_RETRY_AFTER + 1) is not None


@pytest.mark.parametrize("limit", [None, 5])
def test_observability_refusals_while_draining(serve_thread, limit):
    """With or without its hook, the drain's 503 is the one fastws.metrics gave."""
    st = serve_thread(EchoListener)
    st.call(lambda: Observability(st.server, limit_connections=limit, metrics=False))
    st.call(setattr, st.server, "draining", True)
    status, head, body = http_request(st.port, _upgrade(st.port))
    assert status == 503 and f"retry-after: {DRAIN_RETRY_AFTER}\r\n".encode() in head.lower()
    assert body == b"the server is shutting down\n"
    assert st.server.counters.refused_by == {"draining": 1}
    status, _, body = http_request(st.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (503, b"draining\n")


def test_the_access_log_follows_level_changes(serve_thread, caplog):
    """The access line of an upgrade is written exactly while fastws.access is
    enabled for INFO, whatever the order of the level changes (the check is
    cached: the cache must follow them)."""
    access = logging.getLogger("fastws.access")
    old = access.level
    caplog.set_level(logging.INFO, logger="fastws.access")  # (the handler lets INFO through)
    st = serve_thread(EchoListener)

    def upgrade_logged(path: str) -> bool:
        c = RawClient(st.port, path=path)
        assert c.status == 101
        c.send(1, b"x")  # the echo comes after the access line, if any, was written
        assert c.recv_frame() == (True, 1, b"x")
        c.close()
        return any(f"GET {path} HTTP/1.1\" 101" in r.getMessage() for r in caplog.records)

    try:
        for i, level in enumerate([logging.INFO, logging.WARNING, logging.WARNING, logging.INFO,
                                   logging.ERROR, logging.NOTSET, logging.DEBUG]):
            access.setLevel(level)
            expected = access.isEnabledFor(logging.INFO)
            assert upgrade_logged(f"/step{i}") is expected, (i, level)
        logging.disable(logging.INFO)  # (the level stays DEBUG)
        try:
            assert not upgrade_logged("/disabled")
        finally:
            logging.disable(logging.NOTSET)
        assert upgrade_logged("/enabled")
    finally:
        access.setLevel(old)


@pytest.mark.parametrize("api", sorted(APPS))
@pytest.mark.parametrize("admission", [False, True])
def test_a_bug_in_the_opening_handshake_aborts_that_connection_only(serve_thread, caplog, api, admission):
    """An exception out of the handshake's own code (here the upgrade reader,
    made to fail on one request) is logged with its traceback under
    fastws.transport, on the common path and on an access-controlled
    server's alike, and aborts that connection only: the next one upgrades."""
    options = {"authenticate": lambda request: True} if admission else {}
    st = serve_thread(APPS[api], **options)
    upgrades = st.server._upgrades

    class Failing:
        def __init__(self):
            self.armed = True

        def __getattr__(self, name):
            method = getattr(upgrades, name)

            def call(*args):
                if self.armed:
                    self.armed = False
                    raise RuntimeError("a bug")
                return method(*args)
            return call

    st.call(setattr, st.server, "_upgrades", Failing())
    caplog.set_level(logging.ERROR, logger="fastws.transport")
    status, head, body = http_request(st.port, _upgrade(st.port))
    assert status == 0 and head == b""  # aborted: no answer
    assert any("error during the opening handshake" in r.getMessage() and r.exc_info for r in caplog.records)
    c = RawClient(st.port)
    assert c.status == 101
    c.send(1, b"still serving")
    assert c.recv_frame() == (True, 1, b"still serving")
    c.close()
