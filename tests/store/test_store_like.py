"""Every public library function that takes a store says what it takes: ``StoreLike`` (a path,
an fsspec URL or a ``Store``), and ``open_store`` turns any of them into a ``Store``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_only_open_store_calls_store_open():
    """``open_store`` is the one edge: library code, flows and the CLI never call ``Store.open`` themselves."""
    root = PACKAGE.parent
    callers = [f"{p.relative_to(root)}:{n}" for folder in ("aurora_pipeline", "flows", "aurora_cli")
               for p in sorted((root / folder).rglob("*.py")) if p != PACKAGE / "store" / "core.py"
               for n, line in enumerate(p.read_text().splitlines(), 1) if "Store.open(" in line]
    assert callers == []


def test_open_store_hands_a_store_on_without_opening(tmp_path, monkeypatch):
    st = open_store(tmp_path / "s.zarr", mode="a")
    opened = []
    real = Store.open.__func__
    monkeypatch.setattr(Store, "open", classmethod(lambda cls, *a, **k: opened.append(a) or real(cls, *a, **k)))
    assert open_store(st) is st and open_store(st, mode="r+") is st and open_store(st, mode="a") is st
    assert opened == []
    reader = open_store(tmp_path / "s.zarr")
    assert open_store(reader, mode="r+") is not reader and len(opened) == 2  # a read-only Store is reopened to write


def test_r_plus_opens_an_existing_store_for_writing_and_makes_none(tmp_path):
    from aurora_pipeline.errors import NoStoreError
    from aurora_pipeline.store.core import open_existing_store

    with pytest.raises(NoStoreError):
        open_store(tmp_path / "none.zarr", mode="r+")
    assert open_existing_store(tmp_path / "none.zarr") is None and not (tmp_path / "none.zarr").exists()
    open_store(tmp_path / "s.zarr", mode="a")
    st = open_existing_store(tmp_path / "s.zarr")
    st.add_history("written through r+")
    assert "written through r+" in open_store(tmp_path / "s.zarr").attrs["history"]
