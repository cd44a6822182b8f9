"""What the benches repeat around their measurements, written once.

- children: ``child_env`` (PYTHONPATH with the repository first), ``pin``
  (a preexec_fn for one CPU), ``spawn`` (Popen + tracked), ``Child`` (a
  server process with its output in temporary files, ``await ready()`` on its
  ready line or its port, ``await stop()``), ``stop`` / ``astop`` (by PID
  only: a signal, a wait, then SIGKILL; never by name), ``port_open``,
  ``wait_port``, ``port_closed``;
- /proc (from procfs.py): ``rss_kib``, ``proc_cpu_ns``, ``fd_count``,
  ``children``, ``tree``, ``alive``, ``meminfo``, ``mem_available``;
- ``GUARD``: every PID this process started (with its start time, so that a
  reused PID is never signalled); ``GUARD.low()`` when MemAvailable is under
  the floor (2 GiB unless set), ``GUARD.watch()`` a thread that stops them all
  when it is, ``GUARD.reap()`` (also at exit) stops whatever is still running;
  ``run_guarded(coro, floor_gib)`` runs a bench's main coroutine with both;
- results: ``stamp``, ``head`` (command, date, machine, versions lines) and
  ``append_results``.
"""
from __future__ import annotations

import asyncio
import atexit
import datetime
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .meta import REPO, machine, versions
from .procfs import alive, children, fd_count, mem_available, meminfo, proc_cpu_ns, rss_kib, sockstat_tcp, start_time, tree
from .servers import SKIP

BENCH = REPO / "bench"
LATEST = BENCH / "results" / "latest.md"
HISTORY = BENCH / "results" / "history.md"

__all__ = ["BENCH", "GUARD", "HISTORY", "LATEST", "REPO", "SKIP", "Child", "alive", "append_results",
           "astop", "child_env", "children", "fd_count", "head", "mem_available", "meminfo", "pin",
           "port_closed", "port_open", "proc_cpu_ns", "rss_kib", "run_guarded", "sockstat_tcp", "spawn", "stamp", "stop",
           "tree", "wait_port"]


