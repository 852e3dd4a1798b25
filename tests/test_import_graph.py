"""The import graph of aurora_pipeline, flows and aurora_cli has no cycles, and imports inside
functions are kept for heavy optional imports only.

The graph is read from the source with ``ast`` (every ``import`` statement, at module
level, inside functions and under ``TYPE_CHECKING`` alike), so a cycle hidden by a
function-level import still counts as one.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
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


def _function_imports(tree: ast.AST):
    """The import statements that sit inside a function (at any depth)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    yield child


def unexplained_imports(source: str) -> list[int]:
    """Line numbers of the function-level imports of ``source`` with no comment saying why: a
    comment on the statement's lines, or on the line above it, or above the run of imports (blank
    lines between them allowed) it belongs to, e.g. ``# torch: only when training``."""
    lines = source.splitlines()
    tree = ast.parse(source)
    imports = {n.lineno: n for n in _function_imports(tree)}
    import_lines = {i for n in imports.values() for i in range(n.lineno, n.end_lineno + 1)}
    commented = {i for i in import_lines if "#" in lines[i - 1]}
    missing = set()
    for start, node in imports.items():
        if any(i in commented for i in range(start, node.end_lineno + 1)):
            continue
        i = start - 1
        while i >= 1 and (not lines[i - 1].strip() or (i in import_lines and i not in commented)):
            i -= 1
        if i >= 1 and (lines[i - 1].strip().startswith("#") or i in commented):
            continue
        missing.add(start)
    return sorted({min(i for i in range(n.lineno, n.end_lineno + 1)) for n in imports.values() if n.lineno in missing})


def test_every_import_inside_a_function_says_why():
    """Imports inside functions are kept for what is heavy (torch, FAISS, scikit-learn, prefect,
    the flows on the CLI's parse path ...), each with a comment saying so; the others sit at the top."""
    found = {}
    for module, path in module_names().items():
        lines = unexplained_imports(path.read_text())
        if lines:
            found[str(path.relative_to(REPO))] = lines
    assert found == {}


def test_the_comment_check_finds_an_unexplained_import():
    source = ("def f():\n"
              "    import json\n"
              "\n"
              "    # torch: only when training\n"
              "    import torch\n"
              "\n"
              "    import torch.nn\n"
              "    x = 1\n"
              "    import faiss  # FAISS: only for a search\n"
              "    import os\n"
              "    y = 2\n"
              "    import re\n")
    assert unexplained_imports(source) == [2, 12]


HEAVY = ("torch", "torchvision", "faiss", "sklearn", "matplotlib", "prefect", "scipy", "dask", "distributed",
         "numpy", "pandas", "xarray", "zarr")


def _imported_by(code: str, packages=HEAVY) -> list[str]:
    """The top-level ``packages`` that ``code`` leaves in ``sys.modules``, run in a new interpreter on this tree."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({packages!r}))))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_the_command_line_starts_without_the_heavy_libraries():
    """`import aurora_cli.main` and the parse of a command (the options are built from the stage
    configs) import none of torch, FAISS, scikit-learn, matplotlib, prefect, nor numpy and the store's
    libraries: a command the warm runner takes, or `aurora-pipeline server status`, pays for none of them."""
    assert _imported_by("import aurora_cli.main", HEAVY + ("aurora_pipeline", "flows")) == []  # see its top
    parse = ("import aurora_cli.main as cli\n"
             "args = cli.build_parser().parse_args(['server', 'status'])\n"
             "cli.check_values(args)")
    assert _imported_by(parse) == []
