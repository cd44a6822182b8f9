"""What machine and which versions a bench ran on: one place for every bench's header
(and two small helpers the callgrind benches share)."""
from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for dist in ("uvloop", "picows", "aiofastnet", "websockets", "aiohttp"):
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


def proc_cpu_ns(pid: int) -> int:
    """user+sys CPU of all threads of pid, ns (schedstat; clock ticks if absent; 0 if gone)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass  # thread ended
        return total
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields 14, 15: utime, stime
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0


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
