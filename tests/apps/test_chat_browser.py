"""`fastws chat` in a real browser: Debian's Chromium, headless, driven by playwright.

Two users in two browser contexts: a message typed by one appears at the
other, the user list follows joins and leaves, and the page runs under its
Content-Security-Policy without a single console error.

Skipped when /usr/bin/chromium or playwright is missing, unless
FASTWS_REQUIRE_BROWSER is set (tests/run.sh sets it in CI), in which case the
test fails instead. FASTWS_CHAT_SCREENSHOT=path saves the page of the second
user with both in the room.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from util import UNIT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu", "--disable-quic"]


def _browser_or_skip():
    missing = []
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("playwright (pip install playwright; its own browsers are not needed)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("FASTWS_REQUIRE_BROWSER"):
            pytest.fail(reason + " (FASTWS_REQUIRE_BROWSER is set)")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture
def chat_url():
    proc = subprocess.Popen([sys.executable, "-m", "fastws", "chat", "--port", "0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "chat listening on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr


def _log_in(page, url, name):
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#join")).to_be_enabled()  # the WebSocket is open
    page.fill("#name", name)
    page.press("#name", "Enter")


def test_two_users_chat_in_the_browser(chat_url):
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    expect.set_options(timeout=5000 * UNIT)
    problems = []  # console errors (a CSP violation would show here) and page errors

    def watch(page, who):
        page.on("console", lambda m: m.type == "error" and problems.append(f"{who} console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"{who} page error: {e}"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            alice_ctx, bob_ctx = browser.new_context(), browser.new_context()
            alice, bob = alice_ctx.new_page(), bob_ctx.new_page()
            watch(alice, "alice")
            watch(bob, "bob")

            _log_in(alice, chat_url, "alice")
            expect(alice.locator("#login")).to_be_hidden()
            expect(alice.locator("#users li")).to_have_text(["alice"])

            # A taken name (names compare case-insensitively) is refused, the
            # login form stays, and a second try with another name works.
            _log_in(bob, chat_url, "Alice")
            expect(bob.locator("#login-error")).to_contain_text("taken")
            expect(bob.locator("#login")).to_be_visible()
            bob.fill("#name", "bob")
            bob.press("#name", "Enter")
            expect(bob.locator("#login")).to_be_hidden()

            # Join: both lists show both users, alice sees the join line.
            expect(bob.locator("#users li")).to_have_text(["alice", "bob"])
            expect(alice.locator("#users li")).to_have_text(["alice", "bob"])
            expect(alice.locator("#count")).to_have_text("2")
            expect(alice.locator("#messages li.system").last).to_have_text("bob joined.")

            # A message typed by alice appears at bob's, as text (not markup).
            alice.fill("#text", "hello <b>bob</b> & all")
            alice.press("#text", "Enter")
            line = bob.locator("#messages li").last
            expect(line.locator(".who")).to_have_text("alice")
            expect(line.locator(".text")).to_have_text("hello <b>bob</b> & all")
            assert bob.locator("#messages b").count() == 0
            expect(alice.locator("#messages li.me .text").last).to_have_text("hello <b>bob</b> & all")

            # And back.
            bob.fill("#text", "hi alice")
            bob.press("#text", "Enter")
            expect(alice.locator("#messages li .text").last).to_have_text("hi alice")

            shot = os.environ.get("FASTWS_CHAT_SCREENSHOT")
            if shot:
                bob.set_viewport_size({"width": 900, "height": 560})
                bob.screenshot(path=shot)

            # Leave: closing alice's page tells bob, whose list shrinks.
            alice_ctx.close()
            expect(bob.locator("#messages li.system").last).to_have_text("alice left.")
            expect(bob.locator("#users li")).to_have_text(["bob"])
            expect(bob.locator("#count")).to_have_text("1")
            bob_ctx.close()
        finally:
            browser.close()
    assert not problems, problems


def test_skip_reason_names_what_is_missing(monkeypatch):
    """Without the browser the test says why; with FASTWS_REQUIRE_BROWSER it fails."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("FASTWS_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs /nonexistent/chromium"):
        _browser_or_skip()
    monkeypatch.setenv("FASTWS_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="FASTWS_REQUIRE_BROWSER"):
        _browser_or_skip()


def _box(page, selector):
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not displayed"
    return box


def _inside(inner, outer, what, slack=0.5):
    assert (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack), (what, inner, outer)


def _in_viewport(page, selector):
    size = page.viewport_size
    _inside(_box(page, selector), {"x": 0, "y": 0, "width": size["width"], "height": size["height"]},
            f"{selector} in the {size['width']}x{size['height']} viewport")


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_layout_on_desktop_and_phone(chat_url, tmp_path, width, height):
    """The login box is a column (heading on one line, input, Join, error
    line) and the room view keeps the input and Send on screen, at 1280 px
    and at 390 px. Screenshots go to FASTWS_TEST_ARTIFACTS (or tmp_path)."""
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    expect.set_options(timeout=5000 * UNIT)
    out = os.environ.get("FASTWS_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            other = browser.new_context().new_page()
            _log_in(other, chat_url, "Alice")
            expect(other.locator("#login")).to_be_hidden()

            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            page.goto(chat_url)
            expect(page.locator("#join")).to_be_enabled()
            page.fill("#name", "Аlice")  # Cyrillic А: taken
            page.click("#join")
            expect(page.locator("#login-error")).to_contain_text("taken")
            box = _box(page, "#login-box")
            for sel in ("#login-box h2", "#name", "#join", "#login-error"):
                _in_viewport(page, sel)
                _inside(_box(page, sel), box, f"{sel} in #login-box")
            heading = _box(page, "#login-box h2")
            assert heading["height"] < 40, heading  # one line, not a word per line
            # A column: the input above Join above the error line.
            assert _box(page, "#name")["y"] + _box(page, "#name")["height"] <= _box(page, "#join")["y"] + 0.5
            assert _box(page, "#join")["y"] + _box(page, "#join")["height"] <= _box(page, "#login-error")["y"] + 0.5
            shots.append(os.path.join(out, f"chat-login-error-{width}.png"))
            page.screenshot(path=shots[-1])

            page.fill("#name", "bob")
            page.click("#join")
            expect(page.locator("#login")).to_be_hidden()
            expect(page.locator("#users li")).to_have_text(["Alice", "bob"])
            page.fill("#text", "hello from a " + ("phone" if width < 600 else "desktop"))
            page.click("#send")
            expect(page.locator("#messages li .text").last).to_have_text(
                "hello from a " + ("phone" if width < 600 else "desktop"))
            form = _box(page, "#send-form")
            for sel in ("#text", "#send"):
                expect(page.locator(sel)).to_be_visible()
                _in_viewport(page, sel)
                _inside(_box(page, sel), form, f"{sel} in #send-form")
            _in_viewport(page, "#send-form")
            assert _box(page, "#text")["width"] >= 150
            shots.append(os.path.join(out, f"chat-room-{width}.png"))
            page.screenshot(path=shots[-1])
        finally:
            browser.close()
    for shot in shots:
        print("screenshot:", shot)
