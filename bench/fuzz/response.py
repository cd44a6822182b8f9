"""Fuzz target: the client's response reader and checks.

``fastws.http.ResponseReader`` (fed whole, and split at fuzzer-chosen points,
then ``eof()``) and ``fastws.handshake.check_response``/``response_deflate``
only ever raise ``InvalidResponse`` (``InvalidStatus`` included); the limits
hold (head bytes, field lines, body); a failed reader raises the same error
again; split and whole reads agree. Input: 1 config byte (limits, eof, what
was offered, cut count), cut sizes, then the server's bytes.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cut, expect, split_config  # noqa: E402

from fastws import handshake as hs  # noqa: E402
from fastws.exceptions import InvalidResponse, InvalidStatus  # noqa: E402
from fastws.http import ResponseReader  # noqa: E402
from fastws.options import Options  # noqa: E402

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3; its accept value is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
LIMITS = ((8192, 100, 65536), (8192, 100, 65536), (100, 100, 65536), (8192, 3, 65536),
          (8192, 100, 10), (64, 2, 0), (1000, 10, 100), (0, 0, 0))
DEFLATE = Options(compression="deflate")
DEFLATE_SMALL = Options(compression="deflate", server_max_window_bits=10, client_max_window_bits=9,
                        server_no_context_takeover=True)


def read(chunks, limits, eof):
    """("response", response, leftover, head bytes) / ("error", class name) / ("incomplete",)."""
    max_head, max_headers, max_body = limits
    reader = ResponseReader(max_head=max_head, max_headers=max_headers, max_body=max_body)
    fed = 0
    response = None
    try:
        for i, chunk in enumerate(chunks):
            fed += len(chunk)
            response = reader.feed(chunk)
            if response is not None:
                break
        else:
            if not eof:
                return ("incomplete",)
            response = reader.eof()
            i = len(chunks)
    except InvalidResponse as exc:
        again = None
        try:
            reader.feed(b"x")
        except InvalidResponse as exc2:
            again = exc2
        expect(again is exc, "a failed reader did not raise the same error again", exc, again)
        return ("error", type(exc).__name__)
    head = fed - len(reader.leftover)
    expect(len(response.body) <= max_body, "body over max_body", len(response.body), max_body)
    expect(len(response.headers) <= max_headers, "more field lines than max_headers", len(response.headers))
    expect(type(response.status) is int and type(response.reason) is str, "status/reason types", response)
    if response.status == 101:
        expect(0 < head <= max_head, "a 101 head over max_head", head, max_head)
        expect(response.body == b"", "a 101 with a body", response.body)
    rest = b"".join(chunks[i + 1:])
    if rest:
        expect(reader.feed(rest) is None, "a second response from one reader")
        expect(reader.leftover.endswith(rest), "bytes after the response lost")
    return ("response", response, reader.leftover)


def summary(response):
    return (response.status, response.reason, response.headers.items(), response.body)


def check(data: bytes) -> None:
    config, sizes, body = split_config(data, 1)
    limits = LIMITS[config[0] >> 5]
    eof = bool(config[0] & 8)
    chunks = cut(body, sizes)
    whole = read([body], limits, eof)
    split = read(chunks, limits, eof)
    expect(whole[0] == split[0], "whole and split reads differ", whole, split)
    if whole[0] == "error":
        expect(whole == split, "whole and split fail differently", whole, split)
    if whole[0] != "response":
        return
    expect(summary(whole[1]) == summary(split[1]), "whole and split responses differ",
           summary(whole[1]), summary(split[1]))
    if whole[1].status == 101:
        expect(whole[2] == split[2], "whole and split leftover differ", whole[2], split[2])
    response = whole[1]
    offered = bool(config[0] & 16)
    for subprotocols in (None, ["chat", "superchat"]):
        try:
            chosen = hs.check_response(response, KEY, subprotocols, extensions_offered=offered)
        except InvalidStatus as exc:
            expect(response.status != 101 and exc.status == response.status, "InvalidStatus", exc.status)
        except InvalidResponse:
            pass
        else:
            expect(response.status == 101 and (chosen is None or chosen in subprotocols), "accepted", chosen)
    for opts in (DEFLATE, DEFLATE_SMALL):
        try:
            params = hs.response_deflate(response, opts)
        except InvalidResponse:
            pass
        else:
            expect(params is None or 9 <= params.remote_bits <= 15, "deflate params", params)


def main() -> None:
    _common.main(check, max_len=4096)


if __name__ == "__main__":
    main()
