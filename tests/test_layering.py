"""Data flows one way: hub -> fingerprints -> store -> alerts/queries.

Each lower layer imports only itself and the layers it is allowed to know; anything that needs two
layers' types (a Hub model turned into a store record, say) lives in the layer that drives the flow
(``bot/watch``). The imports are read from the source (every ``import`` statement, at any depth, type-
checking ones included), so a lazy import inside a function cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("bot", "fingerprints", "store")

# Package -> the first-party packages its modules may import. bot.errors is the application's error
# root, which every layer's errors derive from; bot.tls the TLS context every HTTP client shares.
ALLOWED = {
    "fingerprints": ("fingerprints",),  # pure computation over a byte-range reader
    "store": ("store", "fingerprints"),
    "bot.hub": ("bot.hub", "bot.errors", "bot.tls", "fingerprints"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved; ``from p
    import n`` names the module ``p.n`` where that is one of ``modules``, else ``p``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += sorted({(node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
                             for alias in node.names})
    return sorted(found)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package]
    out = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        for line, name in imported_modules(path):
            if name.split(".")[0] in FIRST_PARTY and not any(within(name, a) for a in allowed):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def import_cycles() -> list[list[str]]:
    """The first-party modules that import each other round a loop (type-checking imports count:
    they are the same coupling, only deferred), one sorted list per loop."""
    modules = {module_name(p): p for pkg in FIRST_PARTY for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: {n for _, n in imported_modules(p, frozenset(modules)) if n in modules and n != m}
             for m, p in modules.items()}
    # Tarjan's strongly connected components, iteratively (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_no_import_cycles():
    assert import_cycles() == []


def test_the_cycle_check_sees_a_type_checking_loop(tmp_path, monkeypatch):
    pkg = tmp_path / "bot" / "hub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "client.py").write_text("from bot.hub.reader import Reader\n")
    (pkg / "reader.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    from bot.hub import client\n")
    (pkg / "urls.py").write_text("from . import reader\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert import_cycles() == [["bot.hub.client", "bot.hub.reader"]]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_the_flow_allows(package):
    assert violations(package) == [], f"{package} may import only {ALLOWED[package]}"


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The walk finds every import form: top-level, lazy in a function, relative."""
    pkg = tmp_path / "bot" / "hub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import fingerprints.model\n"
                                "def f():\n    from store.records import ModelRecord\n"
                                "from ..watch import records\nfrom . import client\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations("bot.hub") == ["bot/hub/bad.py:3 imports store.records", "bot/hub/bad.py:4 imports bot.watch"]
