"""Ingest with real skymaps: the elevation field of view, el/az/lat/lon beside the frames, keograms."""

import shutil
from pathlib import Path

import numpy as np
import pytest

import aurora_pipeline
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.store import Store, hour_facts
from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.synth.archive import write_synthetic_archive

SKYMAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "skymaps"
GAKO = "themis_skymap_gako_20110305-+_vXX.sav"


@pytest.fixture
def skymap_tree(tmp_path):
    if not (SKYMAPS / GAKO).exists():
        pytest.skip(f"real skymap not found at {SKYMAPS / GAKO} (../shared/data is absent)")
    tree = tmp_path / "skymaps"
    tree.mkdir()
    shutil.copy(SKYMAPS / GAKO, tree / GAKO)
    return tree


def test_ingest_with_skymaps_stores_coordinates_and_the_skymap_used(tmp_path, skymap_tree):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], start="2011-03-06T04", hours=1, frames_per_hour=4, size=256)
    write_synthetic_archive(archive, sites=["gako"], start="2011-03-01T04", hours=1, frames_per_hour=4, size=256)
    cfg = PreprocessConfig(fov="elevation", image_size=32)
    report = ingest(list_archive(archive), store, cfg, skymaps=str(skymap_tree))
    assert [o.file.hour_code for o in report.ingested] == ["2011030604"]
    failure = read_failures(store)
    assert len(failure) == 1 and "2011-03-05" in failure["problem"].iloc[0] + failure["fix"].iloc[0]
    ds = aurora_pipeline.open_site(store, "gako")
    assert {"el", "az", "lat", "lon"} <= set(ds.coords) and ds.el.dims == ("y", "x") and ds.el.shape == (32, 32)
    assert ds.attrs["skymap_file"] == GAKO and set(ds.skymap.values) == {GAKO}
    assert ds.lat.attrs["units"] == "degrees_north" and np.nanmax(ds.el.values) > 80
    low = np.nan_to_num(ds.el.values, nan=-90.0) < 5.0  # well below the 13.5 degree cut (resizing blurs the edge)
    assert low.any() and (ds.frames.values[:, low] == 0).all()
    facts = hour_facts(Store.open(store), "gako")
    assert facts["skymap"].tolist() == [GAKO]
    keo = aurora_pipeline.keogram(store, "gako", coordinate="latitude")
    assert keo.sizes["time"] == 4 and 60 < float(keo.latitude.mean()) < 65


def test_skymap_setting_and_store_must_agree(tmp_path, skymap_tree):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    write_synthetic_archive(archive, sites=["gako"], start="2011-03-06T04", hours=1, frames_per_hour=2, size=256)
    ingest(list_archive(archive), store, PreprocessConfig(image_size=32))  # no skymap: OATH framing
    with pytest.raises(BadInputError, match="made without skymaps \\(fov=oath\\)"):
        ingest(list_archive(archive), store, skymaps=str(skymap_tree))
