"""Every public library function that takes a store says what it takes: ``StoreLike`` (a path,
an fsspec URL or a ``Store``), and ``open_store`` turns any of them into a ``Store``."""

from __future__ import annotations

import ast
from pathlib import Path

from aurora_pipeline.store import Store, StoreLike, open_store

PACKAGE = Path(__file__).resolve().parents[2] / "aurora_pipeline"
# store/locks.py and store/formats.py are imported by store/core.py, so they cannot name its alias;
# and so is store/damage.py (Store.open names the damaged objects it finds)
EXEMPT = {"store/locks.py", "store/formats.py", "store/damage.py"}
URL_ONLY = {"index_location", "load_index"}  # search/saved.py: they take the store's URL, to name the index beside it


def test_every_public_store_parameter_is_store_like():
    untyped = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg == "store" and node.name not in URL_ONLY and (arg.annotation is None or "StoreLike" not in ast.unparse(arg.annotation)):
                        untyped.append(f"{name}:{node.lineno} {node.name}")
    assert untyped == []


def test_open_store_takes_a_path_or_a_store(tmp_path):
    st = open_store(tmp_path / "s.zarr", mode="a")
    assert isinstance(st, Store) and open_store(st) is st
    assert isinstance(open_store(str(tmp_path / "s.zarr")), Store)
    assert isinstance(st, StoreLike) and isinstance(str(tmp_path), StoreLike)
