"""Several worker processes sharing one port (SO_REUSEPORT), under a supervisor.

::

    fastws.run(app, "0.0.0.0", 8765, workers=4)

The supervisor forks N workers before any event loop or thread exists (so the
app need not be importable or picklable); each binds the same address with
SO_REUSEPORT and runs its own uvloop. The supervisor does no I/O on the port:
it restarts a worker that dies (at most ``max_restarts`` a minute) and on
SIGINT/SIGTERM passes SIGTERM on, killing a worker still alive
``graceful_timeout + 5`` s later.
See docs/deployment/workers.md.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time

__all__ = ["Supervisor"]

logger = logging.getLogger("fastws.workers")


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


class Supervisor:
    def __init__(self, worker_main, workers: int, *, graceful_timeout: float = 10.0,
                 max_restarts: int = 20, on_ready=None, ready_timeout: float = 60.0):
        # worker_main(index, ready) runs in each child; it calls ready() once it listens.
        self.worker_main = worker_main
        self.on_ready = on_ready  # called once, when every first worker listens
        self.ready_timeout = ready_timeout
        self._ready_r = self._ready_w = -1
        self._exit_code = 0
        self.workers = workers
        self.graceful_timeout = graceful_timeout
        self.max_restarts = max_restarts
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.restarts: list[float] = []
        self._stopping = False

    def _spawn(self, index: int) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # If the supervisor dies (even by SIGKILL), the kernel sends us
                # SIGTERM: we drain and exit instead of serving on as an orphan.
                _die_with_parent(parent)
                os.close(self._ready_r)
                self.worker_main(index, self._ready)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logger.exception("worker %d crashed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pids[pid] = index
        return pid

    def _on_signal(self, signum, frame) -> None:
        # os.waitpid() is retried after a signal (PEP 475), so the workers are
        # told here; waitpid then returns as they exit.
        if not self._stopping:
            logger.info("supervisor: signal %d, stopping %d workers", signum, len(self.pids))
        self._stopping = True
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _ready(self) -> None:
        """In a worker: it listens now (one byte on the readiness pipe)."""
        try:
            os.write(self._ready_w, b"!")
        except OSError:  # the supervisor is gone, or the pipe is full: nobody waits
            pass

    def run(self) -> int:
        """Start the workers and supervise them until a signal; returns an exit code.

        ``on_ready`` is called once every worker of the first generation
        listens (each writes a byte on a pipe when its socket is open), so a
        client that connects when told the server is up is never refused."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_w, False)
        try:
            for index in range(self.workers):
                self._spawn(index)
            self._exit_code = 0
            self._wait_ready()
            while not self._stopping:
                try:
                    pid, status = os.waitpid(-1, 0)
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
                self._reap(pid, status)
            self._stop_all()
            return self._exit_code
        finally:
            os.close(self._ready_r)
            os.close(self._ready_w)

    def _wait_ready(self) -> None:
        """Until every first worker has written its byte (workers that die
        meanwhile are restarted as usual); then ``on_ready()``."""
        ready = 0
        deadline = time.monotonic() + self.ready_timeout
        while ready < self.workers and not self._stopping and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([self._ready_r], [], [], 0.05)
            except InterruptedError:
                continue
            if readable:
                ready += len(os.read(self._ready_r, 4096))
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                self._reap(pid, status)
        if ready < self.workers:
            if not self._stopping:
                logger.error("supervisor: %d of %d workers listening after %gs",
                             ready, self.workers, self.ready_timeout)
            return
        if self.on_ready is not None:
            self.on_ready()

    def _reap(self, pid: int, status: int) -> None:
        """A worker exited: restart it, unless stopping or it dies too often."""
        index = self.pids.pop(pid, None)
        if index is None or self._stopping:
            return
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > self.max_restarts:
            logger.error("supervisor: workers died %d times in a minute; stopping", len(self.restarts))
            self._stopping = True
            self._exit_code = 1
            return
        logger.warning("supervisor: worker %d (pid %d) exited with status %s; restarting",
                       index, pid, _describe(status))
        self._spawn(index)

    def _stop_all(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.pids.pop(pid, None)
        deadline = time.monotonic() + self.graceful_timeout + 5
        while self.pids and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            self.pids.pop(pid, None)
        for pid in list(self.pids):
            logger.error("supervisor: worker pid %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pids.pop(pid, None)


def _die_with_parent(parent: int) -> None:
    """Linux: ask for SIGTERM when the parent process dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            logger.warning("cannot ask to be signalled when the supervisor dies")
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit(0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return str(os.WEXITSTATUS(status))
