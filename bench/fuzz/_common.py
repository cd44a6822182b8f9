"""Shared by the fuzz targets: input decoding without atheris, and the
atheris wiring. Each target is ``check(data: bytes)`` (raises on a finding)
plus ``main()``; the smoke test (tests/test_fuzz_smoke.py) runs ``check`` on
the seed corpus with no extra package. See docs/development.md#fuzzing.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # python bench/fuzz/<target>.py from a checkout
    sys.path.insert(0, ROOT)


class Finding(AssertionError):
    """A property the target checks does not hold (libFuzzer reports a crash)."""


def expect(condition, *what) -> None:
    if not condition:
        raise Finding(" ".join(repr(w) if not isinstance(w, str) else w for w in what))


def cut(data: bytes, sizes: bytes) -> list:
    """``data`` in pieces of the given sizes (one byte each, 0-255), the rest
    last: fuzzer-chosen split points that survive mutation of the data."""
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(data[pos:pos + size])
        pos += size
    pieces.append(data[pos:])
    return pieces


def split_config(data: bytes, fixed: int):
    """(the first ``fixed`` bytes zero-padded, the cut sizes, the rest):
    byte ``fixed - 1``'s low 3 bits give how many cut-size bytes follow."""
    head = data[:fixed].ljust(fixed, b"\x00")
    ncuts = head[-1] & 7
    sizes = data[fixed:fixed + ncuts]
    return head, sizes, data[fixed + ncuts:]


def instrument(prefix: str) -> int:
    """Instrument (atheris) every Python function and method of the loaded
    modules named ``prefix`` or ``prefix.*``; returns how many."""
    import atheris

    done = set()

    def patch(func):
        code = getattr(func, "__code__", None)
        if code is None or id(code) in done:
            return 0
        try:
            atheris.instrument_func(func)
        except RuntimeError:  # atheris cannot disassemble some trivial bodies
            return 0
        done.add(id(func.__code__))
        return 1

    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != name:
                continue
            if isinstance(value, type):
                for attr in list(vars(value).values()):
                    if isinstance(attr, (staticmethod, classmethod)):
                        attr = attr.__func__
                    if isinstance(attr, property):
                        count += sum(patch(f) for f in (attr.fget, attr.fset) if f is not None)
                    else:
                        count += patch(attr)
            else:
                count += patch(value)
    return count


def main(check, *, max_len: int = 4096) -> None:
    """Run ``check`` under atheris/libFuzzer with the command line's arguments
    (``-max_len`` defaults to ``max_len``)."""
    import atheris

    # The code under test is imported already: instrument fastws's Python
    # code (the Cython extension is checked against its twin). Not
    # instrument_all(): the standard library's thousands of functions take
    # over a minute and only dilute the coverage signal.
    instrument("fastws")
    argv = list(sys.argv)
    # libFuzzer runs argv[0] again for -minimize_crash, -fork, -merge: with
    # this interpreter (the scripts are not executable).
    argv[0] = f"{sys.executable} {os.path.abspath(argv[0])}"
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append(f"-max_len={max_len}")
    atheris.Setup(argv, check)
    atheris.Fuzz()
