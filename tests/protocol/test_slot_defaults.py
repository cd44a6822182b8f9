"""What a connection holds before ``__init__``: the ``_slot_defaults`` that
ConnectionCore stores when the object is made (C in fastws_ext.core, the twin
in fastws._py.core), and ``_open_at``, the clocks of an opened connection.
Both implementations give the same answers."""
from __future__ import annotations

import asyncio
import math

import pytest

import fastws
from fastws.apps import echo_handler
from fastws.constants import CONNECTING, OPEN
from fastws.options import Options
from fastws.server import ServerConnection, ServerWebSocket


def test_defaults_are_set_before_init_and_merged_along_the_mro(impl):
    sentinel = object()

    class Base(impl.ConnectionCore):
        __slots__ = ("a", "b", "c")
        _slot_defaults = {"a": None, "b": 0}

    class Sub(Base):
        __slots__ = ("d",)
        _slot_defaults = {"b": "", "d": sentinel}  # overrides b, adds d

    base = Base.__new__(Base)
    assert (base.a, base.b) == (None, 0)
    with pytest.raises(AttributeError):
        base.c  # not declared: unset, as in any __slots__ class
    sub = Sub()
    assert (sub.a, sub.b, sub.d) == (None, "", sentinel)
    # Each instance gets the values (shared objects), none is reused state.
    sub.a = 1
    assert Sub().a is None
    # The core's own fields keep their defaults too.
    assert sub._keepalive_at == math.inf and sub._ka_counters is None and sub._pong_hook


def test_a_default_for_a_name_that_is_not_a_slot_is_refused(impl):
    class Bad(impl.ConnectionCore):
        __slots__ = ("a",)
        _slot_defaults = {"a": None, "nope": None}

    with pytest.raises(TypeError, match="nope"):
        Bad()


def test_open_at_sets_the_clocks_of_both_implementations(both_impls):
    def opened(impl, **options):
        class Conn(impl.ConnectionCore):
            __slots__ = ("_opts", "_state")
            _slot_defaults = {"_state": CONNECTING}

        conn = Conn()
        conn._opts = Options(**options)
        first = conn._open_at(100.0)
        return first, conn._state, conn._keepalive_at, conn._idle_at

    for options in ({}, {"ping_interval": None}, {"ping_interval": 10, "idle_timeout": 3},
                    {"ping_interval": 10, "idle_timeout": 30}, {"ping_interval": None, "idle_timeout": 7.5}):
        results = [opened(impl, **options) for impl in both_impls]
        assert results[0] == results[1], options
        first, state, keepalive_at, idle_at = results[0]
        assert state == OPEN and first == min(keepalive_at, idle_at)
    assert opened(both_impls[0], ping_interval=None) == (math.inf, OPEN, math.inf, math.inf)
    assert opened(both_impls[0], ping_interval=10, idle_timeout=3) == (103.0, OPEN, 105.0, 103.0)


@pytest.mark.parametrize("options", [{}, {"authenticate": lambda request: "u", "rate_limit": (10, 20),
                                         "proxy_protocol": True}])
@pytest.mark.parametrize("app", [fastws.Listener, echo_handler])
def test_a_new_server_connection_holds_what_its_init_used_to_set(app, options):
    server = fastws.Server(app, **options)

    async def made():  # (the handler API's connection takes the running loop)
        return server._connection_class()

    conn = asyncio.run(made())
    assert isinstance(conn, (ServerConnection, ServerWebSocket))
    assert conn._opts is server.options and conn._server is server and conn._ka_counters is server.counters
    assert (conn._state, conn._parser, conn._app, conn._driver, conn._transport) == (CONNECTING, None, None,
                                                                                     None, None)
    assert (conn.close_code, conn.close_reason, conn.sent_close_code, conn.path, conn.subprotocol) == (
        None, "", None, None, None)
    assert (conn._paused_writing, conn._reading_paused, conn._messages_base, conn._messages_seen) == (
        False, False, 0, 0)
    assert (conn._headers, conn._deflate, conn._held_pong, conn.user) == (None, None, None, None)
    assert conn._reader is False and conn._started is None  # (_FIRST_READ: no RequestReader yet; no access log)
    assert not conn._is_client and not conn._general_send
    for name in ("_proxy", "_ip", "_limiter"):
        if hasattr(type(conn), name):
            assert getattr(conn, name) is None
    # The rare fields above are read through the _rare side object, which a
    # new connection does not have (docs/design/memory.md).
    assert conn._rare is None
    # No bound transport.write kept per connection: _write is a method,
    # which writes to the transport (none yet).
    assert not any("_write" in getattr(klass, "__slots__", ()) for klass in type(conn).__mro__)
    with pytest.raises(AttributeError):
        conn._write(b"x")
