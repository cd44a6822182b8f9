"""Shared fixtures.

``impl`` runs a test once per implementation of the codec: the Cython
extension and its pure-Python twin (fastws.codec.load). A test that needs the
extension when it is not built is skipped, unless FASTWS_REQUIRE_EXTENSION=1
(as in CI), in which case it fails.
"""
from __future__ import annotations

import os

import pytest

from fastws import codec as _codec_mod

IMPLS = ("cython", "python")


def _load(name):
    try:
        return _codec_mod.load(name)
    except ImportError as exc:
        if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
            raise
        pytest.skip(f"{name} implementation not available: {exc}")


@pytest.fixture(params=IMPLS)
def impl(request):
    """The codec of one implementation (attributes: fastws.codec.NAMES)."""
    return _load(request.param)


@pytest.fixture
def both_impls():
    """(cython, python) codecs, for differential tests."""
    return _load("cython"), _load("python")


# ---------------------------------------------------------------- servers
import asyncio  # noqa: E402
import threading  # noqa: E402

import uvloop  # noqa: E402


class ServerThread:
    """A fastws server on its own uvloop in a background thread.

    Tests then talk to it from the main thread with blocking raw sockets, sync
    clients (websocket-client) or async clients on another loop.
    """

    def __init__(self, app, **options):
        import fastws

        self.loop = uvloop.new_event_loop()
        self.server = None
        self.error = None
        ready = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)

            async def start():
                self.server = await fastws.serve(app, "127.0.0.1", 0, **options)

            try:
                self.loop.run_until_complete(start())
            except BaseException as exc:  # reported to the test
                self.error = exc
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        if self.error is not None:
            raise self.error
        self.port = self.server.port

    def call(self, fn, *args):
        """Run fn(*args) in the server's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop)
        return fut.result(10)

    def stop(self, timeout=5.0):
        if not self.loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(timeout), self.loop)
        try:
            fut.result(timeout + 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


async def _call(fn, *args):
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    return result


@pytest.fixture
def serve_thread():
    """serve_thread(app, **options) -> ServerThread; stopped after the test."""
    started = []

    def start(app, **options):
        st = ServerThread(app, **options)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
