"""What machine and which versions a bench ran on: one place for every bench's header;
free_port and callgrind_total; codec_module() / load_codec() and http_module(): fastws
modules under their new names (fastws.codec, fastws.http) or their old ones
(fastws._impl, fastws.handshake)."""
from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # bench/harness/meta.py -> the repository


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for dist in ("Cython", "uvloop", "picows", "aiofastnet", "websockets", "aiohttp"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        sys.path.insert(0, str(REPO))
        import fastws

        impl = getattr(fastws, "IMPLEMENTATION", "?")
        out.append(f"fastws {getattr(fastws, '__version__', '?')} ({impl}, {Path(fastws.__file__).parent})")
    except Exception as exc:  # noqa: BLE001 - only reported
        out.append(f"fastws not importable ({type(exc).__name__}: {exc})")
    finally:
        sys.path.remove(str(REPO))
    return ", ".join(out)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def callgrind_total(path: str) -> int:
    """The instructions counted in one callgrind dump file."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _renamed(new: str, old: str):
    """fastws.<new> if the imported fastws package has it, else fastws.<old>.

    Only the imported package's own module: with the repository first on
    sys.path, an editable install elsewhere could otherwise lend its fastws.<new>."""
    import importlib

    import fastws

    name = new if any(Path(p, f"{new}.py").exists() or Path(p, new).is_dir() for p in fastws.__path__) else old
    return importlib.import_module(f"fastws.{name}")


def codec_module():
    """``fastws.codec`` (``load(name)``, ``IMPLEMENTATION``), or ``fastws._impl``, its
    name before the package was regrouped."""
    return _renamed("codec", "_impl")


def http_module():
    """``fastws.http`` (``RequestReader``, ``Request``, ``Response``, ``Headers``), or
    ``fastws.handshake``, where they were before the package was regrouped."""
    return _renamed("http", "handshake")


def load_codec(name: str):
    """One implementation's codec, ``"cython"`` or ``"python"``, every name imported now
    (ImportError if a module is missing): fastws.codec.load, or the old lazy
    _impl.load(name).require()."""
    codec = codec_module().load(name)
    require = getattr(codec, "require", None)
    return require() if require is not None else codec
