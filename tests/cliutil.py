"""Start the fastws command as a subprocess and talk HTTP to it (tests only)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Command:
    """``python -m fastws ARGS`` running; ``line`` is its start-up line, ``port`` the port."""

    def __init__(self, *args, cwd=None, env=None):
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, cwd, full_env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "fastws", *args], cwd=cwd, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.line = self.proc.stdout.readline()
        if not self.line:
            err = self.proc.stderr.read()
            self.proc.wait()
            raise RuntimeError(f"fastws did not start: {err}")
        m = re.search(r"://(?:127\.0\.0\.1|localhost):(\d+)", self.line)
        self.port = int(m.group(1)) if m else None

    def stop(self, sig=None, timeout=20) -> int:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run(*args, cwd=None, env=None, timeout=30):
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, cwd) if p)
    return subprocess.run([sys.executable, "-m", "fastws", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def get(url, context=None, timeout=5):
    """(status, headers, body) of a GET, including error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def metrics(port):
    """{(name, frozenset(labels.items())): value} from GET /metrics (parsed with prometheus_client)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), (status, headers)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    return predicate()
