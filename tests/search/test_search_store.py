"""The similarity index on a real store of the synthetic archive: build, update, query, refuse."""

import argparse
import shutil

import numpy as np
import pandas as pd
import pytest

import aurora_pipeline
from aurora_pipeline.classify.driver import classify_store, fit_from_store
from aurora_pipeline.classify.labels_csv import read_labels_csv
from aurora_pipeline.classify.model import ClassifierConfig, load_classifier
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.encoder.train import PretrainConfig, pretrain
from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.errors import BadInputError, CheckpointError, StoreError
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.pngio import write_png16
from aurora_pipeline.search.config import IndexConfig
from aurora_pipeline.search.driver import build_index, index_store, update_index
from aurora_pipeline.search.query import open_index, similar
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.source.cdf import read_asi_cdf
from aurora_pipeline.store import Store
from aurora_pipeline.synth.archive import write_synthetic_archive

START = np.datetime64("2011-01-06T04", "h")
LATE = ("gako", START + np.timedelta64(2, "h"))  # arrives after the index is built
SMALL_IVF = IndexConfig(exact_below=100, nlist=8, pca_dim=64, pq_m=32, train_per_list=40)


def _files(archive, site=None, hour=None):
    files = list_archive(str(archive))
    return [f for f in files if (site is None or f.site == site) and (hour is None or f.hour == hour)]


def _embed_and_label(store, encoder, classifier, **range_):
    embed_with_checkpoint(store, str(encoder), device="cpu", **range_)
    classify_store(store, load_classifier(classifier), **range_)


@pytest.fixture(scope="module")
def archive_store(tmp_path_factory):
    """2 sites x 4 hours x 60 frames at 32 px, one hour held back; trained 1 epoch, embedded, labelled."""
    root = tmp_path_factory.mktemp("search")
    archive, store = root / "archive", root / "store.zarr"
    write_synthetic_archive(archive, sites=["gako", "gill"], start=str(START), hours=4, frames_per_hour=60)
    ingest([f for f in _files(archive) if (f.site, f.hour) != LATE], store, PreprocessConfig(image_size=32))
    frames, provenance = load_training_frames(store)
    pretrain(frames, PretrainConfig(epochs=1, batch_size=16, image_size=32, seed=0, device="cpu"), root / "encoder",
             provenance=provenance)
    embed_with_checkpoint(store, str(root / "encoder"), device="cpu")
    fit_from_store(store, archive / "labels.csv", root / "classifier", ClassifierConfig(cv_folds=2), strict=False)
    classify_store(store, load_classifier(root / "classifier"))
    build_index(store, checkpoint=str(root / "encoder"))
    return root, archive, store


@pytest.fixture
def store_copy(archive_store, tmp_path):
    root, archive, store = archive_store
    copy = tmp_path / "store.zarr"
    shutil.copytree(store, copy)
    shutil.copytree(str(store) + ".index", str(copy) + ".index")
    return root, archive, copy


def _truth(archive):
    labels = read_labels_csv(archive / "labels.csv")
    return {(s, t): c for s, t, c in zip(labels.site, labels.time.astype("datetime64[ms]"), labels["class"])}


def _all_frames(store):
    ds = aurora_pipeline.open_sites(store, variables=["embedding", "label"])
    emb = ds.embedding.values
    return pd.DataFrame({"site": ds.site.values, "time": ds.time.values.astype("datetime64[ms]"),
                         "label": ds.label.values}), emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_neighbours_outside_the_query_hour_share_its_class_well_above_chance(archive_store):
    _, archive, store = archive_store
    truth = _truth(archive)
    frames, _ = _all_frames(store)
    frames["hour"] = frames.time.to_numpy().astype("datetime64[h]")
    frames["class"] = [truth[(s, t)] for s, t in zip(frames.site, frames.time.to_numpy())]
    index = open_index(store)
    hits, chance = [], []
    for _, q in frames.iloc[::12].iterrows():
        df = similar(store, site=q.site, time=q.time, k=80, min_separation=0, index=index)
        other = df[~((df.site == q.site) & (df.time.to_numpy().astype("datetime64[h]") == q.hour))].head(10)
        hits.append(np.mean([truth[(s, t)] == q["class"] for s, t in zip(other.site, other.time.to_numpy())]))
        pool = frames[~((frames.site == q.site) & (frames.hour == q.hour))]
        chance.append(np.mean(pool["class"] == q["class"]))
    assert len(hits) >= 30
    assert np.mean(hits) >= 1.5 * np.mean(chance) and np.mean(hits) >= np.mean(chance) + 0.15, (hits, chance)


