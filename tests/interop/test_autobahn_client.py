"""Autobahn|Testsuite in client mode (wstest 0.8.2, fuzzingserver) against both clients.

``fastws.connect`` and ``fastws.syncclient.connect``, with their default settings
(``max_size`` raised to 16 MiB for 9.*), echo every case of a ``wstest -m
fuzzingserver`` that tests/interop/autobahn_client.py starts on a free loopback
port; once on the extension and once on the pure-Python twins (without 9.* in
the CI selection).

    python -m pytest -m autobahn tests/interop/test_autobahn_client.py -s     # the CI selection
    python -m pytest -m autobahn_full tests/interop/test_autobahn_client.py -s  # 1-13 in full (an hour)

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


def _run(implementation: str, cases: str, outdir: pathlib.Path, timeout: float, exclude: str = "") -> str:
    env = {**os.environ, **IMPLEMENTATIONS[implementation]}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    run = subprocess.run([sys.executable, str(RUNNER), "--cases", cases, "--exclude", exclude,
                          "--outdir", str(outdir)],
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    print(run.stdout[-6000:], run.stderr[-2000:])
    assert run.returncode != 2, f"harness error: {run.stdout[-1500:]} {run.stderr[-1500:]}"
    totals = dict(re.findall(r"^autobahn-client: (fastws-\w+-\w+): (\d+ ok, .* failed)$", run.stdout, re.M))
    assert set(totals) == {f"fastws-{c}-{implementation}" for c in ("async", "sync")}, run.stdout[-2000:]
    assert run.returncode == 0, f"cases not OK: {totals}"
    for agent, line in totals.items():
        assert line.endswith(" 0 unimplemented, 0 failed"), (agent, line)
    return run.stdout


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
