"""Readings of /proc for a PID or the machine: memory, CPU time, open files, children.

Only ``os`` is imported, so that a client process (bench/load/conn_client.py) can
read its own RSS without carrying the rest of the harness in that RSS."""
from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int:
    return int(_stat_fields(pid)[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Running (not a zombie), and the same process if ``started`` (its start time) is given."""
    try:
        f = _stat_fields(pid)
    except OSError:
        return False
    if f[0] == "Z":
        return False
    return started is None or int(f[19]) == started


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(_stat_fields(int(d))[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(out)


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out = [pid]
    for c in children(pid):
        out.extend(tree(c))
    return out


def rss_kib(pid: int | str) -> int:
    """VmRSS of pid (or "self") in KiB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


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
        fields = _stat_fields(pid)  # fields 14, 15: utime, stime
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0


def meminfo() -> dict:
    """/proc/meminfo in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def mem_available() -> int:
    return meminfo()["MemAvailable"]


def sockstat_tcp() -> dict:
    """/proc/net/sockstat 'TCP:' line: inuse, orphan, tw, alloc, mem (mem in pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                v = line.split()[1:]
                return {v[i]: int(v[i + 1]) for i in range(0, len(v) - 1, 2)}
    return {}