def test_results_are_the_exact_neighbours_best_first_without_the_query(archive_store):
    _, _, store = archive_store
    frames, emb = _all_frames(store)
    i = 100
    df = similar(store, site=frames.site[i], time=frames.time[i], k=15, min_separation=0)
    assert list(df.columns) == ["site", "time", "score", "label", "label_probability", "cluster", "slot"]
    exact = emb @ emb[i]
    exact[i] = -np.inf
    # the 15 best scores, best first (frames whose scores tie to float rounding may come in either order)
    np.testing.assert_allclose(df.score, np.sort(exact)[::-1][:15], rtol=1e-5, atol=1e-6)
    position = {(s, t): j for j, (s, t) in enumerate(zip(frames.site, frames.time.to_numpy()))}
    returned = [position[(s, t)] for s, t in zip(df.site, df.time.to_numpy())]
    assert i not in returned and len(set(returned)) == 15
    np.testing.assert_allclose(df.score, exact[returned], rtol=1e-5, atol=1e-6)  # each frame's own score
    assert df.score.is_monotonic_decreasing
    assert df.label.notna().all() and ((df.label_probability > 0) & (df.label_probability <= 1)).all()


def test_filters_on_site_time_and_label_are_honoured(archive_store):
    _, _, store = archive_store
    frames, emb = _all_frames(store)
    i = 30
    start, end = START + np.timedelta64(1, "h"), START + np.timedelta64(3, "h") + np.timedelta64(20, "m")
    label = aurora_pipeline.open_sites(store).label.attrs["flag_meanings"].split()[int(frames.label[200])]
    df = similar(store, site=frames.site[i], time=frames.time[i], k=10, sites=["gill"], start=str(start),
                 end=str(end), label=label, min_separation=0)
    ok = ((frames.site == "gill") & (frames.time >= start) & (frames.time < end) & (frames.label == frames.label[200]))
    score = np.where(ok.to_numpy(), emb @ emb[i], -np.inf)
    order = np.argsort(-score, kind="stable")[:min(10, int(ok.sum()))]
    assert len(df) == len(order) > 0
    assert list(zip(df.site, df.time.to_numpy())) == list(zip(frames.site[order], frames.time.to_numpy()[order]))
    assert (df.label == label).all()
    with pytest.raises(BadInputError, match="not a class of the index"):
        similar(store, site=frames.site[i], time=frames.time[i], label="aurora-borealis")
    with pytest.raises(BadInputError, match="not in the index"):
        similar(store, site=frames.site[i], time=frames.time[i], sites=["atha"])


def test_near_duplicates_closer_than_min_separation_are_merged(archive_store):
    _, _, store = archive_store
    frames, emb = _all_frames(store)
    i = 10
    sep = np.timedelta64(5, "m")
    df = similar(store, site=frames.site[i], time=frames.time[i], k=12, min_separation="5min")
    ranked = [j for j in np.argsort(-(emb @ emb[i]), kind="stable")]
    kept = []  # the greedy merge by hand: best first, the query counting as kept
    for j in ranked:
        same = [u for u in kept + [i] if frames.site[u] == frames.site[j]]
        if j != i and all(abs(frames.time[j] - frames.time[u]) >= sep for u in same):
            kept.append(j)
    assert list(zip(df.site, df.time.to_numpy())) == list(zip(frames.site[kept[:12]], frames.time.to_numpy()[kept[:12]]))
    for site, part in df.groupby("site"):
        times = np.sort(part.time.to_numpy())
        assert (np.diff(times) >= sep).all()
        if site == frames.site[i]:
            assert (np.abs(times - frames.time.to_numpy()[i]) >= sep).all()


