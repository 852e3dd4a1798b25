"""The nightly run (flow `label-archive`, in-process): new files once, nothing twice, late hours in place.

A small synthetic archive (one site, 20 frames an hour, 32-pixel frames) and a
tiny encoder, classifier and centroids fitted on a separate training store stand in
for the real archive and models. The flow lists the archive over a look-back
window ending now; the synthetic hours are in 2011, so the runs here use
``reconcile=True`` (the whole archive), and ``find_new_files`` is tested on its own
with an explicit ``now``.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aurora_pipeline.store.read import hour_facts
import xarray as xr

import aurora_pipeline
from aurora_pipeline.source.archive import list_archive
from aurora_pipeline.classify.model import ClassifierConfig
from aurora_pipeline.cluster.model import ClusterConfig
from aurora_pipeline.cluster.driver import cluster_store
from aurora_pipeline.embed.driver import embed_with_checkpoint
from aurora_pipeline.encoder.training_frames import load_training_frames
from aurora_pipeline.ingest.driver import ingest
from aurora_pipeline.classify.driver import fit_from_store
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.nightly import NightlyConfig, find_new_files, read_runs, run_night, window
from aurora_pipeline.store import Store
from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.ingest.preprocess import PreprocessConfig
from aurora_pipeline.synth.archive import write_synthetic_archive
from aurora_pipeline.encoder.train import PretrainConfig, pretrain

SITE = "gako"
FRAMES_PER_HOUR = 20
IMAGE_SIZE = 32
RAW_SIZE = 64  # side of the synthetic imager's frames before the crop and resize


@dataclass(frozen=True)
class NightlyModels:
    """An archive of two site-hours and the models a nightly run needs, all fitted on it."""

    archive: Path
    checkpoint: str
    classifier: str
    centroids: str


def add_hour(archive: Path, hour: str, site: str = SITE) -> None:
    """Write one more site-hour file into the synthetic archive."""
    write_synthetic_archive(archive, sites=site, start=hour, hours=1, frames_per_hour=FRAMES_PER_HOUR,
                            size=RAW_SIZE)


def build_nightly_models(root: Path) -> NightlyModels:
    """Archive ``gako`` 2011-01-06T05..T06, plus a 1-epoch encoder, a classifier and k-means centroids.

    The models come from a training store of their own, so a nightly store starts empty.
    Classes with fewer than 3 labelled frames are left out of the fit, and 2-fold
    cross-validation is used, since 40 frames hold some classes only once or twice.
    """
    archive, train_store = root / "archive", root / "train.zarr"
    write_synthetic_archive(archive, sites=SITE, start="2011-01-06T05", hours=2,
                            frames_per_hour=FRAMES_PER_HOUR, size=RAW_SIZE)
    ingest(list_archive(archive), train_store, PreprocessConfig(image_size=IMAGE_SIZE))
    frames, _ = load_training_frames(train_store)
    trained = pretrain(frames, PretrainConfig(epochs=1, batch_size=16, image_size=IMAGE_SIZE, device="cpu"),
                       root / "encoder")
    embed_with_checkpoint(train_store, trained.checkpoint, device="cpu")
    labels = pd.read_csv(archive / "labels.csv")
    labels = labels[labels["class"].map(labels["class"].value_counts()) >= 3]
    labels.to_csv(root / "labels_fit.csv", index=False)
    fit_from_store(train_store, root / "labels_fit.csv", root / "classifier", ClassifierConfig(cv_folds=2))
    cluster_store(train_store, root / "centroids", ClusterConfig(k_min=2, k_max=3))
    return NightlyModels(archive, trained.checkpoint, str(root / "classifier"), str(root / "centroids"))


def hour_chunks(store: Path, *hours: str) -> dict[str, bytes]:
    """Bytes of the frames and embedding chunks of these hours (each hour owns its chunks)."""
    from aurora_pipeline.store import layout

    out = {}
    for hour in hours:
        year, index = layout.hour_position(hour)
        for name in ("frames", "embedding"):
            step = {"frames": layout.frames_chunk(IMAGE_SIZE), "embedding": layout.EMBEDDING_CHUNK}[name]
            first, stop = index * layout.SLOTS_PER_HOUR // step, (index + 1) * layout.SLOTS_PER_HOUR // step
            for chunk in range(first, stop):
                path = store / SITE / str(year) / name / "c" / str(chunk) / "0"
                path = path / "0" if name == "frames" else path
                if path.exists():
                    out[str(path.relative_to(store))] = path.read_bytes()
    return out


def snapshot(store: Path, under: str = "", skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Bytes of every file of ``store`` (below ``under``), minus the top-level folders in ``skip``."""
    top = store / under
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(top.rglob("*"))
            if p.is_file() and p.relative_to(store).parts[0] not in skip}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> NightlyModels:
    return build_nightly_models(tmp_path_factory.mktemp("nightly-models"))


