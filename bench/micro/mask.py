"""Masking (RFC 6455 5.3) and UTF-8 validation throughput, fastws vs peers.

Masking: GB/s for 32 B, 1 KiB, 64 KiB and 1 MiB payloads, best of --repeat,
for the fastws Cython ``mask`` (in place) and ``masked`` (copy), the
pure-Python twin, and whichever peer masks are importable:
``websockets.speedups.apply_mask`` (returns a copy), ``websockets.utils.apply_mask``
(pure Python), aiohttp's ``_websocket_mask_cython`` (in place) and
``_websocket_mask_python``. The ratio column is each one's time over the
fastws Cython ``mask`` time (> 1 means slower than fastws).

UTF-8: GB/s validating 1 MiB of ASCII and 1 MiB of mixed text (Latin,
Cyrillic, CJK, emoji) with ``validate_utf8``, ``Utf8Validator.feed`` (and in
4 KiB pieces), the pure-Python twin, and ``bytes.decode('utf-8')`` for reference.

    python bench/micro/mask.py [--repeat 7] [--time 0.2]

Small sizes are dominated by the cost of the Python call. Not part of the test
suite; figures are for this machine only.
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/: the harness
from harness.meta import REPO, load_codec  # noqa: E402
from harness.run import head, stamp  # noqa: E402

sys.path.insert(0, str(REPO))  # this checkout's fastws first


KEY = b"\x12\x34\x56\x78"
SIZES = [(32, "32 B"), (1024, "1 KiB"), (64 * 1024, "64 KiB"), (1 << 20, "1 MiB")]


def rate(fn, args, nbytes, repeat, budget):
    """Bytes per second of ``fn(*args)``, best of ``repeat`` timings."""
    timer = timeit.Timer("fn(*args)", globals={"fn": fn, "args": args})
    number = 1
    while timer.timeit(number) < budget / 10:  # ~budget seconds per repeat
        number *= 10
    best = min(timer.repeat(repeat, number)) / number
    return nbytes / best


def mask_contestants():
    """(name, kind, fn(data, key)) for every importable mask; kind: in place or copy."""
    out = []
    for name in ("cython", "python"):
        try:
            codec = load_codec(name)
            mask, masked = codec.mask, codec.masked
        except ImportError as exc:
            print(f"  (fastws {name} not available: {exc})")
            continue
        out.append((f"fastws {name} mask", "in place", mask))
        out.append((f"fastws {name} masked", "copy", masked))
    try:
        import websockets
        from websockets.speedups import apply_mask
        out.append((f"websockets {websockets.__version__} speedups.apply_mask", "copy", apply_mask))
    except ImportError:
        pass
    try:
        import websockets
        from websockets.utils import apply_mask as py_apply_mask
        out.append((f"websockets {websockets.__version__} utils.apply_mask (py)", "copy",
                    py_apply_mask))
    except ImportError:
        pass
    try:
        import aiohttp
        from aiohttp._websocket.helpers import _websocket_mask_python
        from aiohttp._websocket.mask import _websocket_mask_cython

        # aiohttp takes (mask, data) and masks data in place
        out.append((f"aiohttp {aiohttp.__version__} _websocket_mask_cython", "in place",
                    lambda data, key: _websocket_mask_cython(key, data)))
        out.append((f"aiohttp {aiohttp.__version__} _websocket_mask_python", "in place",
                    lambda data, key: _websocket_mask_python(key, data)))
    except ImportError:
        try:  # older aiohttp
            import aiohttp
            from aiohttp.http_websocket import _websocket_mask

            out.append((f"aiohttp {aiohttp.__version__} _websocket_mask", "in place",
                        lambda data, key: _websocket_mask(key, data)))
        except ImportError:
            pass
    return out


def bench_mask(repeat, budget):
    contestants = mask_contestants()
    payloads = {n: bytearray(os.urandom(n)) for n, _ in SIZES}
    results = {}
    for name, kind, fn in contestants:
        for n, _ in SIZES:
            # in-place masks XOR the same buffer over and over: fine for timing
            results[name, n] = rate(fn, (payloads[n], KEY), n, repeat, budget)
    width = max(len(name) for name, _, _ in contestants) + 2
    head = f"{'mask':<{width}}{'':9}" + "".join(f"{label:>18}" for _, label in SIZES)
    print(head)
    print("-" * len(head))
    base_name = contestants[0][0] if contestants and "cython" in contestants[0][0] else None
    for name, kind, _ in contestants:
        cells = []
        for n, _ in SIZES:
            gbs = results[name, n] / 1e9
            if base_name:
                ratio = results[base_name, n] / results[name, n]
                cells.append(f"{gbs:8.2f} ({ratio:5.2f}x)")
            else:
                cells.append(f"{gbs:8.2f}")
        print(f"{name:<{width}}{kind:<9}" + "".join(f"{c:>18}" for c in cells))
    print("GB/s (time relative to fastws cython mask; > 1x = slower)")


def bench_utf8(repeat, budget):
    n = 1 << 20
    ascii_ = (b"The quick brown fox jumps over the lazy dog. " * (n // 45 + 1))[:n]
    sample = ("Hello, world! \u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! "
              "\u4f60\u597d\uff0c\u4e16\u754c\uff01 Gr\u00fc\u00df Gott. \U0001f389\U0001f680 ")
    mixed = (sample.encode() * (n // len(sample.encode()) + 1))[:n]
    mixed = mixed[: len(mixed.decode("utf-8", "ignore").encode())]  # whole code points
    share = sum(b >= 0x80 for b in mixed) / len(mixed)

    rows = []
    for name in ("cython", "python"):
        try:
            codec = load_codec(name)
            validate, Validator = codec.validate_utf8, codec.Utf8Validator
        except ImportError as exc:
            print(f"  (fastws {name} not available: {exc})")
            continue
        rows.append((f"fastws {name} validate_utf8", validate))

        def feed(data, Validator=Validator):
            v = Validator()
            return v.feed(data) and v.complete()

        def feed_pieces(data, Validator=Validator):
            v = Validator()
            view = memoryview(data)
            for i in range(0, len(view), 4096):
                v.feed(view[i : i + 4096])
            return v.complete()

        rows.append((f"fastws {name} Utf8Validator.feed", feed))
        rows.append((f"fastws {name} feed, 4 KiB pieces", feed_pieces))
    rows.append(("bytes.decode('utf-8')", lambda data: data.decode("utf-8")))

    width = max(len(r[0]) for r in rows) + 2
    head = f"{'utf-8 validation, 1 MiB':<{width}}{'ASCII':>18}{'mixed':>18}"
    print(head)
    print("-" * len(head))
    datasets = (("ascii", ascii_), ("mixed", mixed))
    rates = {}
    for name, fn in rows:
        for data_name, data in datasets:
            assert fn(data)
            rates[name, data_name] = rate(fn, (data,), len(data), repeat, budget)
    base = rows[-1][0]  # bytes.decode
    for name, _ in rows:
        cells = []
        for data_name, _ in datasets:
            r = rates[name, data_name]
            cells.append(f"{r / 1e9:8.2f} ({r / rates[base, data_name]:5.2f}x)")
        print(f"{name:<{width}}" + "".join(f"{c:>18}" for c in cells))
    print(f"GB/s (speed relative to bytes.decode; > 1x = faster); mixed text is "
          f"{share:.0%} non-ASCII bytes")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timings per case (best is kept)")
    parser.add_argument("--time", type=float, default=0.2,
                        help="approximate seconds per timing")
    args = parser.parse_args(argv)
    print("\n".join(head(__file__, stamp())))
    print()
    bench_mask(args.repeat, args.time)
    print()
    bench_utf8(args.repeat, args.time)


if __name__ == "__main__":
    main()