def test_late_hour_added_incrementally_equals_a_rebuild(store_copy):
    root, archive, store = store_copy
    ingest(_files(archive, *LATE), store, PreprocessConfig(image_size=32))
    _embed_and_label(store, root / "encoder", root / "classifier", sites=[LATE[0]])
    report = update_index(store)
    assert (report["hours_added"], report["hours_replaced"], report["hours_removed"]) == (1, 0, 0)
    incremental = open_index(store).frame_contents()
    assert len(incremental[0]) == 8 * 60  # 2 sites x 4 hours
    rebuilt = build_index(store, index=str(store) + ".rebuilt")
    assert rebuilt["kind"] == "exact" and rebuilt["vectors"] == 8 * 60
    again = open_index(store, str(store) + ".rebuilt").frame_contents()
    pd.testing.assert_frame_equal(incremental[0], again[0])
    assert (incremental[1] == again[1]).all()
    assert update_index(store)["hours_added"] == 0  # nothing new: nothing done


def test_ivfpq_index_incremental_equals_rebuild_and_rebuilds_are_identical(store_copy):
    root, archive, store = store_copy
    first = index_store(store, rebuild=True, config=SMALL_IVF)
    assert first["kind"] == "ivfpq" and first["trained_on"] > 0
    ingest(_files(archive, *LATE), store, PreprocessConfig(image_size=32))
    _embed_and_label(store, root / "encoder", root / "classifier", sites=[LATE[0]])
    assert update_index(store)["hours_added"] == 1
    incremental = open_index(store).frame_contents()
    index_store(store, keep_training=True)  # every hour re-added to the same trained index
    kept = open_index(store).frame_contents()
    pd.testing.assert_frame_equal(incremental[0], kept[0])
    assert (incremental[1] == kept[1]).all()
    a = build_index(store, index=str(store) + ".a", config=SMALL_IVF)
    b = build_index(store, index=str(store) + ".b", config=SMALL_IVF)
    assert a["trained_on"] == b["trained_on"] > 0
    ca, cb = open_index(store, str(store) + ".a"), open_index(store, str(store) + ".b")
    assert ca.vectors.trained_state() == cb.vectors.trained_state()
    assert all((u == v).all().all() if isinstance(u, pd.DataFrame) else (u == v).all()
               for u, v in zip(ca.frame_contents(), cb.frame_contents()))
    frames, _ = _all_frames(store)
    df = similar(store, site="gill", time=frames.time[frames.site == "gill"].iloc[5], k=5, min_separation=0,
                 index=ca)
    assert len(df) == 5 and df.score.is_monotonic_decreasing


def test_re_ingested_hour_is_replaced_not_duplicated(store_copy, tmp_path):
    root, _, store = store_copy
    before = open_index(store)
    hour = START + np.timedelta64(1, "h")
    other = tmp_path / "reissued"
    write_synthetic_archive(other, sites=["gill"], start=str(hour), hours=1, frames_per_hour=60, seed=7)
    ingest(_files(other), store, PreprocessConfig(image_size=32), skip_stored=False)
    _embed_and_label(store, root / "encoder", root / "classifier", sites=["gill"])
    report = update_index(store)
    assert (report["hours_added"], report["hours_replaced"], report["hours_removed"]) == (0, 1, 0)
    after = open_index(store)
    assert after.catalog.n_vectors == before.catalog.n_vectors and after.catalog.n_dead == 60
    frames, emb = _all_frames(store)
    moved = np.flatnonzero((frames.site == "gill") & (frames.time.to_numpy().astype("datetime64[h]") == hour))
    df = similar(store, site="gill", time=frames.time[moved[3]], k=len(frames) - 1, min_separation=0)
    assert len(df) == len(frames) - 1  # every frame once: no stale duplicate of the old hour
    assert not df.duplicated(["site", "time"]).any()
    rebuilt = build_index(store, index=str(store) + ".rebuilt")
    assert rebuilt["vectors"] == after.catalog.n_vectors and rebuilt["dead_rows"] == 0
    a, b = after.frame_contents(), open_index(store, str(store) + ".rebuilt").frame_contents()
    pd.testing.assert_frame_equal(a[0], b[0])
    assert (a[1] == b[1]).all()


def test_embeddings_of_another_model_are_refused(store_copy, tmp_path):
    root, _, store = store_copy
    frames, _ = load_training_frames(store)
    other = pretrain(frames[:32], PretrainConfig(epochs=1, batch_size=16, image_size=32, seed=1, device="cpu"),
                     tmp_path / "other", provenance={})
    embed_with_checkpoint(store, str(tmp_path / "other"), sites=["gako"], start=str(START),
                          end=str(START + np.timedelta64(1, "h")), device="cpu", overwrite=True)
    with pytest.raises(StoreError, match=f"now embedded by another model.*{other.model_id}.*--rebuild --model"):
        update_index(store)
    with pytest.raises(StoreError, match="2 models"):
        index_store(store, rebuild=True)
    model = open_index(store).model_id
    partial = index_store(store, rebuild=True, model=model)
    assert partial["vectors"] == 6 * 60 and "left out" in partial["notes"][0]
    cdf = str(_files(root / "archive", "gill")[0].url)
    with pytest.raises(CheckpointError, match="index holds embeddings of"):
        similar(store, cdf=cdf, frame=0, checkpoint=str(tmp_path / "other"))


