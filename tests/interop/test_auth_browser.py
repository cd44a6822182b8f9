"""JWT from a real browser (issue #15): the cookie and the subprotocol ways.

Debian's Chromium (headless, driven by playwright) opens ``new WebSocket(url)``
and ``new WebSocket(url, ["bearer." + token, "chat"])`` against ``fastws run
--jwt-secret`` serving an app that tells the page its ``ws.user``, on both API
levels and both implementations (the server runs in a subprocess, with
FASTWS_PURE_PYTHON=1 for the twins). The page is served by the same server
(its 426 answer to plain HTTP), so the cookie it sets goes with the upgrade.
Refusals: the browser sees the connection fail, the server's access log has
the 401. Also ``fastws push --jwt-secret`` with the token in a cookie: a
subscriber in the page gets what a publisher with a ``pubs`` claim POSTs.

Skipped like tests/apps/test_chat_browser.py when Chromium or playwright is
missing (fails instead under FASTWS_REQUIRE_BROWSER).
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "apps"))
from test_chat_browser import CHROMIUM, CHROMIUM_ARGS, _browser_or_skip  # noqa: E402

from cliutil import Command  # noqa: E402
from util import UNIT, wait_until  # noqa: E402

jwt = pytest.importorskip("jwt", reason="PyJWT is not installed (pip install 'fastws[auth]')")

SECRET = "browser-test-secret-0123456789abcdef"  # 36 bytes

APP = '''
import json

import fastws


def hello(ws):
    return json.dumps({"user": ws.user, "protocol": ws.subprotocol, "impl": fastws.IMPLEMENTATION})


class Who(fastws.Listener):
    def on_connect(self, ws):
        super().on_connect(ws)
        ws.send(hello(ws))

    def on_message(self, data):
        self.ws.send(data)


async def who(ws):
    await ws.send(hello(ws))
    async for message in ws:
        await ws.send(message)
'''

# Opens a WebSocket and reports what the page saw: whether it opened, the
# subprotocol the browser accepted, the server's first message (ws.user),
# the echo of one message, and the close. With wait_close the page does not
# close itself: it waits for the server to (token expiry).
OPEN_JS = """
async ([url, protocols, waitClose]) => {
  const out = {opened: false, error: false, protocol: null, hello: null, echo: null, code: null, reason: null};
  const ws = protocols === null ? new WebSocket(url) : new WebSocket(url, protocols);
  await new Promise((done) => {
    ws.onopen = () => { out.opened = true; out.protocol = ws.protocol; };
    ws.onerror = () => { out.error = true; };
    ws.onmessage = (e) => {
      if (out.hello === null) { out.hello = JSON.parse(e.data); ws.send("from the browser"); }
      else { out.echo = e.data; if (!waitClose) ws.close(1000, "done"); }
    };
    ws.onclose = (e) => { out.code = e.code; out.reason = e.reason; done(); };
  });
  return out;
}
"""

IMPLS = {"extension": {"FASTWS_PURE_PYTHON": "0"}, "pure": {"FASTWS_PURE_PYTHON": "1"}}


def make_token(sub="alice", ttl=300, **extra) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl, **extra}, SECRET, algorithm="HS256")


def _extension_or_skip():
    try:
        from fastws import codec

        codec.load("cython")
    except ImportError as exc:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise
        pytest.skip(f"the extension is not built: {exc}")


class Server:
    """``fastws ARGS`` on a free port, with the access log on (its stderr)."""

    def __init__(self, tmp_path, impl, *args):
        if impl == "extension":
            _extension_or_skip()
        env = {**IMPLS[impl], "FASTWS_JWT_SECRET": SECRET}
        self.cmd = Command(*args, "--port", "0", "--access-log", "--log-level", "info",
                           cwd=str(tmp_path), env=env)
        assert self.cmd.port, (self.cmd.line, self.cmd.proc.stderr.read() if self.cmd.proc.poll() else "")
        self.port = self.cmd.port
        self.origin = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        self.cmd.stop()
        return self.cmd.stderr


@pytest.fixture
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _page(browser, origin):
    page = browser.new_context().new_page()
    page.set_default_timeout(20000 * UNIT)
    # A page of the server's own origin (its 426 answer to plain HTTP): the
    # cookie it sets goes with the upgrade, and Chromium's local network
    # access checks let it connect.
    page.goto(origin + "/")
    return page


def _upgrades(stderr: str) -> list:
    """The status of each upgrade in the access log: '"GET /ws HTTP/1.1" 401 -'."""
    out = []
    for line in stderr.splitlines():
        if "fastws.access" in line and '"GET /ws' in line:
            out.append(int(line.split('HTTP/1.1" ', 1)[1].split()[0]))
    return out


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    return request.param


@pytest.mark.parametrize("api", ["listener", "handler"])
def test_cookie(browser, tmp_path, impl, api):
    (tmp_path / "authapp.py").write_text(APP)
    server = Server(tmp_path, impl, "run", "authapp:" + ("Who" if api == "listener" else "who"))
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        page = _page(browser, server.origin)

        # No cookie: refused before the 101; the browser only sees a failure.
        got = page.evaluate(OPEN_JS, [url, None, False])
        assert got["opened"] is False and got["error"] is True and got["code"] == 1006, got

        # The page sets the cookie; new WebSocket(url) carries it.
        page.evaluate("t => { document.cookie = 'token=' + t + '; path=/; SameSite=Strict'; }",
                      make_token("alice", role="reader"))
        got = page.evaluate(OPEN_JS, [url, None, False])
        assert got["opened"] and got["code"] == 1000, got
        assert got["hello"]["user"]["sub"] == "alice" and got["hello"]["user"]["role"] == "reader", got
        assert got["hello"]["impl"] == ("python" if impl == "pure" else "cython"), got
        assert got["echo"] == "from the browser" and got["protocol"] == "", got

        # A cookie with a bad token (tampered signature), then an expired one: refused.
        bad = make_token("mallory")[:-4] + "AAAA"
        expired = make_token("alice", ttl=-60)
        for value in (bad, expired, "not-a-jwt"):
            page.evaluate("t => { document.cookie = 'token=' + t + '; path=/'; }", value)
            got = page.evaluate(OPEN_JS, [url, None, False])
            assert got["opened"] is False and got["code"] == 1006, (value, got)

        # A cookie set by the browser context (as a login page's Set-Cookie
        # would), HttpOnly so page scripts cannot read it: the token expires
        # while the connection is open, the server closes with 4001.
        page.context.clear_cookies()
        page.context.add_cookies([{"name": "token", "value": make_token("bob", ttl=2), "url": server.origin,
                                   "httpOnly": True, "sameSite": "Strict"}])
        assert "token=" not in page.evaluate("document.cookie")
        got = page.evaluate(OPEN_JS, [url, None, True])
        assert got["hello"]["user"]["sub"] == "bob", got
        assert (got["code"], got["reason"]) == (4001, "token expired"), got
    finally:
        stderr = server.stop()
    assert _upgrades(stderr) == [401, 101, 401, 401, 401, 101], stderr
    assert "Traceback" not in stderr, stderr
    assert "eyJ" not in stderr  # no token (base64 of '{"') reaches the log


@pytest.mark.parametrize("api", ["listener", "handler"])
def test_subprotocol(browser, tmp_path, impl, api):
    (tmp_path / "authapp.py").write_text(APP)
    server = Server(tmp_path, impl, "run", "authapp:" + ("Who" if api == "listener" else "who"),
                    "--subprotocols", "chat")
    tokens = []
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        page = _page(browser, server.origin)

        # The token next to the real subprotocol, on either side of it: the
        # server answers "chat", which the browser accepts; never the token.
        for order in ("first", "last"):
            tok = make_token("carol", subs=["news.*"])
            tokens.append(tok)
            protocols = ["bearer." + tok, "chat"] if order == "first" else ["chat", "bearer." + tok]
            got = page.evaluate(OPEN_JS, [url, protocols, False])
            assert got["opened"] and got["code"] == 1000, (order, got)
            assert got["protocol"] == "chat" and got["hello"]["protocol"] == "chat", got
            assert got["hello"]["user"]["sub"] == "carol" and got["hello"]["user"]["subs"] == ["news.*"], got
            assert got["hello"]["impl"] == ("python" if impl == "pure" else "cython"), got
            assert got["echo"] == "from the browser", got

        # An expired token, a tampered one, none at all: refused (401).
        for protocols in (["bearer." + make_token("carol", ttl=-60), "chat"],
                          ["bearer." + make_token("carol")[:-4] + "AAAA", "chat"],
                          ["chat"]):
            got = page.evaluate(OPEN_JS, [url, protocols, False])
            assert got["opened"] is False and got["code"] == 1006, (protocols, got)

        # The token alone: the server accepts it (the token is the only thing
        # offered, and it never selects it) but answers no subprotocol, and a
        # browser fails a connection whose 101 selects none of those it
        # offered (WHATWG WebSockets: "establish a WebSocket connection").
        # Hence the rule in docs/guide/jwt.md: offer a real subprotocol too.
        got = page.evaluate(OPEN_JS, [url, ["bearer." + make_token("carol")], False])
        assert got["opened"] is False and got["code"] == 1006, got
    finally:
        stderr = server.stop()
    assert _upgrades(stderr) == [101, 101, 401, 401, 401, 101], stderr
    assert "Traceback" not in stderr, stderr
    assert "eyJ" not in stderr and not any(tok in stderr for tok in tokens)


def test_push_app_with_a_token_in_a_cookie(browser, tmp_path):
    """``fastws push --jwt-secret``: the page subscribes with its cookie; a
    POST /publish/<topic> with a token whose pubs allow it reaches the page;
    a topic the token's subs do not allow is an error on the open connection."""
    server = Server(tmp_path, "extension" if _has_extension() else "pure", "push")
    try:
        page = _page(browser, server.origin)
        page.evaluate("t => { document.cookie = 'token=' + t + '; path=/'; }",
                      make_token("dave", subs=["news.*"]))
        page.evaluate("""url => {
          window.got = [];
          window.ws = new WebSocket(url);
          ws.onmessage = (e) => window.got.push(JSON.parse(e.data));
          ws.onclose = (e) => window.got.push({closed: e.code});
        }""", f"ws://127.0.0.1:{server.port}/ws?topics=news.eu,admin")
        # The subscription to news.eu holds, admin is refused with an error.
        page.wait_for_function("window.got.some(m => m.type === 'error')")

        def publish(topic, tok):
            req = urllib.request.Request(f"{server.origin}/publish/{topic}", data=b'{"headline": "hi"}',
                                         headers={"Authorization": f"Bearer {tok}",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5 * UNIT) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert publish("news.eu", make_token("editor", subs=[])) == 403  # no pubs claim
        publisher = make_token("editor", pubs=["news.*"])
        wait_until(lambda: publish("news.eu", publisher) in (200, 202, 204), timeout=10)
        page.wait_for_function("window.got.some(m => m.headline === 'hi')")
        got = page.evaluate("window.got")
    finally:
        stderr = server.stop()
    errors = [m for m in got if m.get("type") == "error"]
    assert errors and "admin" in json.dumps(errors), got
    assert {"headline": "hi"} in got, got
    assert not any("closed" in m for m in got), got
    assert "Traceback" not in stderr, stderr


def _has_extension() -> bool:
    try:
        from fastws import codec

        codec.load("cython")
        return True
    except ImportError:
        return False
