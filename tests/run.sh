#!/usr/bin/env bash
# Install everything the tests need, build the Cython extension, and run the
# whole suite. This is the README's test command, and what CI runs (.ci/run).
#
#   1. pip install -e ".[test]" with FASTWS_REQUIRE_EXTENSION=1 (a failed
#      compile is an error, never a silent fallback to the twins)
#   2. the end-to-end protocol tests again on the pure-Python twins
#   3. Autobahn|Testsuite groups 1-10 against `fastws echo`, both API levels
#   4. the whole default suite on the extension
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

echo "== install (editable, extension required)"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pip install -q -e ".[test]"
"$PY" -c "import fastws; print('fastws', fastws.__version__, 'implementation:', fastws.IMPLEMENTATION)"

echo "== end-to-end tests on the pure-Python twins"
FASTWS_PURE_PYTHON=1 "$PY" -m pytest -q -p no:cacheprovider tests/test_server.py tests/test_peers.py tests/test_flow.py tests/test_cli.py tests/test_impl.py

echo "== Autobahn|Testsuite 1-10 (pytest -m autobahn)"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pytest -q -p no:cacheprovider -m autobahn -s

echo "== the whole suite on the Cython extension"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pytest -q -p no:cacheprovider
