"""The access-control pages say what the code does (docs/guide/access-control.md, jwt.md).

- every ``--flag`` they mention is a flag of ``fastws run``, ``chat`` or
  ``push`` (from the commands' own ``--help``), and every ``FASTWS_*``
  variable is one the help names;
- every ```python block parses, and every ``fastws.*`` name it uses (``import
  fastws.auth``, ``from fastws.auth import JWTAuth``, ``fastws.InvalidRequest``,
  ``fastws.exceptions.Forbidden``, ...) exists;
- every block that is a whole program (it calls ``fastws.run(``) runs as
  written on a free port; one with ``authenticate=`` refuses an upgrade
  without a token with 401 and accepts the pages' token (signed with its
  ``SECRET``, or a key of its ``TOKENS``), and the server's first message
  names the user; one without lets a client connect and echoes.
"""
from __future__ import annotations

import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

from util import UNIT

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "guide" / "access-control.md", ROOT / "docs" / "guide" / "jwt.md"]


def _text(page) -> str:
    return page.read_text(encoding="utf-8")


def _blocks(lang: str) -> list:
    out = []
    for page in PAGES:
        for code in re.findall(rf"^```{lang}\n(.*?)^```", _text(page), re.S | re.M):
            out.append((page.name, code))
    return out


def _help() -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    text = ""
    for command in ("run", "chat", "push"):
        done = subprocess.run([sys.executable, "-m", "fastws", command, "--help"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        text += done.stdout
    return text


def test_every_flag_and_variable_exists():
    helptext = _help()
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", helptext))
    variables = set(re.findall(r"FASTWS_[A-Z_]+", helptext))
    for page in PAGES:
        text = _text(page)
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text)):
            assert flag in flags, f"{page.name} mentions {flag}, which no fastws command has"
        for var in set(re.findall(r"FASTWS_[A-Z_]+", text)):
            assert var in variables, f"{page.name} mentions {var}, which no fastws command reads"


def _resolve(dotted: str) -> None:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return
    raise ImportError(dotted)


def _fastws_names(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fastws":
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "fastws")
        elif isinstance(node, ast.Attribute):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "fastws":
                names.add(".".join(["fastws", *reversed(chain)]))
    return names


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_parses_and_names_exist(index):
    page, code = _blocks("python")[index]
    tree = ast.parse(code, filename=page)
    for name in sorted(_fastws_names(tree)):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{page}: a block uses {name}, which does not exist ({exc})")


PROGRAMS = [(page, code) for page, code in _blocks("python") if "fastws.run(" in code]


def test_the_pages_have_whole_programs():
    assert len(PROGRAMS) >= 2


@pytest.mark.parametrize("index", range(len(PROGRAMS)))
def test_whole_program_runs(index, tmp_path):
    jwt = pytest.importorskip("jwt")
    page, code = PROGRAMS[index]
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "8765" in code, "a whole program listens on 8765"
    script = tmp_path / "example.py"
    script.write_text(code.replace("8765", str(port)))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        authenticated = "authenticate=" in code
        deadline = time.monotonic() + 20 * UNIT
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with ws_sync.connect(url, open_timeout=5 * UNIT) as ws:
                    assert not authenticated, f"{page}: the example accepted an upgrade without a token"
                    ws.send("ping")
                    assert ws.recv(timeout=5 * UNIT) == "ping"
                break
            except InvalidStatus as exc:
                assert authenticated and exc.response.status_code == 401, exc.response
                break
            except OSError:
                assert time.monotonic() < deadline, "the example does not listen"
                time.sleep(0.05)
        if authenticated:
            secret = re.search(r'^SECRET = "([^"]+)"', code, re.M)
            tokens = re.search(r'^TOKENS = \{"([^"]+)"', code, re.M)
            assert secret or tokens, f"{page}: no SECRET or TOKENS to make a token from"
            if secret:
                now = int(time.time())
                tok = jwt.encode({"sub": "alice", "iat": now, "exp": now + 60}, secret.group(1),
                                 algorithm="HS256")
            else:
                tok = tokens.group(1)
            with ws_sync.connect(url, additional_headers=[("Authorization", f"Bearer {tok}")],
                                 open_timeout=5 * UNIT) as ws:
                assert "alice" in ws.recv(timeout=5 * UNIT)
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert "Traceback" not in err, err