# ------------------------------------------------------------ children ----
def child_env(*paths, **extra) -> dict:
    """os.environ with the repository (then ``paths``) first on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), *map(str, paths), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def pin(cpu):
    """A preexec_fn that pins the child to ``cpu`` (None: no pinning, or a 1-CPU machine)."""
    if cpu is None or (os.cpu_count() or 1) < 2:
        return None

    def _pin():
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):
            pass

    return _pin


def spawn(cmd, *, cpu=None, **popen) -> subprocess.Popen:
    """subprocess.Popen(cmd), pinned to ``cpu`` if given, its PID tracked by GUARD."""
    proc = subprocess.Popen(cmd, preexec_fn=pin(cpu), **popen)
    GUARD.track(proc.pid)
    return proc


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> bool:
    """Block until ``host:port`` accepts a connection (True) or ``timeout`` passed (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


async def port_closed(host: str, port: int, timeout: float = 5.0) -> bool:
    """Wait until nothing listens on ``host:port`` any more."""
    end = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def stop(*procs, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop children by PID (their Popen): ``sig`` to each still running (None: send
    nothing, they were told otherwise), up to ``timeout`` s for all, then SIGKILL."""
    for p in procs:
        if sig is not None and p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
    end = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def astop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 5.0) -> None:
    """``stop`` for one child from inside an event loop (the loop keeps running)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
    proc.wait()


class Child:
    """A server (or helper) process: stdout and stderr in temporary files, stdin closed,
    pinned to ``cpu`` if given, tracked by GUARD. Ready when ``ready_text`` shows on its
    stdout, or, with ``ready_text=None``, when ``host:port`` accepts."""

    def __init__(self, cmd, *, host: str = "127.0.0.1", port: int | None = None, ready_text: str | None = "READY",
                 cpu=None, env=None, cwd=None, new_session: bool = False, name: str | None = None):
        self.cmd, self.host, self.port, self.ready_text = cmd, host, port, ready_text
        self.name = name or " ".join(map(str, cmd[1:3]))
        self.out = tempfile.TemporaryFile("w+")
        self.err = tempfile.TemporaryFile("w+")
        self.proc = spawn(cmd, cpu=cpu, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL,
                          env=env if env is not None else child_env(), cwd=cwd, start_new_session=new_session)
        self.pid = self.proc.pid

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def tail(self, n: int = 1) -> str:
        """The last ``n`` non-blank lines of its stderr, joined by `` | ``."""
        self.err.seek(0)
        lines = [ln for ln in self.err.read().splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) if lines else "(no stderr)"

    async def ready(self, timeout: float = 20.0, tail: int = 1) -> str | None:
        """None once ready, else why not (``skipped: ...`` for exit status SKIP)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rc = self.proc.poll()
            if rc is not None:
                return ("skipped: " if rc == SKIP else f"exited {rc}: ") + self.tail(tail)
            if self.ready_text is not None and self.ready_text in self.output():
                return None
            if self.ready_text is None and port_open(self.host, self.port):
                return None
            await asyncio.sleep(0.02)
        return f"not ready in {timeout:g} s: {self.tail(tail)}"

    async def stop(self, sig=signal.SIGTERM, timeout: float = 5.0, check_port: bool = True) -> None:
        """By PID: ``sig``, up to ``timeout`` s, SIGKILL; then its port seen closed."""
        await astop(self.proc, sig, timeout)
        try:
            if check_port and self.port and not await port_closed(self.host, self.port):
                raise RuntimeError(f"{self.name}: port {self.port} still listening after stop")
        finally:
            self.out.close()
            self.err.close()


# ---------------------------------------------------------- memory guard ----
class Guard:
    """Every process this bench started, (pid, start time), and the memory floor."""

    def __init__(self, floor_gib: float = 2.0):
        self.floor_gib = floor_gib
        self.started: list[tuple[int, int]] = []
        self.tripped: str | None = None  # set by watch() when it stopped everything

    @property
    def floor(self) -> int:
        return int(self.floor_gib * 2**30)

    def track(self, pid: int) -> None:
        try:
            self.started.append((pid, start_time(pid)))
        except OSError:
            pass

    def low(self, available: int | None = None) -> bool:
        """MemAvailable (read now unless given) is under the floor."""
        return (mem_available() if available is None else available) < self.floor

    def reap(self) -> None:
        """SIGTERM, then SIGKILL after 20 s, every PID started here that still runs."""
        live = [(p, s) for p, s in self.started if alive(p, s)]
        for p, _ in live:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while live and time.monotonic() < deadline:
            for p, _ in live:
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass  # not our child (a worker): its supervisor or init reaps it
            live = [(p, s) for p, s in live if alive(p, s)]
            time.sleep(0.1)
        for p, _ in live:
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def watch(self, every: float = 0.5) -> None:
        """A daemon thread: once MemAvailable is under the floor, stop every process started."""

        def run():
            while self.tripped is None:
                avail = mem_available()
                if self.low(avail):
                    self.tripped = (f"memory guard: MemAvailable {avail / 2**30:.2f} GiB < floor "
                                    f"{self.floor_gib:g} GiB; stopping every process started")
                    print(self.tripped, file=sys.stderr, flush=True)
                    self.reap()
                    return
                time.sleep(every)

        threading.Thread(target=run, name="memory-guard", daemon=True).start()


GUARD = Guard()
atexit.register(GUARD.reap)


def run_guarded(coro, floor_gib: float) -> int:
    """Run a bench's main coroutine on uvloop while ``GUARD`` watches
    MemAvailable (``floor_gib``); every process it started is stopped at the
    end, whatever the end (130 on Ctrl-C)."""
    import uvloop

    GUARD.floor_gib = floor_gib
    GUARD.watch()  # below the floor at any time: stop every process started, by PID
    try:
        return uvloop.run(coro)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        GUARD.reap()


# ---------------------------------------------------------------- results ----
def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def command(script: str) -> str:
    """How this bench was started: ``python bench/<group>/<script> args``."""
    return "python " + shlex.join([os.path.relpath(os.path.abspath(script), REPO)] + sys.argv[1:])


def head(script: str, date: str, *more: str) -> list[str]:
    """The lines above every table: command, date, machine, versions, then ``more``."""
    return [f"- command: `{command(script)}`", f"- date: {date}", f"- machine: {machine()}",
            f"- versions: {versions()}", *more]


def append_results(out, heading: str, lines: list[str], text: str) -> Path | None:
    """Append ``## heading``, the ``head()`` lines and ``text`` to the markdown file
    ``out`` (nothing if ``out`` is None).

    ``bench/results/latest.md`` is kept by hand (one section per bench, and the
    summary): a section meant for it goes to ``bench/results/history.md``, the
    record in date order, and a line says to carry it over into latest.md."""
    if not out:
        return None
    out = Path(out)
    target = HISTORY if out.resolve() == LATEST.resolve() else out
    new = not target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as f:
        if new:
            f.write("# Benchmark results\n")
        f.write(f"\n## {heading}\n\n" + "\n".join(lines) + f"\n\n{text}\n")
    print(f"\nappended to {target}", file=sys.stderr)
    if target is HISTORY:
        print(f"{LATEST.relative_to(REPO)} is edited by hand: replace this bench's section there with the "
              "new one (and its line in the Summary) if it is the one to read now", file=sys.stderr)
    return target
