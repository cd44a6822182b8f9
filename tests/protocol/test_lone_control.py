"""frames.lone_control: an idle connection's lone PING/PONG, without a parser.

It may only ever accept what a real parser accepts, as exactly one control
frame with the same opcode and payload; everything else must be left (None)
to the parser. Both implementations, and a hypothesis test against the
parser over random short byte strings and random valid control frames.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastws.exceptions import ProtocolError

PING, PONG = 0x9, 0xA


def _parse(impl, data, expect_masked):
    """What a fresh parser makes of data: ("ok", [(op, payload)...], messages) or ("error", code)."""
    controls, messages = [], []
    parser = impl.FrameParser(messages.append, lambda op, p: controls.append((op, bytes(p))),
                              expect_masked=expect_masked)
    try:
        parser.feed(data)
    except ProtocolError as exc:
        return ("error", exc.code)
    return ("ok", controls, messages, parser.buffered)


def _check(impl, data, expect_masked):
    got = impl.lone_control(data, expect_masked)
    if got is not None:
        opcode, payload = got
        assert opcode in (PING, PONG)
        assert _parse(impl, data, expect_masked) == ("ok", [(opcode, payload)], [], 0)
    return got


@pytest.mark.parametrize("opcode", [PING, PONG])
@pytest.mark.parametrize("length", [0, 1, 4, 125])
def test_valid_lone_frames(impl, opcode, length):
    payload = os.urandom(length)
    assert _check(impl, impl.build_frame(opcode, payload, mask=True), True) == (opcode, payload)
    assert _check(impl, impl.build_frame(opcode, payload), False) == (opcode, payload)


@pytest.mark.parametrize("data,masked", [
    (b"", True), (b"\x8a", True),
    (b"\x8a\x00", True),                    # unmasked from a client: the parser's 1002
    (b"\x8a\x80\x00\x00\x00", True),        # key cut short
    (b"\x0a\x80abcd", True),                # FIN clear: fragmented control (1002)
    (b"\xca\x80abcd", True),                # RSV1
    (b"\x88\x80abcd", True),                # close: the parser's business
    (b"\x81\x80abcd", True),                # text
    (b"\x8a\xfe\x00\x7eabcd", True),        # 16-bit length form
    (b"\x8a\x81abcdX" + b"\x8a\x80abcd", True),  # two frames
    (b"\x8a\x82abcdX", True),               # payload cut short
])
def test_everything_else_goes_to_the_parser(impl, data, masked):
    assert _check(impl, data, masked) is None


def test_not_bytes(impl):
    frame = impl.build_frame(PONG, b"", mask=True)
    assert impl.lone_control(bytearray(frame), True) is None
    assert impl.lone_control(memoryview(frame), True) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=140), masked=st.booleans())
def test_random_bytes_agree_with_the_parser(impl, data, masked):
    _check(impl, data, masked)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b0=st.integers(0, 255), length=st.integers(0, 127), masked=st.booleans(),
       mask_bit=st.booleans(), extra=st.binary(max_size=3), data=st.data())
def test_header_variants_agree_with_the_parser(both_impls, b0, length, masked, mask_bit, extra, data):
    payload = data.draw(st.binary(min_size=min(length, 125), max_size=min(length, 125)))
    frame = bytes([b0, (0x80 if mask_bit else 0) | length]) + (b"k3y!" if mask_bit else b"") + payload + extra
    c, p = both_impls
    assert _check(c, frame, masked) == _check(p, frame, masked)


# ---------------------------------------------------------------------------
# The connection core (fastws_ext/core.pyx, fastws/_py/core.py) takes a lone
# PONG in data_received without a parser: exactly the frames lone_control
# classifies as PONG, and nothing else (everything else goes to _feed).

def _core(impl, is_client, pong_hook=True, state=1, parser=None):
    class Conn(impl.ConnectionCore):
        __slots__ = ("_state", "_parser", "log")

        def _feed(self, data):
            self.log.append(("feed", data))

        def _on_pong(self, payload):
            self.log.append(("pong", payload))

        def _handshake_bytes(self, data):
            self.log.append(("handshake", data))

        def _input_failed(self, exc):
            self.log.append(("failed", type(exc).__name__))

    c = Conn()
    c._state, c._parser, c.log = state, parser, []
    c._is_client, c._pong_hook = is_client, pong_hook
    return c


def _core_check(impl, data, is_client):
    c = _core(impl, is_client)
    c.data_received(data)
    control = impl.lone_control(data, not is_client)
    if control is not None and control[0] == PONG:
        assert c.log == [("pong", control[1])] and c._last_frames == -1
    else:
        assert c.log == [("feed", data)] and c._last_frames == 0
    quiet = _core(impl, is_client, pong_hook=False)
    quiet.data_received(data)
    assert quiet.log == ([] if c.log[0][0] == "pong" else c.log)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b0=st.sampled_from([0x8A, 0x89, 0x0A, 0xCA, 0x88, 0x82]), length=st.integers(0, 127),
       mask_bit=st.booleans(), extra=st.binary(max_size=2), is_client=st.booleans(), data=st.data())
def test_core_takes_exactly_the_lone_pongs(impl, b0, length, mask_bit, extra, is_client, data):
    payload = data.draw(st.binary(min_size=min(length, 125), max_size=min(length, 125)))
    frame = bytes([b0, (0x80 if mask_bit else 0) | length]) + (b"k3y!" if mask_bit else b"") + payload + extra
    _core_check(impl, frame, is_client)


def test_core_data_received_routes_by_state(impl):
    from fastws import constants

    assert (constants.CONNECTING, constants.OPEN, constants.CLOSING, constants.CLOSED) == (0, 1, 2, 3)
    assert impl.PING_SERVER == impl.build_frame(PING, b"")
    pong = impl.build_frame(PONG, b"", mask=True)
    for state, expect in ((0, [("handshake", pong)]), (2, [("feed", pong)]), (3, [])):
        c = _core(impl, False, state=state)
        c.data_received(pong)
        assert c.log == expect, state
    fed = []

    class Parser:
        def feed(self, data):
            fed.append(data)
            raise ProtocolError(1002, "bad")

    c = _core(impl, False, parser=Parser())
    c.data_received(pong)
    assert fed == [pong] and c.log == [("failed", "ProtocolError")]
    c = _core(impl, False)
    c.data_received(bytearray(pong))  # not bytes: the parser's business
    assert c.log == [("feed", bytearray(pong))]
    assert c._keepalive_at == c._ping_sent_at == c._write_deadline == c._idle_at == float("inf")

    class Raising(type(c)):
        __slots__ = ()

        def _on_pong(self, payload):
            raise ValueError("from on_pong")

    r = Raising()
    r._state, r._parser, r.log, r._is_client = 1, None, [], False
    r.data_received(pong)  # an application error in on_pong goes to _input_failed
    assert r.log == [("failed", "ValueError")] and r._last_frames == -1


class _Opts:
    __slots__ = ("ping_interval", "ping_timeout", "timer_tick", "idle_timeout")

    def __init__(self, interval, timeout, tick):
        self.ping_interval, self.ping_timeout, self.timer_tick, self.idle_timeout = interval, timeout, tick, 5.0


class _FakeParser:
    def __init__(self, activity):
        self.activity = activity

    def feed(self, data):
        self.activity += 1


def _timer_conn(impl, opts):
    class Conn(impl.ConnectionCore):
        __slots__ = ("_state", "_parser", "_opts", "_write", "log")  # (_paused_writing: ConnectionCore's)

        def _timer_expired(self):
            self.log.append("expired")

        def _write_timed_out(self):
            self.log.append("write timeout")

        def _idle_check(self, now):
            self.log.append(("idle", now))
            return now + 5.0

        def _keepalive_timed_out(self):
            self.log.append("ka timeout")
            self._state = 2

        def _idle_parser(self):
            self.log.append("idle parser")
            self._parser = None
            self._last_frames = 0

        def _feed(self, data):
            self.log.append("feed")

        def _check_write_buffer(self):
            self.log.append("check write buffer")
            return False

    class Counters:
        __slots__ = ("pings_sent",)

    c = Conn()
    c.log = []
    c._pong_hook = False
    c._state, c._parser, c._opts, c._paused_writing = 1, None, opts, False
    c._write = lambda data: c.log.append(("write", data))
    c._ka_counters = Counters()
    c._ka_counters.pings_sent = 0
    c._keepalive_at = 0.5
    return c


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["timer", "pong", "frames", "pause", "drain", "idle"]),
                                st.floats(0.0, 3.0)), max_size=30),
       interval=st.sampled_from([1.0, 2.0, 3]), timeout=st.sampled_from([0.5, 2.0, 4.0]))
def test_core_timer_twins_agree(both_impls, steps, interval, timeout):
    """The keepalive timer of the extension and of the twin: same decisions,
    same writes, same next deadlines, on random sequences of events."""
    logs = []
    for impl in both_impls:
        c = _timer_conn(impl, _Opts(interval, timeout, 0.25))
        now, frames, out = 0.0, 0, []
        for kind, dt in steps:
            now += dt
            if kind == "timer":
                out.append(("t", c.on_timer(now)))
            elif kind == "pong":
                c.data_received(b"\x8a\x80abcd")
            elif kind == "frames":
                frames += 1 + int(dt)
                c._parser = _FakeParser(frames)
            elif kind == "pause":
                c._paused_writing = True
                c._write_deadline = now + 1.0
            elif kind == "drain":
                c._paused_writing = False
            else:
                c._idle_at = now + dt
        logs.append((out, c.log, c._ka_counters.pings_sent, c._last_frames, c._ping_sent_at, c._keepalive_at))
    assert logs[0] == logs[1]
