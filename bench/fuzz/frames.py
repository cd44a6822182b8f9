"""Fuzz target: the frame parser, Cython extension against its pure-Python twin.

The same bytes, cut at fuzzer-chosen points, go to ``load("cython").FrameParser``
and ``load("python").FrameParser`` (server or client side, with or without
max_size, sometimes with permessage-deflate, sometimes through
``get_buffer``/``buffer_updated``, sometimes with a callback that raises):
every delivered message, control frame, error (class, code, reason) and the
parser's state after each feed must be the same. The twin is instrumented and
guides the search; the extension is checked against it. ``lone_control`` is
compared too. Input: 3 config bytes, cut sizes, then the stream.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cut, expect, split_config  # noqa: E402

from fastws import deflate  # noqa: E402
from fastws.codec import load  # noqa: E402
from fastws.exceptions import FrameError, InvalidUTF8, MessageTooBig, ProtocolError, is_valid_close_code  # noqa: E402
from fastws.options import Options  # noqa: E402

CY = load("cython")
PY = load("python")
MAX_SIZES = (None, 1 << 20, 65536, 200, 10, 0, 125, 126)
CODES = {FrameError: 1002, InvalidUTF8: 1007, MessageTooBig: 1009}
# ``activity`` is unspecified once the parser failed (the builds take different
# amounts of a bad chunk: tests/fuzz_regressions/
# test_frames_activity_after_invalid_utf8.py), so it is compared only while the
# parser is healthy; FASTWS_FUZZ_STRICT=activity compares it always.
STRICT = set(os.environ.get("FASTWS_FUZZ_STRICT", "").split(","))


class Boom(Exception):
    """What a callback raises when the input asks for it."""


def make_inflate(max_size, bits, no_context):
    """A fresh permessage-deflate inflater, as the connection makes it."""
    params = deflate.DeflateParams(Options(compression="deflate"), 15, bits, False, no_context)
    # What DeflateParams derives from Options.max_size (which refuses 0).
    params.limit = 0 if max_size is None else max_size + 1
    params.step = 0 if max_size is None else max(65536, params.limit >> 4)
    return deflate.PerMessageDeflate(params).inflate


def state(parser):
    activity = parser.activity
    if parser.failed and "activity" not in STRICT:
        activity = None
    return (parser.buffered, parser.closed, parser.failed, parser.frames_received,
            activity, parser.at_rest, parser.messages_received)


def run(codec, chunks, expect_masked, max_size, inflate_args, raise_at, buffer_mode, release):
    """The full observable history of one parser over the chunks."""
    events = []

    def record(event):
        events.append(event)
        if len(events) - 1 == raise_at:
            raise Boom()

    def on_message(data):
        expect(type(data) in (str, bytes), "message type", type(data))
        if max_size is not None:
            size = len(data.encode("utf-8")) if type(data) is str else len(data)
            expect(size <= max_size, "message over max_size", size, max_size)
        record(("message", type(data).__name__, data))

    def on_control(opcode, payload):
        expect(opcode in (8, 9, 10) and type(payload) is bytes and len(payload) <= 125, "control", opcode, payload)
        if opcode == 8 and payload:
            expect(len(payload) >= 2 and is_valid_close_code(int.from_bytes(payload[:2], "big")), "close code", payload)
            payload[2:].decode("utf-8")  # a valid reason (UnicodeDecodeError otherwise)
        record(("control", opcode, payload))

    inflate = make_inflate(max_size, *inflate_args) if inflate_args else None
    parser = codec.FrameParser(on_message, on_control, expect_masked=expect_masked, max_size=max_size, inflate=inflate)

    def attempt(step, index):
        try:
            step()
        except Boom:
            events.append(("boom",) if buffer_mode else ("boom", index))
        except ProtocolError as exc:
            code = CODES.get(type(exc))
            expect(exc.code in (1002, 1007, 1009) and (code is None or code == exc.code), "error code", exc, exc.code)
            events.append(("error", type(exc).__name__, exc.code, exc.reason) + (() if buffer_mode else (index,)))

    # A final empty feed delivers what a raising callback left buffered.
    for index, chunk in enumerate([*chunks, b"", b""]):
        if buffer_mode:
            pos = 0
            while True:
                view = parser.get_buffer()
                n = min(len(view), len(chunk) - pos)
                view[:n] = chunk[pos:pos + n]
                attempt(lambda: parser.buffer_updated(n), index)
                pos += n
                if pos >= len(chunk):
                    break
        else:
            attempt(lambda: parser.feed(chunk), index)
            events.append(("state", index, *state(parser)))
        if release:
            parser.release()
    events.append(("final", *state(parser)))
    return events


def check(data: bytes) -> None:
    config, sizes, stream = split_config(data, 3)
    flags, limits, extra = config
    expect_masked = bool(flags & 1)
    buffer_mode = bool(flags & 4)
    release = bool(flags & 8)
    raise_at = limits >> 3 if flags & 0x30 else -1
    max_size = MAX_SIZES[limits & 7]
    inflate_args = (9 + (extra >> 3) % 7, bool(flags & 0x40)) if flags & 2 else None
    chunks = cut(stream, sizes)
    args = (chunks, expect_masked, max_size, inflate_args, raise_at, buffer_mode, release)
    ours, theirs = run(PY, *args), run(CY, *args)
    if ours != theirs:
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                break
        else:
            i = min(len(ours), len(theirs))
        expect(False, "cython and twin differ at event", i, "python:", ours[i:i + 3], "cython:", theirs[i:i + 3])

    # lone_control: the same answer from both, and the parser's own reading.
    for piece in (stream, chunks[0]):
        lone = PY.lone_control(piece, expect_masked)
        expect(CY.lone_control(piece, expect_masked) == lone, "lone_control differs", piece)
        if lone is not None:
            got = []
            parser = PY.FrameParser(got.append, lambda op, p: got.append((op, p)), expect_masked=expect_masked)
            parser.feed(piece)
            expect(got == [lone] and parser.at_rest, "lone_control is not what the parser reads", lone, got)


def main() -> None:
    _common.main(check, max_len=4096)


if __name__ == "__main__":
    main()
