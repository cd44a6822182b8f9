"""Fuzz target: the server's upgrade request path, fast against general.

The fast path (``fastws.handshake.read_upgrade``, and both ``UpgradeReader``
implementations, fresh and kept from head to head as a server keeps it) may
say "not mine" (None), never raise; when it takes a request, the general way
(``RequestReader`` + ``check_request``) must accept the same bytes with the
same method, path, headers (``quick_request``, and ``pack()``), leftover and
key, and the 101s must be the same.
The general way only ever raises ``InvalidRequest`` (whole or split at
fuzzer-chosen points, with and without an origin policy, subprotocols,
permessage-deflate), and what it refuses has a valid error response.
Input: 1 config byte (limits, cut count), cut sizes, then the request bytes.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cut, expect, split_config  # noqa: E402

from fastws import handshake as hs  # noqa: E402
from fastws.codec import load, unpack_lines  # noqa: E402
from fastws.exceptions import InvalidRequest  # noqa: E402
from fastws.http import RequestReader  # noqa: E402
from fastws.options import Options  # noqa: E402

READERS = [load("cython").UpgradeReader, load("python").UpgradeReader]
LIMITS = ((8192, 100), (8192, 100), (120, 100), (8192, 5), (8192, 7), (64, 2), (300, 100), (1, 0))
SAMPLE = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
DEFLATE = Options(compression="deflate")
_DATE = re.compile(rb"\r\nDate: [^\r]*")


def general(chunks, max_head, max_headers):
    """("request", request, leftover) / ("refused", status) / ("incomplete",)."""
    reader = RequestReader(max_head=max_head, max_headers=max_headers)
    try:
        for i, chunk in enumerate(chunks):
            request = reader.feed(chunk)
            if request is not None:
                break
        else:
            return ("incomplete",)
    except InvalidRequest as exc:
        expect(exc.status in (400, 413, 431), "reader status", exc.status)
        hs.error_response(exc)
        return ("refused", exc.status)
    rest = b"".join(chunks[i + 1:])
    if rest:
        expect(reader.feed(rest) is None, "a second request from one reader")  # kept in leftover
    return ("request", request, reader.leftover)


def summary(request):
    return (request.method, request.path, request.version, request.body, request.headers.items(),
            request.headers.pack())


def check(data: bytes) -> None:
    config, sizes, body = split_config(data, 1)
    max_head, max_headers = LIMITS[config[0] >> 5]
    chunks = cut(body, sizes)

    # The fast path: None or a result, never an exception; all readers agree.
    quick = []
    for cls in READERS:
        fresh = cls().read(body, max_head, max_headers)
        kept = cls()
        kept.read(SAMPLE)  # a parser kept from a head it took
        again = kept.read(body, max_head, max_headers)
        after = kept.read(SAMPLE)  # and it still reads the next connection's head
        expect(after is not None, "a kept reader refused the sample after", body)
        for got in (fresh, again):
            expect(got is None or type(got) is tuple and len(got) == 4, "not (path, packed, key, leftover)", got)
            quick.append(got)
    expect(len(set(map(repr, quick))) == 1, "fast paths differ", quick)
    expect((hs.read_upgrade(body, max_head, max_headers) is None) == (quick[0] is None), "read_upgrade differs")

    # The general way, whole and split: only InvalidRequest, the same outcome.
    whole = general([body], max_head, max_headers)
    split = general(chunks, max_head, max_headers)
    expect(whole[0] == split[0], "whole and split reads differ", whole, split)
    if whole[0] == "refused":
        expect(whole == split, "whole and split refuse differently", whole, split)
    elif whole[0] == "request":
        a, b = whole[1], split[1]
        expect(summary(a)[:5] == summary(b)[:5], "whole and split requests differ", summary(a), summary(b))
        if hs.is_upgrade_request(a):
            expect(whole[2] == split[2], "leftover differs when split", whole[2], split[2])

    outcome = None
    if whole[0] == "request":
        request = whole[1]
        hs.is_upgrade_request(request)
        for kwargs in ({}, {"origins": ["http://a", None], "subprotocols": ["chat", "b"]},
                       {"origins": lambda origin: origin is None}):
            try:
                got = hs.check_request(request, **kwargs)
            except InvalidRequest as exc:
                expect(exc.status in (400, 403, 405, 426, 505), "check_request status", exc.status)
                hs.error_response(exc)
                got = ("refused", exc.status)
            else:
                hs.accept_response(got[1])
                try:
                    hs.negotiate_deflate(request, DEFLATE)
                except InvalidRequest as exc:
                    expect(exc.status == 400, "negotiate_deflate status", exc.status)
            if not kwargs:
                outcome = got

    taken = quick[0]
    if taken is not None:
        path, packed, key, leftover = taken
        expect(whole[0] == "request", "the fast path took what the general way does not", whole)
        summary_ = summary(hs.quick_request(path, packed))
        expect(summary(whole[1]) == summary_, "fast and general requests differ", summary(whole[1]), summary_)
        expect(unpack_lines(whole[1].headers.pack()) == packed, "packed differs from the general Headers.pack()",
               packed)
        expect(leftover == whole[2], "fast and general leftover differ", leftover, whole[2])
        expect(hs.is_upgrade_request(whole[1]), "taken but not an upgrade request")
        expect(outcome[0] is None and outcome[1] == [("Sec-WebSocket-Accept", hs.accept_key(key.decode("ascii")))],
               "the general way refused or answered differently what the fast path took", outcome)
        fast_101, general_101 = hs.accept_101(key), hs.accept_response(outcome[1])
        expect(_DATE.sub(b"", fast_101) == _DATE.sub(b"", general_101), "101s differ", fast_101, general_101)


def main() -> None:
    _common.main(check, max_len=4096)


if __name__ == "__main__":
    main()
