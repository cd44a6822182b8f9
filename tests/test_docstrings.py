"""Module docstrings stay short and point at the docs; no dated figures in the code.

Read with ``ast``/``tokenize`` (for Cython files, with a regex): nothing is
imported or run. Three rules, each reported with the offending file:

1. a module docstring is at most ``MAX_LINES`` lines, the quote lines included
   (the design lives on the docs site, not in the code);
2. a module docstring of more than 3 lines names a ``docs/...md`` page, and
   every page it names exists (with its ``#anchor``, when one is given);
3. no comment or docstring of the package holds a date such as 2026-11-22:
   dated measurements belong on docs/performance.md.
"""
from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 15
# Files allowed a longer module docstring (and no docs link), each with the
# reason. Keep this short: an entry is a debt, not a licence.
EXCEPTIONS: dict = {}

DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
DOCS_LINK = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.md(?:#[A-Za-z0-9_-]+)?")
# The leading triple-quoted string of a Cython file, after comment lines
# (``# cython: ...``) and blank lines.
PYX_DOCSTRING = re.compile(r'(?:[ \t]*#[^\n]*\n|[ \t]*\n)*[rRuU]?("""|\'\'\')(.*?)\1', re.S)


# -- reading -----------------------------------------------------------------

def _module_docstring_py(text: str):
    """(first line, text with quotes) of a Python module's docstring, or None."""
    tree = ast.parse(text)
    if not tree.body:
        return None
    node = tree.body[0]
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)):
        return None
    lines = text.splitlines()[node.lineno - 1:node.end_lineno]
    return node.lineno, "\n".join(lines)


def _module_docstring_pyx(text: str):
    m = PYX_DOCSTRING.match(text)
    if not m:
        return None
    return text.count("\n", 0, m.start(1)) + 1, m.group(0)[m.start(1) - m.start(0):]


def _py_comments_and_docstrings(text: str):
    """(line, text) of every comment and every docstring of a Python file."""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                yield body[0].lineno, body[0].value.value


