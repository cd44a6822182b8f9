#!/usr/bin/env bash
# Install everything the tests need, build the Cython extension, and run the
# whole suite. This is the README's test command, and what CI runs (.ci/run).
#
#   0. Debian's Chromium for tests/test_chat_browser.py (apt-get, as root, only
#      when /usr/bin/chromium is missing); in CI (CI=true) a missing browser
#      fails that test instead of skipping it (FASTWS_REQUIRE_BROWSER=1).
#      playwright comes from pip (the test extra) and drives /usr/bin/chromium;
#      `playwright install` is never run: no browser is downloaded.
#      Debian's redis-server for tests/server/test_broker*.py (apt-get when
#      missing; it brings redis-cli, which makes the six-node Redis Cluster of
#      test_broker_cluster.py; the tests start their own servers on free
#      loopback ports); in CI a missing redis-server fails those tests instead
#      of skipping them.
#      Debian's tinyproxy for tests/interop/test_proxy.py, the same way
#      (pproxy, its SOCKS proxy, comes from pip: the test extra).
#      Debian's haproxy for tests/server/test_haproxy.py and
#      test_load_balancing.py (apt-get when missing; the tests start their own
#      on free loopback ports, by PID; test_load_balancing.py runs the HAProxy
#      configuration docs/deployment/load-balancing.md publishes); in CI a
#      missing haproxy fails them.
#   1. pip install -e ".[test]" with FASTWS_REQUIRE_EXTENSION=1 (a failed
#      compile is an error, never a silent fallback to the twins)
#   2. tests/protocol, tests/server, tests/apps (and three interop files) again
#      on the pure-Python twins
#   3. Autobahn|Testsuite groups 1-10 against `fastws echo`, both API levels, and
#      in client mode (wstest's fuzzingserver) against both clients, on the
#      extension and on the twins (tests/interop/test_autobahn_client.py)
#   4. the docs site (mkdocs build --strict)
#   5. mypy --strict over the public modules (what `import fastws` gives,
#      fastws.syncclient, the uvicorn and locust entry points; py.typed ships)
#   6. the whole default suite on the extension
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

echo "== browser for the chat test (Debian's chromium)"
if [ -x /usr/bin/chromium ]; then
    echo "/usr/bin/chromium is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
else
    echo "note: /usr/bin/chromium is missing and this is not root (or not Debian):"
    echo "      run 'sudo apt-get install -y chromium' first, or tests/test_chat_browser.py"
    echo "      is skipped (and fails in CI, where FASTWS_REQUIRE_BROWSER=1)"
fi
if [ "${CI:-}" = "true" ]; then
    export FASTWS_REQUIRE_BROWSER=1
fi

echo "== redis-server for the broker tests (Debian's redis-server)"
if command -v redis-server >/dev/null; then
    echo "$(command -v redis-server) is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
else
    echo "note: redis-server is missing and this is not root (or not Debian):"
    echo "      run 'sudo apt-get install -y redis-server' first, or tests/test_broker.py"
    echo "      is skipped (and fails in CI, where CI=true)"
fi

echo "== tinyproxy for the proxy tests (Debian's tinyproxy)"
if command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ]; then
    echo "tinyproxy is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y tinyproxy
else
    echo "note: tinyproxy is missing and this is not root (or not Debian):"
    echo "      run 'sudo apt-get install -y tinyproxy' first, or tests/interop/test_proxy.py"
    echo "      is skipped (and fails in CI, where CI=true)"
fi

echo "== haproxy for the PROXY protocol and load-balancing tests (Debian's haproxy)"
if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then
    echo "$(command -v haproxy || echo /usr/sbin/haproxy) is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy
else
    echo "note: haproxy is missing and this is not root (or not Debian):"
    echo "      run 'sudo apt-get install -y haproxy' first, or tests/server/test_haproxy.py"
    echo "      and test_load_balancing.py are skipped (and fail in CI, where CI=true)"
fi

echo "== install (editable, extension required)"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pip install -q -e ".[test]"
"$PY" -c "import fastws; print('fastws', fastws.__version__, 'implementation:', fastws.IMPLEMENTATION)"

echo "== the protocol, server and app tests again on the pure-Python twins"
# (the codec tests run both implementations side by side in the main pass)
FASTWS_PURE_PYTHON=1 "$PY" -m pytest -q -p no:cacheprovider tests/protocol tests/server tests/apps tests/interop/test_peers.py tests/interop/test_uvicorn.py \
    tests/interop/test_proxy.py

echo "== Autobahn|Testsuite 1-10 and a part of 12-13, deflate on, server and client mode (pytest -m autobahn)"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pytest -q -p no:cacheprovider -m autobahn -s

echo "== the docs site builds with no warning (mkdocs --strict)"
NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

echo "== mypy --strict over the public modules (settings: pyproject.toml [tool.mypy])"
"$PY" -m mypy --strict fastws/__init__.py fastws/version.py fastws/constants.py fastws/exceptions.py \
    fastws/options.py fastws/codec.py fastws/listener.py fastws/websocket.py fastws/client.py \
    fastws/syncclient.py fastws/proxy.py fastws/http.py fastws/timers.py fastws/runner.py fastws/uvicorn.py fastws/locust.py \
    tests/packaging/typed_usage.py  # a user's program: assert_type on the public signatures

echo "== the whole suite on the Cython extension"
FASTWS_REQUIRE_EXTENSION=1 "$PY" -m pytest -q -p no:cacheprovider
