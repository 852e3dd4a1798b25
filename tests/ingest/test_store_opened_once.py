"""An ingest opens its store from the path once and hands the ``Store`` down (issue 19, item 3).

``Store.open`` is wrapped by a counter that calls the real classmethod: nothing is mocked,
the ingest runs as it always does, and the test reads how often a store was opened.
"""

import pytest

from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.ingest.setting import ingest_setting
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.store import Store, hour_facts
from aurora_pipeline.store.core import open_existing_store
from aurora_pipeline.synth.archive import write_synthetic_archive


@pytest.fixture
def opens(monkeypatch) -> list[tuple[str, str]]:
    """(what was opened, mode) of every call of ``Store.open`` while the test runs."""
    calls: list[tuple[str, str]] = []
    real = Store.open.__func__

    def counted(cls, store, storage_options=None, mode="r"):
        calls.append((type(store).__name__, mode))
        return real(cls, store, storage_options, mode)

    monkeypatch.setattr(Store, "open", classmethod(counted))
    return calls


@pytest.fixture
def archive(tmp_path):
    write_synthetic_archive(tmp_path / "archive", sites=["gill"], start="2011-01-06T04", hours=3, frames_per_hour=12,
                            size=64)
    return tmp_path / "archive"


def test_an_ingest_into_an_existing_store_opens_it_once(tmp_path, archive, opens):
    store = tmp_path / "s.zarr"
    ingest(list_archive(archive, sites=["gill"], end="2011-01-06T05"), store, PreprocessConfig(image_size=16))
    opens.clear()
    report = ingest(list_archive(archive, sites=["gill"]), store)  # the store's own setting; two new hours, one stored
    assert report.summary()["files_ingested"] == 2 and len(report.skipped) == 1
    assert opens == [("PosixPath", "r+")]
    assert len(hour_facts(Store.open(store), "gill")) == 3


def test_the_cli_chain_opens_an_existing_store_once(tmp_path, archive, opens):
    """What `aurora-pipeline ingest` (the flow ingest-archive) does: open, resolve the setting, ingest."""
    store = str(tmp_path / "s.zarr")
    ingest(list_archive(archive, sites=["gill"], end="2011-01-06T05"), store, PreprocessConfig(image_size=16))
    opens.clear()
    st = open_existing_store(store)
    cfg = ingest_setting(st, image_size=None)
    ingest(list_archive(archive, sites=["gill"]), st or store, cfg)
    assert opens == [("str", "r+")]


def test_the_cli_chain_into_a_new_store(tmp_path, archive, opens):
    """A new store: the flow's look finds none (the setting is a new store's), the ingest looks again, then makes it."""
    store = str(tmp_path / "new.zarr")
    st = open_existing_store(store)
    cfg = ingest_setting(st, image_size=16)
    ingest(list_archive(archive, sites=["gill"]), st or store, cfg)
    assert st is None and opens == [("str", "r+"), ("str", "r+"), ("str", "a")]


def test_a_first_ingest_looks_once_then_makes_the_store_once(tmp_path, archive, opens):
    """A new store: one open that finds none (nothing is made before the setting is settled), one that makes it."""
    store = tmp_path / "new.zarr"
    report = ingest(list_archive(archive, sites=["gill"]), store, PreprocessConfig(image_size=16))
    assert report.summary()["files_ingested"] == 3
    assert opens == [("PosixPath", "r+"), ("PosixPath", "a")]
