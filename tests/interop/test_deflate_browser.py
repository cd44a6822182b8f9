"""permessage-deflate with a real browser: Debian's Chromium (headless, via
playwright) against `fastws echo --compression deflate`, both API levels.

Chromium offers ``permessage-deflate; client_max_window_bits`` and compresses
every message it sends; the page checks the negotiated extension and echoes
text and binary messages from 1 byte to 1 MiB.  Skipped like
tests/test_chat_browser.py when Chromium or playwright is missing (fails
instead under FASTWS_REQUIRE_BROWSER).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from test_chat_browser import CHROMIUM, CHROMIUM_ARGS, _browser_or_skip

from util import UNIT

PAGE_JS = """
async (url) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error("ws error")); });
  const replies = [];
  ws.onmessage = (e) => replies.push(e.data);
  const next = () => new Promise((ok) => {
    const t = setInterval(() => { if (replies.length) { clearInterval(t); ok(replies.shift()); } }, 5);
  });
  const results = [];
  for (const n of [1, 100, 5000, 70000, 1 << 20]) {
    const text = "fastws é€😀 ".repeat(Math.ceil(n / 12)).slice(0, n);
    ws.send(text);
    results.push((await next()) === text);
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 7) % 251;
    ws.send(bytes);
    const back = new Uint8Array(await next());
    results.push(back.length === n && back.every((b, i) => b === bytes[i]));
  }
  const ext = ws.extensions;
  ws.close(1000);
  return {ext, results};
}
"""


@pytest.mark.parametrize("api", ["listener", "handler"])
def test_chromium_compresses_with_fastws(api):
    sync_playwright = _browser_or_skip()
    proc = subprocess.Popen([sys.executable, "-m", "fastws", "echo", "--port", "0", "--api", api,
                             "--compression", "deflate", "--max-size", "16MiB", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "compression deflate" in line, (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(30000 * UNIT)
                # A page from the server's own origin (its 426 answer to plain
                # HTTP): Chromium blocks about:blank -> 127.0.0.1 (local
                # network access checks).
                page.goto(f"http://127.0.0.1:{port}/")
                got = page.evaluate(PAGE_JS, f"ws://127.0.0.1:{port}/")
            finally:
                browser.close()
        assert got["ext"] == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", got
        assert got["results"] == [True] * 10, got
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in proc.stderr.read()
