"""The import rules of the house, checked over the source tree with ``ast``.

Sources (``argocd/``, ``webrca/``) produce plain records and never import the
sink (``devlake/``, the outbox, the resolver stage); the sink and the streams
never import the sources; and the import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "doraforwarder"

SOURCES = ("doraforwarder.argocd", "doraforwarder.webrca", "doraforwarder.alertmanager")
SINK = ("doraforwarder.devlake", "doraforwarder.outbox", "doraforwarder.commits.stage")
NEUTRAL = ("doraforwarder.streams",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``doraforwarder`` module ``path`` imports, lazily or not (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" \
        else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("doraforwarder")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for imported in _imports(path):
            # ``from a.b import c`` names a module or an attribute: keep what exists,
            # and importing a module runs its packages' ``__init__`` first.
            target = imported if imported in modules else imported.rpartition(".")[0]
            while target and target in modules:
                if target != name and not name.startswith(target + "."):
                    edges.add(target)
                target = target.rpartition(".")[0]
        graph[name] = edges
    return graph


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GRAPH = _graph()

@pytest.mark.parametrize(("importer", "forbidden"), [
    (SOURCES, SINK),
    (SINK + NEUTRAL, SOURCES),
], ids=["sources do not import the sink", "the sink and streams do not import sources"])
def test_layer_rule(importer: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    broken = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if _within(module, importer)
        for target in targets if _within(target, forbidden)
    )
    assert broken == []


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert [" -> ".join(c) for c in cycles] == []
