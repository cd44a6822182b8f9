"""The package's structure, read with ``ast`` (nothing is imported or run).

Three rules, each a test that names the offending file and line:

1. no import cycle among fastws's modules, lazy imports (inside functions)
   included: a cycle hidden by a lazy import is still a cycle;
2. every import runs from a layer to the same layer or a lower one, in the
   order declared in ``LAYERS`` below (the picture in
   docs/design/architecture.md); only the chooser (fastws.codec) imports the
   implementations (fastws_ext, fastws._py);
3. no private name (``_x``, not ``__x__``) is imported from another module or
   read as an attribute of an imported module.
"""
from __future__ import annotations

import ast
import fnmatch
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastws"

# Bottom to top. A module imports only from its own layer or those below.
LAYERS = [
    ["constants", "version"],
    ["exceptions"],
    ["_py", "_py.*"],                                   # the pure-Python twins (fastws_ext beside them)
    ["codec", "options", "http", "ratelimit", "proxyproto"],  # the chooser; settings; HTTP/1.1;
                                                        # rate parsing, per-IP limits; the PROXY protocol
    ["handshake", "deflate", "timers", "listener", "auth", "proxy"],  # RFC 6455 4, RFC 7692, the wheel's driver, JWT, proxy tunnels
    ["protocol"],                                       # the sans-I/O connection core
    ["transport", "websocket", "pubsub"],               # the asyncio adapter, the handler API, fan-out
    ["metrics", "presence", "server", "client", "syncclient", "broker", "redis_cluster"],
    ["runner", "workers"],
    ["apps", "apps.*", "integrations", "integrations.*"],
    ["cli", "uvicorn", "locust", "__main__", "__init__"],  # the command and the public paths
]
CHOOSER = "codec"


def _modules() -> dict:
    """Dotted name (without "fastws.") -> path, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(name: str) -> int:
    for i, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return i
    raise AssertionError(f"fastws.{name} is in no layer of tests/test_architecture.py: add it")


def _package_of(name: str, path: pathlib.Path) -> list:
    parts = name.split(".") if name != "__init__" else []
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(name: str, path: pathlib.Path):
    """(line, target module or None, imported names, external) for every
    import statement of a module; the target is a fastws module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _package_of(name, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "fastws" or alias.name.startswith("fastws."):
                    yield node.lineno, _resolve(alias.name[len("fastws."):] or "__init__"), [], alias.asname
                elif alias.name.split(".")[0] == "fastws_ext":
                    yield node.lineno, "fastws_ext", [], alias.asname
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path}:{node.lineno}: import beyond the package")
                dotted = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "fastws" or node.module.startswith("fastws.")):
                dotted = node.module[len("fastws."):] if node.module != "fastws" else ""
            elif node.module and node.module.split(".")[0] == "fastws_ext":
                yield node.lineno, "fastws_ext", names, None
                continue
            else:
                continue
            if node.module is None or dotted == "" or dotted in MODULES and any(
                    f"{dotted}.{n}" in MODULES for n in names):
                # `from . import handshake`: each name that is a module is an import of it
                for n in names:
                    sub = f"{dotted}.{n}" if dotted else n
                    if sub in MODULES:
                        yield node.lineno, sub, [], n
                    else:
                        yield node.lineno, _resolve(dotted or "__init__"), [n], None
            else:
                yield node.lineno, _resolve(dotted), names, None


def _resolve(dotted: str) -> str:
    if dotted in MODULES:
        return dotted
    raise AssertionError(f"import of fastws.{dotted}, which is not a module of the package")


def _graph() -> dict:
    return {name: {t for _, t, _, _ in _imports(name, path) if t not in (None, "fastws_ext") and t != name}
            for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_import_cycle():
    graph = _graph()
    state: dict = {}
    stack: list = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(f"fastws.{m}" for m in cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_imports_run_down_the_layers():
    wrong = []
    for name, path in MODULES.items():
        for line, target, _, _ in _imports(name, path):
            if target == "fastws_ext" or target == "_py" or target.startswith("_py."):
                if name != CHOOSER and not name.startswith("_py"):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports an implementation "
                                 f"({target}) directly; import it from fastws.codec")
                continue
            if _layer(target) > _layer(name):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: fastws.{name} (layer {_layer(name)}) "
                             f"imports fastws.{target} (layer {_layer(target)}), a higher layer")
    assert not wrong, "\n".join(wrong)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_crosses_a_module():
    wrong = []
    for name, path in MODULES.items():
        aliases = {}
        for line, target, names, alias in _imports(name, path):
            if target is None:
                continue
            for n in names:
                if _private(n):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {n} from {target}")
            if alias and target not in ("fastws_ext",) and not names:
                aliases[alias] = target
        if not aliases:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: reads "
                             f"{node.value.id}.{node.attr} (private to fastws.{aliases[node.value.id]})")
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_what_they_check(tmp_path, monkeypatch):
    """The checks find a cycle, an upward import and a private import in a
    made-up package (so a green run is not a blind one)."""
    fake = tmp_path / "fastws"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "constants.py").write_text("from .protocol import X\n")
    (fake / "protocol.py").write_text("from .constants import _Y\nfrom . import constants\n"
                                      "Z = constants._W\n")
    import sys

    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "PACKAGE", fake)
    monkeypatch.setattr(mod, "MODULES", _modules())
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycle()
    with pytest.raises(AssertionError, match="a higher layer"):
        test_imports_run_down_the_layers()
    with pytest.raises(AssertionError, match="imports _Y") as info:
        test_no_private_name_crosses_a_module()
    assert "constants._W" in str(info.value)