def test_nightly_runs_label_new_files_once_and_late_hours_in_place(models, tmp_path):
    from flows.label_archive import label_archive

    archive = tmp_path / "archive"
    add_hour(archive, "2011-01-06T05")
    add_hour(archive, "2011-01-06T06")
    store = tmp_path / "nightly.zarr"

    def night():
        return label_archive(archive=str(archive), store=str(store), checkpoint=models.checkpoint,
                             classifier=models.classifier, centroids=models.centroids, sites=[SITE],
                             reconcile=True, image_size=IMAGE_SIZE, device="cpu")

    first = night()
    assert (first["files_new"], first["files_ingested"], first["frames"]) == (2, 2, 2 * FRAMES_PER_HOUR)
    assert first["hours"] == ["gako/2011-01-06T05", "gako/2011-01-06T06"] and first["failures"] == []
    assert sum(first["label_counts"].values()) == 2 * FRAMES_PER_HOUR

    before = snapshot(store, skip=("runs",))
    second = night()
    assert (second["files_new"], second["files_already_stored"], second["files_ingested"]) == (0, 2, 0)
    assert snapshot(store, skip=("runs",)) == before, "a run with nothing new changed the store"

    stored_hours = hour_chunks(store, "2011-01-06T05", "2011-01-06T06")
    assert len(stored_hours) >= 4
    stored_values = aurora_pipeline.open_site(store, SITE).load()
    add_hour(archive, "2011-01-06T07")  # the next hour
    add_hour(archive, "2011-01-06T04")  # an older hour that arrived late
    third = night()
    assert (third["files_new"], third["files_already_stored"], third["files_ingested"]) == (2, 2, 2)
    assert third["hours"] == ["gako/2011-01-06T04", "gako/2011-01-06T07"]
    assert hour_chunks(store, "2011-01-06T05", "2011-01-06T06") == stored_hours, \
        "labelling the new hours rewrote the chunks of hours already stored"
    again = aurora_pipeline.open_site(store, SITE, "2011-01-06T05", "2011-01-06T07").load()
    xr.testing.assert_identical(again.drop_attrs(), stored_values.drop_attrs())

    from aurora_pipeline.events import read_recorded_events

    events = read_recorded_events(store, [SITE])  # written by the nightly runs, the late hour 04 included
    assert len(events) and (np.diff(events["start"].to_numpy()) > np.timedelta64(0)).all()
    assert events["start"].min().floor("h") == pd.Timestamp("2011-01-06T04")
    assert events["end"].max() > pd.Timestamp("2011-01-06T07")
    assert int(events["n_frames"].sum()) == 4 * FRAMES_PER_HOUR

    ds = aurora_pipeline.open_site(store, SITE)
    times = ds.time.values
    assert len(times) == 4 * FRAMES_PER_HOUR
    assert (np.diff(times) > np.timedelta64(0, "ms")).all(), "time axis not strictly increasing"
    assert times[0].astype("datetime64[h]") == np.datetime64("2011-01-06T04")
    assert times[-1].astype("datetime64[h]") == np.datetime64("2011-01-06T07")
    hours_of_frames = np.unique(times.astype("datetime64[h]"), return_counts=True)
    assert hours_of_frames[1].tolist() == [FRAMES_PER_HOUR] * 4
    # every frame has every derived variable: nothing filled with -1 / NaN by open_site
    n_classes = ds.sizes["class"]
    assert ds.embedding.shape == (len(times), 512) and np.isfinite(ds.embedding.values).all()
    assert ((ds.label.values >= 0) & (ds.label.values < n_classes)).all()
    np.testing.assert_allclose(ds.label_probability.values.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ds.label.values, ds.label_probability.values.argmax(axis=1))
    assert ((ds.cluster.values >= 0) & (ds.cluster.values <= 2)).all()

    runs = xr.open_zarr(store, group="runs", consolidated=False).to_dataframe()
    assert runs["files_new"].tolist() == [2, 0, 2]
    assert runs["files_ingested"].tolist() == [2, 0, 2]

    # an hour ingested by hand (not embedded, labelled or clustered) is finished by the next night
    add_hour(archive, "2011-01-06T08")
    ingest(list_archive(archive), store)
    fourth = night()
    assert (fourth["files_new"], fourth["hours_embedded"], fourth["hours_labelled"]) == (0, 1, 1)
    late = aurora_pipeline.open_site(store, SITE, "2011-01-06T08", "2011-01-06T09")
    assert np.isfinite(late.embedding.values).all() and np.isfinite(late.label.values).all()
    assert np.isfinite(late.cluster.values).all()


