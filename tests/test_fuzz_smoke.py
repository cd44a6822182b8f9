"""The fuzz targets (bench/fuzz) on their seed corpus: each target's
``check`` runs on every committed seed input, with no atheris needed, so a
change that breaks a property the fuzzers check (or the targets themselves)
fails here at once. The long runs are ``python bench/fuzz/run.py``.
See docs/development.md#fuzzing.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

FUZZ = pathlib.Path(__file__).resolve().parents[1] / "bench" / "fuzz"
TARGETS = ("frames", "upgrade", "response", "inflate", "json_apps")


def load(target):
    name = f"fastws_fuzz_{target}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, FUZZ / f"{target}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", TARGETS)
def test_target_holds_on_its_seed_corpus(both_impls, target):  # both_impls: skips without the extension
    had_atheris = "atheris" in sys.modules
    module = load(target)
    assert had_atheris or "atheris" not in sys.modules  # check() needs no atheris
    seeds = sorted((FUZZ / "corpus" / target).iterdir())
    assert len(seeds) >= 10, f"no seed corpus for {target}: python bench/fuzz/seeds.py"
    for path in seeds:
        data = path.read_bytes()
        try:
            module.check(data)
        except Exception as exc:
            raise AssertionError(f"{target} seed {path.name} ({data[:60]!r}...): {exc}") from exc

