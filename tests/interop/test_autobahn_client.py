"""Autobahn|Testsuite in client mode (wstest 0.8.2, fuzzingserver) against both clients.

``fastws.connect`` and ``fastws.syncclient.connect``, with their default settings
(``max_size`` raised to 16 MiB for 9.*), echo every case of a ``wstest -m
fuzzingserver`` that tests/interop/autobahn_client.py starts on a free loopback
port; once on the extension and once on the pure-Python twins (without 9.* in
the CI selection).

    python -m pytest -m autobahn tests/interop/test_autobahn_client.py -s     # the CI selection
    python -m pytest -m autobahn_full tests/interop/test_autobahn_client.py -s  # 1-13 in full (hours)

Every case must be OK, NON-STRICT or INFORMATIONAL: a FAILED, UNIMPLEMENTED
(permessage-deflate not negotiated by default) or missing case fails the test.
See docs/conformance.md#client-mode.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "interop" / "autobahn_client.py"
IMPLEMENTATIONS = {"cython": {"FASTWS_REQUIRE_EXTENSION": "1"}, "python": {"FASTWS_PURE_PYTHON": "1"}}


CLIENTS = ("async", "sync")


def _run(implementation: str, cases: str, outdir: pathlib.Path, timeout: float, exclude: str = "") -> None:
    """Both clients at once, each against its own wstest (one single-threaded
    process each: two cores do twice the work)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTWS_PURE_PYTHON", "FASTWS_REQUIRE_EXTENSION")}
    env.update(IMPLEMENTATIONS[implementation])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    procs = {client: subprocess.Popen(
        [sys.executable, str(RUNNER), "--client", client, "--cases", cases, "--exclude", exclude,
         "--outdir", str(outdir / client)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT) for client in CLIENTS}
    outputs = {}
    try:
        for client, proc in procs.items():
            outputs[client] = proc.communicate(timeout=timeout)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()  # the runner stops its wstest on SIGTERM
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    for client, proc in procs.items():
        out = outputs[client]
        print(out[-5000:])
        agent = f"fastws-{client}-{implementation}"
        assert proc.returncode != 2, f"harness error ({agent}): {out[-2000:]}"
        totals = dict(re.findall(r"^autobahn-client: (fastws-\w+-\w+): (\d+ ok, .* failed)$", out, re.M))
        assert list(totals) == [agent], out[-2000:]
        assert proc.returncode == 0 and totals[agent].endswith(" 0 unimplemented, 0 failed"), \
            f"{agent}: cases not OK: {totals[agent]}\n{out[-3000:]}"


@pytest.mark.autobahn
@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
def test_autobahn_client_mode(implementation, tmp_path):
    # On the twins without 9.* (large and many-fragment messages: two thirds of
    # the time, all of it wstest's); their parser meets the extension's on
    # random streams in tests/codec, and 9.* runs on both in autobahn_full.
    _run(implementation, "ci", tmp_path / "reports", timeout=900,
         exclude="9.*" if implementation == "python" else "")


@pytest.mark.autobahn_full
@pytest.mark.timeout(10800)
@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
def test_autobahn_client_mode_full(implementation, tmp_path):
    _run(implementation, "*", tmp_path / "reports", timeout=10000)