def _slugs(page: pathlib.Path) -> set:
    """The anchors of a markdown page's headings, as mkdocs (markdown's toc) makes them."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            value = re.sub(r"[^\w\s-]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"[-\s]+", "-", value))
    return out


def _sources(root: pathlib.Path):
    """(relative path, text, is_python) of every file the rules look at."""
    for pattern in ("fastws/**/*.py", "fastws_ext/*.py"):
        for path in sorted(root.glob(pattern)):
            yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"), True
    for pattern in ("fastws_ext/*.pyx", "fastws_ext/*.pxd", "fastws_ext/*.pyi"):
        for path in sorted(root.glob(pattern)):
            yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"), False


# -- the rules ---------------------------------------------------------------

def docstring_problems(root: pathlib.Path, exceptions=EXCEPTIONS) -> list:
    problems = []
    for rel, text, is_python in _sources(root):
        if rel.endswith((".pxd", ".pyi")):
            continue  # stubs and declarations: rule 3 only
        found = _module_docstring_py(text) if is_python else _module_docstring_pyx(text)
        if found is None:
            continue
        lineno, doc = found
        n = len(doc.splitlines())
        if rel not in exceptions:
            if n > MAX_LINES:
                problems.append(f"{rel}:{lineno}: module docstring of {n} lines (at most {MAX_LINES}; "
                                f"move the design to its docs page and link it)")
            links = DOCS_LINK.findall(doc)
            if n > 3 and not links:
                problems.append(f"{rel}:{lineno}: module docstring of {n} lines names no docs/...md page")
        for link in DOCS_LINK.findall(doc):
            page, _, anchor = link.partition("#")
            if not (root / page).is_file():
                problems.append(f"{rel}:{lineno}: names {page}, which does not exist")
            elif anchor and anchor not in _slugs(root / page):
                problems.append(f"{rel}:{lineno}: names {link}, but {page} has no heading #{anchor}")
    return problems


def date_problems(root: pathlib.Path) -> list:
    problems = []
    for rel, text, is_python in _sources(root):
        if is_python:
            pieces = _py_comments_and_docstrings(text)
        else:
            # Cython cannot be tokenized as Python: the whole file is read,
            # which is stricter (a date has no business in its code either).
            pieces = enumerate(text.splitlines(), 1)
        for lineno, piece in pieces:
            for m in DATE.finditer(piece):
                problems.append(f"{rel}:{lineno}: date {m.group(0)} in a comment or docstring "
                                f"(put dated figures on docs/performance.md)")
    return problems


# -- the package -------------------------------------------------------------

def test_module_docstrings_are_short_and_link_the_docs():
    problems = docstring_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_no_dates_in_comments_or_docstrings():
    problems = date_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_exceptions_are_still_needed():
    for rel in EXCEPTIONS:
        path = ROOT / rel
        assert path.is_file(), f"{rel} is in EXCEPTIONS but does not exist: drop it"


def test_the_sources_are_found():
    rels = {rel for rel, _, _ in _sources(ROOT)}
    assert {"fastws/__init__.py", "fastws/_py/frames.py", "fastws_ext/frames.pyx"} <= rels


# -- the checks fire ---------------------------------------------------------

def _write(root: pathlib.Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checks_fire(tmp_path):
    _write(tmp_path, "docs/design/real.md", "# Real\n\n## The part\n")
    long_doc = '"""Too long.\n' + "line\n" * 20 + 'See docs/design/real.md.\n"""\n'
    _write(tmp_path, "fastws/long.py", long_doc + "x = 1\n")
    _write(tmp_path, "fastws/nolink.py", '"""Four lines\n\nand no link.\n"""\n')
    _write(tmp_path, "fastws/missing.py", '"""Links a page\nthat is gone.\n\nSee docs/gone.md.\n"""\n')
    _write(tmp_path, "fastws/anchor.py", '"""An anchor\nthat is gone.\n\nSee docs/design/real.md#nope.\n"""\n')
    _write(tmp_path, "fastws/good.py", '"""Fine.\n\nSee docs/design/real.md#the-part.\n"""\n')
    _write(tmp_path, "fastws/short.py", '"""Three lines need\nno link."""\n')
    _write(tmp_path, "fastws/dated.py", '"""Short."""\nx = 1  # measured 2026-11-22: 5 us\n')
    _write(tmp_path, "fastws/dated_doc.py", 'def f():\n    """Fast since 2026-11-23."""\n')
    _write(tmp_path, "fastws_ext/long.pyx", "# cython: language_level=3\n" + long_doc)
    _write(tmp_path, "fastws_ext/dated.pyx", '"""Short."""\n# callgrind, 2026-12-01\n')
    _write(tmp_path, "fastws/excused.py", long_doc.replace("See docs/design/real.md.\n", ""))

    problems = "\n".join(docstring_problems(tmp_path, exceptions={"fastws/excused.py": "test"}))
    assert "fastws/long.py:1: module docstring of 23 lines" in problems
    assert "fastws_ext/long.pyx:2: module docstring of 23 lines" in problems
    assert "fastws/nolink.py:1: module docstring of 4 lines names no docs/...md page" in problems
    assert "fastws/missing.py:1: names docs/gone.md, which does not exist" in problems
    assert "fastws/anchor.py:1: names docs/design/real.md#nope" in problems
    for fine in ("good.py", "short.py", "excused.py"):
        assert fine not in problems

    dates = "\n".join(date_problems(tmp_path))
    assert "fastws/dated.py:2: date 2026-11-22" in dates
    assert "fastws/dated_doc.py:2: date 2026-11-23" in dates
    assert "fastws_ext/dated.pyx:2: date 2026-12-01" in dates
    assert "good.py" not in dates


@pytest.mark.parametrize("source, expected", [
    ("x = '2026-11-22'\n", []),                      # a string in code is not a comment or docstring
    ("# 2026-11-22\n", ["2026-11-22"]),
])
def test_dates_only_in_comments_and_docstrings_of_python(tmp_path, source, expected):
    _write(tmp_path, "fastws/m.py", source)
    assert [p.split("date ")[1].split()[0] for p in date_problems(tmp_path)] == expected