def _stored_archive(root: Path, hours: list[str], store_hours: list[str]) -> tuple[Path, Path]:
    archive, store = root / "archive", root / "s.zarr"
    for hour in hours:
        write_synthetic_archive(archive, sites=SITE, start=hour, hours=1, frames_per_hour=3, size=RAW_SIZE)
    stored = [f for f in list_archive(archive) if f.hour in {np.datetime64(h, "h") for h in store_hours}]
    ingest(stored, store, PreprocessConfig(image_size=IMAGE_SIZE))
    return archive, store


def test_find_new_files_looks_back_from_now_and_finds_late_hours(tmp_path):
    old, stored, late, newest = "2011-01-20T05", "2011-01-30T05", "2011-01-28T03", "2011-02-01T22"
    archive, store = _stored_archive(tmp_path, [old, stored, late, newest], [stored])
    now = np.datetime64("2011-02-02T00")

    def new_files(days, reconcile=False):
        start, end = window(days, reconcile, now)
        return find_new_files(str(archive), str(store), start=start, end=end, sites=[SITE])

    todo, done = new_files(7)
    # the window [now - 7 days, now] spans two month folders; `old` is outside it
    assert [f.hour_code for f in todo] == ["2011012803", "2011020122"]
    assert [f.hour_code for f in done] == ["2011013005"]

    todo, _ = new_files(3)
    assert [f.hour_code for f in todo] == ["2011020122"], "a 3-day look-back still found the 5-day-old hour"

    todo, done = new_files(7, reconcile=True)
    assert [f.hour_code for f in todo] == ["2011012005", "2011012803", "2011020122"]


def test_find_new_files_ignores_hours_after_now(tmp_path):
    archive, store = _stored_archive(tmp_path, ["2011-01-30T05", "2011-02-01T03"], [])
    start, end = window(7, now=np.datetime64("2011-02-01T02"))
    todo, _ = find_new_files(str(archive), str(store), start=start, end=end, sites=[SITE])
    assert [f.hour_code for f in todo] == ["2011013005"]


# --------------------------------------------------------------------------- the night as a library call (no Prefect)

SKYMAPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "themis" / "skymaps"
ATHA_SKYMAP = "themis_skymap_atha_20230115-+_v02.sav"


def night_config(models: NightlyModels, **changes) -> NightlyConfig:
    return NightlyConfig(checkpoint=models.checkpoint, classifier=models.classifier, **{
        "sites": (SITE,), "image_size": IMAGE_SIZE, "device": "cpu", **changes})


def test_run_night_finishes_an_hour_at_the_window_edge(models, tmp_path):
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    add_hour(archive, "2011-01-06T04")  # one hour before the window
    add_hour(archive, "2011-01-06T05")  # the window's first hour
    now = np.datetime64("2011-01-08T05")  # window: [now - 2 days, now + 1 h)
    summary = run_night(str(archive), str(store), night_config(models, lookback_days=2), now=now)
    assert (summary["window_start"], summary["window_end"]) == ("2011-01-06T05", "2011-01-08T06")
    assert summary["hours"] == ["gako/2011-01-06T05"] and summary["failures"] == []
    assert (summary["hours_embedded"], summary["hours_labelled"]) == (1, 1)
    assert {"find_seconds", "ingest_seconds", "embed_seconds", "classify_seconds", "total_seconds"} <= set(summary)
    edge = aurora_pipeline.open_site(store, SITE)
    assert edge.sizes["time"] == FRAMES_PER_HOUR and np.isfinite(edge.embedding.values).all()

    before = snapshot(store, skip=("runs",))
    again = run_night(str(archive), str(store), night_config(models, lookback_days=2), now=now)
    assert (again["files_new"], again["files_already_stored"], again["files_ingested"]) == (0, 1, 0)
    assert snapshot(store, skip=("runs",)) == before, "a night with nothing new changed the store"
    assert len(read_runs(store)) == 2


def test_the_window_is_read_once_even_when_the_clock_turns_an_hour(models, tmp_path, monkeypatch):
    """The listing and the later stages get one window: a clock that turns an hour between
    them must not leave the edge hour ingested and never embedded."""
    from aurora_pipeline import nightly

    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    add_hour(archive, "2011-01-06T05")
    readings = iter(np.datetime64("2011-01-08T05") + np.timedelta64(h, "h") for h in range(100))
    monkeypatch.setattr(nightly, "current_hour", lambda: next(readings))
    summary = run_night(str(archive), str(store), night_config(models, lookback_days=2))
    assert summary["hours"] == ["gako/2011-01-06T05"]
    assert (summary["hours_embedded"], summary["hours_labelled"]) == (1, 1), "the edge hour was left unlabelled"


