"""Fuzz target: permessage-deflate inflate with a size limit.

``fastws.deflate.PerMessageDeflate.inflate`` on arbitrary compressed
messages (one connection: context takeover or not, window 9-15 bits), with
small ``max_size`` values: the output is never over max_size, the only
errors are ProtocolError 1007 (bad data) and MessageTooBig 1009, and each
answer agrees with plain zlib: the same bytes, 1009 only when the first
max_size + 1 bytes inflate cleanly, 1007 only when zlib refuses the data.
Input: 2 config bytes, cut sizes (message boundaries), then the messages.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import os
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cut, expect, split_config  # noqa: E402

from fastws import deflate  # noqa: E402
from fastws.exceptions import MessageTooBig, ProtocolError  # noqa: E402
from fastws.options import Options  # noqa: E402

MAX_SIZES = (10, 100, 1000, 1, 4096, 65536, 200000, None)
TAIL = b"\x00\x00\xff\xff"
OPTIONS = Options(compression="deflate")


def check(data: bytes) -> None:
    config, sizes, rest = split_config(data, 2)
    max_size = MAX_SIZES[(config[0] >> 3) & 7]
    bits = 9 + (config[0] & 7) % 7
    no_context = bool(config[1] & 8)
    params = deflate.DeflateParams(OPTIONS, 15, bits, False, no_context)
    # What DeflateParams derives from Options.max_size.
    limit = params.limit = 0 if max_size is None else max_size + 1
    params.step = 0 if max_size is None else max(65536, params.limit >> 4)
    pmd = deflate.PerMessageDeflate(params)
    ref = zlib.decompressobj(-max(bits, 9))
    for message in cut(rest, sizes):
        before = ref.copy()
        started = time.monotonic()
        try:
            out = pmd.inflate(message)
        except MessageTooBig as exc:
            expect(exc.code == 1009 and max_size is not None, "MessageTooBig", exc.code, max_size)
            try:
                first = before.decompress(message + TAIL, limit)
            except zlib.error:
                expect(False, "1009 for data zlib refuses before max_size + 1 bytes")
            expect(len(first) == limit, "1009 but zlib inflates only", len(first), "bytes; limit", limit)
            return
        except ProtocolError as exc:
            expect(type(exc) is ProtocolError and exc.code == 1007, "inflate error", type(exc), exc.code)
            try:
                before.decompress(message + TAIL)
            except zlib.error:
                return
            expect(False, "1007 for data zlib inflates")
        expect(time.monotonic() - started < 5, "inflate took", time.monotonic() - started)
        expect(type(out) is bytes, "inflate returned", type(out))
        expect(max_size is None or len(out) <= max_size, "output over max_size", len(out), max_size)
        try:
            expected = ref.decompress(message + TAIL)
        except zlib.error:
            expect(False, "inflate returned data that zlib refuses", out)
        expect(out == expected, "inflate differs from zlib", out[:64], expected[:64])
        if no_context or ref.eof:  # what the inflater drops between messages
            ref = zlib.decompressobj(-max(bits, 9))


def main() -> None:
    _common.main(check, max_len=8192)


if __name__ == "__main__":
    main()
