"""The import graph of aurora_pipeline, flows and aurora_cli has no cycles, and imports inside
functions are kept for heavy optional imports only.

The graph is read from the source with ``ast`` (every ``import`` statement, at module
level, inside functions and under ``TYPE_CHECKING`` alike), so a cycle hidden by a
function-level import still counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("aurora_pipeline", "flows", "aurora_cli")


def module_names() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement names (a name imported from a package
    counts as the submodule when there is one, else as the package)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    else:
        return names
    for target in targets:
        while target and target not in known:  # `import a.b.c` of a function in a.b
            target = target.rpartition(".")[0]
        if target and target != module:
            names.add(target)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source."""
    modules = module_names()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            edges |= _imported(node, name, path.name == "__init__.py", known)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_edges_ok(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without a package's edges to its own submodules (an ``__init__`` that
    re-exports its submodules is not a cycle with them unless they import each other)."""
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}


def test_the_import_graph_has_no_cycles():
    graph = _package_edges_ok(import_graph())
    assert len(graph) > 80  # every module of the packages was read
    assert cycles(graph) == []


def test_the_packages_are_layered_library_flows_command_line():
    """aurora_pipeline imports neither flows nor aurora_cli, and flows does not import aurora_cli:
    the command line sits over both, the flows over the library."""
    above = {"aurora_pipeline": ("flows", "aurora_cli"), "flows": ("aurora_cli",)}
    wrong = {(module, target) for module, targets in import_graph().items()
             for target in targets if target.split(".")[0] in above.get(module.split(".")[0], ())}
    assert wrong == set()
    assert any(m.startswith("aurora_cli.") for m in import_graph())  # the command line was read too


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
