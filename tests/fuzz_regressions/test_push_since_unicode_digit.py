"""Inputs the fuzzers found (bench/fuzz), kept as regression tests.

``fastws push``: ``?since=`` is checked with ``str.isdigit()``, which is true
for characters such as SUPERSCRIPT THREE (U+00B3) that ``int()`` refuses, so
``GET /ws?since=%C2%B3`` (plain ASCII on the wire: parse_qs decodes it) makes
``process_request`` raise ValueError instead of answering 400. Found by
bench/fuzz/json_apps.py; ``query_since`` now takes ASCII digits only.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import pytest

from fastws.apps import push
from fastws.http import RequestReader


@pytest.mark.parametrize("query", [
    "since=%C2%B3",  # U+00B3, the fuzzer's "\xb3" once percent-encoded
    "since=1%E2%82%82&topics=a",  # U+2082 SUBSCRIPT TWO
    "since=x", "since=-1", "since=99999999999999999999",
])
def test_malformed_since_is_400(query):
    request = RequestReader().feed(f"GET /ws?{query} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    response = push.PushService().process_request(request)
    assert response is not None and response.status == 400
