"""Ingest with skymaps when a skymap is bad: that site's files fail, the others land, a refused first run makes nothing.

Uses the real UCalgary skymaps of ../shared/data (gako's and atha's, both valid in
February 2023), copied to a temporary tree per test; a skymap is "damaged" by
truncating the copy. Skips when ../shared/data is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aurora_pipeline.store.read import hour_facts

import aurora_pipeline
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.store import Store
from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.synth.archive import write_synthetic_archive

SKYMAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "skymaps"
GAKO = "themis_skymap_gako_20110305-+_vXX.sav"
ATHA = "themis_skymap_atha_20230115-+_v02.sav"
HOUR = "2023-02-01T04"  # after both skymaps' first valid day
ELEVATION_32 = PreprocessConfig(fov="elevation", image_size=32)


@pytest.fixture
def skymap_tree(tmp_path) -> Path:
    """A copy of the real gako and atha skymaps, in a flat folder."""
    if not (SKYMAPS / GAKO).is_file() or not (SKYMAPS / ATHA).is_file():
        pytest.skip(f"the real skymaps are not in {SKYMAPS} (../shared/data is absent)")
    tree = tmp_path / "skymaps"
    tree.mkdir()
    for name in (GAKO, ATHA):
        shutil.copy(SKYMAPS / name, tree / name)
    return tree


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def archive_of(root: Path, sites: list[str], start: str = HOUR) -> Path:
    write_synthetic_archive(root, sites=sites, start=start, hours=1, frames_per_hour=2, size=256)
    return root


def test_a_corrupt_skymap_fails_only_its_sites_files(tmp_path, skymap_tree):
    truncate(skymap_tree / GAKO)
    archive, store = archive_of(tmp_path / "archive", ["gako", "atha"]), tmp_path / "s.zarr"
    report = ingest(list_archive(archive), store, ELEVATION_32, skymaps=str(skymap_tree))
    assert [(o.file.site, o.status) for o in report.outcomes] == [("atha", "ingested"), ("gako", "failed")]
    failures = read_failures(store)
    assert failures["site"].tolist() == ["gako"]
    assert GAKO in failures["problem"].iloc[0] and "not a readable IDL save file" in failures["problem"].iloc[0]
    assert "Download the skymap file again" in failures["fix"].iloc[0]
    assert aurora_pipeline.open_site(store, "atha").sizes["time"] == 2
    assert Store.open(store).sites() == ["atha"]


def test_a_refused_first_skymap_run_leaves_no_store_behind(tmp_path, skymap_tree):
    truncate(skymap_tree / GAKO)
    archive, store = archive_of(tmp_path / "archive", ["gako"]), tmp_path / "s.zarr"
    with pytest.raises(BadInputError, match=GAKO.replace("+", r"\+")) as refused:
        ingest(list_archive(archive), store, ELEVATION_32, skymaps=str(skymap_tree))
    assert "Download the skymap file again" in str(refused.value)
    assert not store.exists(), "a refused first run left a store behind"
    plain = ingest(list_archive(archive), store, PreprocessConfig(image_size=32))  # the default: no skymap needed
    assert len(plain.ingested) == 1 and Store.open(store).preprocess["fov"] == PreprocessConfig().fov


def test_the_store_records_its_skymaps_and_a_plain_ingest_uses_them(tmp_path, skymap_tree, monkeypatch):
    archive, store = archive_of(tmp_path / "archive", ["atha"]), tmp_path / "s.zarr"
    monkeypatch.chdir(tmp_path)  # a relative --skymaps is recorded as an absolute path
    ingest(list_archive(archive), store, ELEVATION_32, skymaps="skymaps")
    assert Store.open(store).skymaps == str(skymap_tree)
    archive_of(archive, ["atha"], start="2023-02-01T05")  # the next hour
    report = ingest(list_archive(archive), store)  # no skymaps given: the store's own
    assert [o.file.hour_code for o in report.ingested] == ["2023020105"] and not report.failed
    facts = hour_facts(store, "atha")
    assert facts["skymap"].tolist() == [ATHA, ATHA]