def test_a_night_ingests_with_the_stores_own_skymaps(models, tmp_path):
    if not (SKYMAPS / ATHA_SKYMAP).is_file():
        pytest.skip(f"the real skymaps are not in {SKYMAPS} (../shared/data is absent)")
    tree = tmp_path / "skymaps"
    tree.mkdir()
    shutil.copy(SKYMAPS / ATHA_SKYMAP, tree / ATHA_SKYMAP)
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"

    def atha_hour(hour):
        write_synthetic_archive(archive, sites="atha", start=hour, hours=1, frames_per_hour=3, size=256)

    atha_hour("2023-02-01T04")
    ingest(list_archive(archive), store, PreprocessConfig(fov="elevation", image_size=IMAGE_SIZE), skymaps=str(tree))
    atha_hour("2023-02-01T05")
    config = night_config(models, sites=("atha",), image_size=None, reconcile=True)
    night = run_night(str(archive), str(store), config)  # no skymaps given: the store's own
    assert night["hours"] == ["atha/2023-02-01T05"] and night["failures"] == []
    assert (night["hours_embedded"], night["hours_labelled"]) == (2, 2)
    assert hour_facts(store, "atha")["skymap"].tolist() == [ATHA_SKYMAP, ATHA_SKYMAP]

    # a night whose every new file fails is recorded, then ends with the one error line
    (tree / ATHA_SKYMAP).write_bytes((tree / ATHA_SKYMAP).read_bytes()[:5000])
    atha_hour("2023-02-01T06")
    with pytest.raises(BadInputError, match="none of the 1 new file"):
        run_night(str(archive), str(store), config)
    assert ATHA_SKYMAP in read_failures(store)["problem"].iloc[-1]
    runs = read_runs(store)
    assert runs["files_new"].tolist() == [1, 1] and runs["files_ingested"].tolist() == [1, 0]


def test_nightly_settings_are_checked_before_the_night_starts():
    for bad in ({"image_size": 0}, {"lookback_days": 0}, {"device": "tpu"}, {"sites": ("gakk",)},
                {"map_altitude_km": 100.0}):
        with pytest.raises(BadInputError):
            NightlyConfig(checkpoint="c", classifier="k", **bad)


def test_label_archive_options_are_the_nightly_configs_fields():
    """The flow's parameters, the command's options and the deployment's parameters are
    NightlyConfig's fields with its defaults: a setting added there and not here fails."""
    import dataclasses
    import inspect

    import yaml

    from aurora_cli.main import build_parser
    from flows.label_archive import label_archive

    fields = {f.name: f.default for f in dataclasses.fields(NightlyConfig)}
    params = inspect.signature(label_archive.fn).parameters
    assert list(params) == ["archive", "store", *fields]
    for name, default in fields.items():
        assert params[name].default == (inspect.Parameter.empty if default is dataclasses.MISSING else default), name
    args = vars(build_parser().parse_args(["label-archive", "--archive", "a", "--store", "s", "--checkpoint", "c",
                                           "--classifier", "k"]))
    for name, default in fields.items():
        assert args[name] == (default if default is not dataclasses.MISSING else {"checkpoint": "c",
                                                                                  "classifier": "k"}[name]), name
    deployment = yaml.safe_load((Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml").read_text())
    nightly = next(d for d in deployment["deployments"] if d["name"] == "nightly")["parameters"]
    assert set(nightly) <= {"archive", "store", *fields}  # the rest: the flow's defaults (tests/flows/test_settings.py)


def test_a_night_opens_its_store_once(models, tmp_path, monkeypatch):
    """run_night opens an existing store once and hands the Store to every stage (issue 19, item 3):
    ``Store.open`` is wrapped by a counter that calls the real classmethod. The ingest's files are
    written on the LocalCluster's workers (threads of this process since issue 22), each opening
    the store's location once per file as a worker of any cluster does: counted apart."""
    archive, store = tmp_path / "archive", tmp_path / "s.zarr"
    add_hour(archive, "2011-01-06T05")
    now = np.datetime64("2011-01-08T05")
    run_night(str(archive), str(store), night_config(models, lookback_days=2), now=now)
    add_hour(archive, "2011-01-06T06")
    opens, on_workers = [], []
    real = Store.open.__func__

    def counted(cls, st, options=None, mode="r"):
        on_main = threading.current_thread() is threading.main_thread()
        (opens if on_main else on_workers).append((type(st).__name__, mode))
        return real(cls, st, options, mode)

    monkeypatch.setattr(Store, "open", classmethod(counted))
    summary = run_night(str(archive), str(store), night_config(models, lookback_days=2), now=now)
    assert summary["hours"] == ["gako/2011-01-06T06"] and summary["hours_labelled"] == 1
    assert opens == [("str", "r+")]
    assert on_workers == [("str", "a")]  # the one new file's worker
