"""The similarity index never disagrees with the store silently (issue 18, items 2-5, 17, 20).

The setup of the issue at small sizes: 2 sites x 2 hours x 48 frames at 32 px, an encoder
trained 1 epoch, embedded, classified, and indexed with a plain ``index`` (no checkpoint).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aurora_pipeline.classify.driver import classify_store, fit_from_store
from aurora_pipeline.classify.model import ClassifierConfig, load_classifier
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.encoder.train import PretrainConfig, pretrain
from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.errors import BadInputError, StoreError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.search.driver import index_store
from aurora_pipeline.search.query import open_index, similar
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.store import SLOTS_PER_HOUR, Store, read_slots
from aurora_pipeline.synth.archive import write_synthetic_archive

START = np.datetime64("2011-01-06T04", "h")
FRAMES = 48


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("true-to-store")
    archive, store = root / "archive", root / "s1.zarr"
    write_synthetic_archive(archive, sites=["gako", "gill"], start=str(START), hours=2, frames_per_hour=FRAMES)
    ingest(list_archive(str(archive)), store, PreprocessConfig(image_size=32))
    frames, provenance = load_training_frames(store)
    pretrain(frames, PretrainConfig(epochs=1, batch_size=16, image_size=32, seed=0, device="cpu"), root / "ck1",
             provenance=provenance)
    embed_with_checkpoint(store, str(root / "ck1"), device="cpu")
    fit_from_store(store, archive / "labels.csv", root / "clf1", ClassifierConfig(cv_folds=2), strict=False)
    classify_store(store, load_classifier(root / "clf1"))
    index_store(store)  # a plain `index`: no --checkpoint
    return root, archive, store


@pytest.fixture
def s1(indexed, tmp_path):
    root, archive, store = indexed
    copy = tmp_path / "s1.zarr"
    shutil.copytree(store, copy)
    shutil.copytree(str(store) + ".index", str(copy) + ".index")
    return root, archive, copy


def _brute_force(store, query_site, query_time, start, end):
    """Every other stored frame in [start, end) ranked by cosine to the stored frame nearest
    ``query_time`` (the truth), best first: {(site, time): score} in that order."""
    import aurora_pipeline

    ds = aurora_pipeline.open_sites(store, variables=["embedding"])
    emb = ds.embedding.values / np.linalg.norm(ds.embedding.values, axis=1, keepdims=True)
    times, sites = ds.time.values.astype("datetime64[ms]"), ds.site.values
    distance = np.abs((times - np.datetime64(query_time, "ms")).astype(np.int64))
    i = int(np.argmin(np.where(sites == query_site, distance, np.iinfo(np.int64).max)))
    keep = (times >= np.datetime64(start, "ms")) & (times < np.datetime64(end, "ms"))
    keep[i] = False
    scores = emb[keep] @ emb[i]
    order = np.argsort(-scores, kind="stable")
    return dict(zip(zip(sites[keep][order], times[keep][order]), scores[order]))


def _assert_exact(df, truth, k):
    """``df`` is the best ``k`` of ``truth``, best first (frames tied to float rounding in either order)."""
    returned = list(zip(df.site, df.time.to_numpy()))
    assert len(returned) == min(k, len(truth)) and len(set(returned)) == len(returned)
    np.testing.assert_allclose(df.score, [truth[f] for f in returned], atol=1e-5)  # each frame's own score
    np.testing.assert_allclose(df.score, list(truth.values())[:len(returned)], atol=1e-5)  # and the best ones


# ---- item 2 and 17: the index folder ----------------------------------------------------------

def test_a_folder_that_is_neither_empty_nor_an_index_is_refused_and_kept(s1, tmp_path):
    _, _, store = s1
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("index-notes.txt", "catalog-2011.csv"):
        (folder / name).write_text("the user's own file\n")
    with pytest.raises(BadInputError, match=f"{folder}.*neither empty nor a similarity index"):
        index_store(store, index=str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["catalog-2011.csv", "index-notes.txt"]


def _named(location):
    return {f["name"] for f in json.loads(Path(location, "index.json").read_text())["files"].values()}


def test_only_the_files_the_replaced_index_named_are_deleted(s1):
    _, _, store = s1
    location = open_index(store).location
    for name in ("index-my-notes.txt", "catalog-backup.npz"):
        Path(location, name).write_text("the user's own file\n")
    old = _named(location)
    index_store(store, rebuild=True, sites=["gill"])  # other contents: other file names
    new = _named(location)
    assert old.isdisjoint(new)
    assert {p.name for p in Path(location).iterdir()} == {"index.json", "index-my-notes.txt", "catalog-backup.npz", *new}


def test_an_index_inside_the_store_is_refused(s1):
    _, _, store = s1
    for inside in (str(store), f"{store}/index"):
        with pytest.raises(BadInputError, match="inside the store"):
            index_store(store, index=inside)
    assert not (store / "index.json").exists() and not (store / "index").exists()


# ---- items 3-5: the store changed under the index ---------------------------------------------

def test_a_query_embedded_by_another_encoder_is_refused_and_its_hours_left_out(s1, tmp_path):
    root, _, store = s1
    frames, _ = load_training_frames(store)
    other = pretrain(frames[:32], PretrainConfig(epochs=1, batch_size=16, image_size=32, seed=1, device="cpu"),
                     tmp_path / "ck2", provenance={})
    embed_with_checkpoint(store, str(tmp_path / "ck2"), sites=["gako"], start=str(START),
                          end=str(START + np.timedelta64(1, "h")), device="cpu", overwrite=True)
    with pytest.raises(StoreError, match=f"embedded by {other.model_id}.*index --store {store} --rebuild --model"):
        similar(store, site="gako", time="2011-01-06T04:10:00")
    df = similar(store, site="gill", time="2011-01-06T04:10:00", k=4 * FRAMES, min_separation=0)
    hours = df.time.to_numpy().astype("datetime64[h]")
    assert len(df) == 3 * FRAMES - 1  # every frame of the index's model, none of the other's
    assert not ((df.site == "gako") & (hours == START)).any()
    assert any(other.model_id in note and "left out" in note for note in df.attrs["notes"])


def test_a_reissued_hour_with_fewer_frames_leaves_no_derived_value_and_no_phantom(s1, tmp_path):
    root, _, store = s1
    hour = START + np.timedelta64(1, "h")
    reissued = tmp_path / "reissued"
    write_synthetic_archive(reissued, sites=["gill"], start=str(hour), hours=1, frames_per_hour=40, seed=7)
    ingest(list_archive(str(reissued)), store, PreprocessConfig(image_size=32), skip_stored=False)
    st = Store.open(store)
    first = int((hour - np.datetime64("2011-01-01T00", "h")).astype(int)) * SLOTS_PER_HOUR
    gone = np.arange(first + 40, first + FRAMES)
    assert (read_slots(st, "gill", 2011, gone, "label") == -1).all()
    assert np.isnan(read_slots(st, "gill", 2011, gone, "label_probability")).all()
    assert np.isnan(read_slots(st, "gill", 2011, np.arange(first, first + FRAMES), "embedding")).all()
    embed_with_checkpoint(store, str(root / "ck1"), device="cpu")  # re-embedded; index not rebuilt
    query = ("gako", np.datetime64("2011-01-06T04:10:00", "ms"))
    df = similar(store, site=query[0], time=query[1], k=4 * FRAMES, min_separation=0)
    assert len(df) == 3 * FRAMES + 40 - 1 and not df.duplicated(["site", "time"]).any()
    assert (df.time.to_numpy() >= np.datetime64("2011-01-06T04", "ms")).all()  # no 1969-12-31 23:59:59.999
    truth = _brute_force(store, *query, "2011-01-06T04", "2011-01-06T06")
    _assert_exact(df, truth, 4 * FRAMES)
    assert any("searched exactly" in note for note in df.attrs["notes"])


def test_hours_newer_than_the_index_are_searched_exactly_until_the_next_index(s1, tmp_path):
    root, _, store = s1
    late = tmp_path / "late"
    write_synthetic_archive(late, sites=["gako"], start=str(START + np.timedelta64(2, "h")), hours=1,
                            frames_per_hour=FRAMES, seed=3)
    ingest(list_archive(str(late)), store, PreprocessConfig(image_size=32))
    embed_with_checkpoint(store, str(root / "ck1"), device="cpu")
    query = ("gill", np.datetime64("2011-01-06T04:10:00", "ms"))
    df = similar(store, site=query[0], time=query[1], k=10, min_separation=0, start="2011-01-06T06",
                 end="2011-01-06T07")
    truth = _brute_force(store, *query, "2011-01-06T06", "2011-01-06T07")
    _assert_exact(df, truth, 10)
    assert any("1 hour(s)" in note and "searched exactly" in note and f"index --store {store}" in note
               for note in df.attrs["notes"])
    index_store(store)  # brought up to date: nothing left to search exactly
    again = similar(store, site=query[0], time=query[1], k=10, min_separation=0, start="2011-01-06T06",
                    end="2011-01-06T07")
    _assert_exact(again, truth, 10)
    assert again.attrs["notes"] == []


# ---- items 17 and 20: the query ----------------------------------------------------------------

def test_image_queries_work_after_a_plain_index(indexed):
    root, archive, store = indexed
    file = [f for f in list_archive(str(archive)) if f.site == "gill"][0]
    assert open_index(store).meta["checkpoint"] is not None
    by_cdf = similar(store, cdf=file.url, frame=7, k=5, min_separation=0)
    assert len(by_cdf) == 5


def test_an_unknown_site_code_is_named(indexed):
    _, _, store = indexed
    with pytest.raises(BadInputError, match="unknown THEMIS ASI site code.*gakk"):
        similar(store, site="gakk", time="2011-01-06T04:10:00")
    with pytest.raises(BadInputError, match="unknown THEMIS ASI site code.*gilk"):
        similar(store, site="gako", time="2011-01-06T04:10:00", sites=["gilk"])


# ---- "what a user gets": two writers of one index ----------------------------------------------

def test_two_writers_of_one_index_never_delete_each_others_files(s1):
    _, _, store = s1
    location = open_index(store).location
    inner = {}

    def meanwhile(site, hour, frames):  # a second library caller runs while the first is building
        if not inner:
            inner["summary"] = index_store(store, rebuild=True, sites=["gill"])

    with pytest.raises(StoreError, match=f"{location}.*replaced by another run.*index --store {store}"):
        index_store(store, rebuild=True, on_hour=meanwhile)
    saved = open_index(store)  # the second caller's index, whole: every file it names is there
    assert saved.catalog.sites == ["gill"] and saved.catalog.n_vectors == inner["summary"]["vectors"] == 2 * FRAMES
    assert {p.name for p in Path(location).iterdir()} == {"index.json", *_named(location)}