def test_cdf_and_png_queries_embed_like_the_store(archive_store, tmp_path):
    root, archive, store = archive_store
    file = _files(archive, "gill", START + np.timedelta64(1, "h"))[0]
    asi = read_asi_cdf(file.url)
    by_time = similar(store, site="gill", time=asi.times[7], k=10, min_separation=0)
    by_cdf = similar(store, cdf=file.url, frame=7, k=10, min_separation=0)  # checkpoint recorded with the index
    pd.testing.assert_frame_equal(by_time[["site", "time"]], by_cdf[["site", "time"]])
    np.testing.assert_allclose(by_time.score, by_cdf.score, atol=1e-4)
    png = tmp_path / "frame.png"
    write_png16(png, np.repeat(asi.images[7][:, :, None], 3, axis=2))
    by_png = similar(store, png=str(png), k=3, min_separation=0)
    assert (by_png.site[0], by_png.time[0]) == ("gill", asi.times[7]) and by_png.score[0] > 0.9999
    with pytest.raises(BadInputError, match="exactly one query"):
        similar(store, png=str(png), site="gill", time=asi.times[7])
    with pytest.raises(BadInputError, match="frames 0..59"):
        similar(store, cdf=file.url, frame=60)


def test_a_missing_index_names_the_command_that_builds_it(archive_store, tmp_path):
    _, _, store = archive_store
    with pytest.raises(BadInputError, match=f"aurora-pipeline index --store {store}"):
        similar(store, site="gako", time=str(START), index=str(tmp_path / "nowhere"))
    with pytest.raises(BadInputError, match="already holds a similarity index"):
        build_index(store)
    assert update_index(store, index=str(tmp_path / "nowhere"), missing_ok=True)["index"].startswith("none")


def test_similar_command_writes_the_table_and_the_montage(archive_store, tmp_path, capsys):
    from aurora_cli import search

    _, _, store = archive_store
    parser = argparse.ArgumentParser()
    search.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["similar", "--store", str(store), "--site", "gako", "--time", "2011-01-06T04:10:00",
                              "--k", "6", "--out", str(tmp_path / "out")])
    assert search.HANDLERS["similar"](args) is None
    table = pd.read_csv(tmp_path / "out" / "similar.csv")
    assert len(table) == 6 and list(table.columns[:3]) == ["site", "time", "score"]
    assert (tmp_path / "out" / "similar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "query: gako 2011-01-06T04:10:00" in capsys.readouterr().out


def test_index_beside_a_store_on_s3(archive_store, s3_env):
    _, _, store = archive_store
    bucket = s3_env.make_bucket("search-test")
    fs = s3_env.filesystem()
    fs.put(str(store), f"{bucket.removeprefix('s3://')}/store.zarr", recursive=True)
    url = f"{bucket}/store.zarr"
    report = build_index(url)
    assert report["location"] == f"{url}.index" and report["vectors"] == 7 * 60
    assert fs.exists(f"{bucket.removeprefix('s3://')}/store.zarr.index/index.json")
    local = similar(store, site="gill", time="2011-01-06T05:30:00", k=5)
    remote = similar(url, site="gill", time="2011-01-06T05:30:00", k=5)
    pd.testing.assert_frame_equal(local, remote)
    assert Store.open(url).sites() == ["gako", "gill"]


def test_build_index_flow_updates_the_index(store_copy):
    from flows.build_index import build_index_flow

    root, archive, store = store_copy
    ingest(_files(archive, *LATE), store, PreprocessConfig(image_size=32))
    _embed_and_label(store, root / "encoder", root / "classifier", sites=[LATE[0]])
    summary = build_index_flow(store=str(store))
    assert summary["hours_added"] == 1 and summary["vectors"] == 8 * 60
    with pytest.raises(BadInputError, match="add --rebuild"):
        index_store(store, sites=["gako"])
