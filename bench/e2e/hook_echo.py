"""``fastws echo`` with an ``authenticate`` hook, for bench/e2e/handshake_instructions.py.

    python bench/e2e/hook_echo.py sync|async BEARER [fastws echo arguments]

The command's own code path (``fastws.cli.main(["echo", ...])``, the same
defaults: keepalive, /metrics and /healthz, process_request) with one option
added, ``authenticate=``: a hook that compares the ``Authorization`` header
with ``Bearer BEARER`` and returns a small dict (``ws.user``), refusing
anything else with 401. ``sync`` is a plain function (run inline), ``async``
an ``async def`` (one task per handshake). See docs/guide/access-control.md.
"""
from __future__ import annotations

import sys

import fastws
import fastws.cli
import fastws.runner


def main() -> int:
    kind, bearer, *argv = sys.argv[1:]
    expected = f"Bearer {bearer}"
    refusal = fastws.InvalidRequest(401, "Unauthorized", [("WWW-Authenticate", 'Bearer realm="bench"')],
                                    "a valid token is required")

    def check(request):
        if request.headers.get("Authorization") != expected:
            raise refusal
        return {"sub": "bench"}

    async def check_async(request):
        return check(request)

    hook = {"sync": check, "async": check_async}[kind]
    run = fastws.runner.run

    def run_with_hook(**options):
        return run(authenticate=hook, **options)

    fastws.runner.run = run_with_hook  # fastws.cli imports it when it starts the server
    return fastws.cli.main(["echo", *argv])


if __name__ == "__main__":
    sys.exit(main())
