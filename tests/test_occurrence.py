"""Occurrence statistics on a store of known labels, times and sites; the dial's orientation; the command."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import aurora_pipeline
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.events import smooth_labels
from aurora_pipeline.occurrence import occurrence
from aurora_pipeline.synth.labelled_store import write_labelled_store

pytest.importorskip("aacgmv2")
REPO = Path(__file__).resolve().parents[1]
ARC, DIFFUSE, DISCRETE, CLOUDY, MOON, CLEAR = range(6)


def _pattern(hour, times):
    """Labels that cycle through every class, a different phase each hour (so bins differ)."""
    h = int(str(hour)[11:13])
    return ((np.arange(len(times)) + h) % 6).astype(np.int8)


def _probabilities(hour, times, codes):
    """The label's probability falls from 0.95 to 0.35 along the hour; the rest is shared."""
    p = np.linspace(0.95, 0.35, len(codes))
    out = np.repeat(((1 - p) / 5)[:, None], 6, axis=1)
    out[np.arange(len(codes)), codes] = p
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("occ") / "s.zarr"
    write_labelled_store(path, "gako", [f"2012-01-10T{h:02d}" for h in range(5, 10)] + ["2012-02-01T06"], _pattern,
                         frames_per_hour=60, cadence_ms=60_000, probabilities=_probabilities)
    write_labelled_store(path, "gill", ["2013-03-03T04"], _pattern, frames_per_hour=60, cadence_ms=60_000,
                         probabilities=_probabilities)
    return path


def _frames(store):
    """Every labelled frame with its site, label, probability and magnetic coordinates (the expectation's input)."""
    ds = aurora_pipeline.open_sites(store, variables=["label", "label_probability"])
    label = ds.label.values.astype(int)
    return pd.DataFrame({"site": ds.site.values, "time": ds.time.values, "label": label,
                         "p": ds.label_probability.values[np.arange(len(label)), label],
                         "mlt": ds.mlt.values, "mlat": ds.mlat.values})


def test_counts_denominator_and_uncertainty_per_mlt_bin(store):
    occ = occurrence(store, by="mlt")
    df = _frames(store)
    df["bin"] = np.floor(df.mlt) + 0.5
    want = df.groupby(["bin", "label"]).size().unstack(fill_value=0).reindex(columns=range(6), fill_value=0)
    got = occ["label_frames"].to_pandas()
    np.testing.assert_array_equal(got.loc[want.index].values, want.values)
    assert int(occ["frames"].sum()) == len(df) == occ.attrs["aurora_frames_counted"]
    clear_sky = want.drop(columns=[CLOUDY, MOON]).sum(axis=1)  # the denominator: no cloudy, no moon
    np.testing.assert_array_equal(occ["clear_sky_frames"].sel(mlt=want.index).values, clear_sky.values)
    p = want[ARC] / clear_sky
    np.testing.assert_allclose(occ.probability.sel(mlt=want.index, sky_class="arc").values, p.values)
    np.testing.assert_allclose(occ.probability_error.sel(mlt=want.index, sky_class="arc").values,
                               np.sqrt(p * (1 - p) / clear_sky).values)
    assert list(occ.sky_class.values) == ["arc", "diffuse", "discrete", "clear"]
    assert "cloudy" in occ.attrs["aurora_denominator"] and "moon" in occ.attrs["aurora_denominator"]
    empty = ~np.isin(occ.mlt.values, want.index)
    assert empty.any() and np.isnan(occ.probability.values[empty]).all()  # missing, not zero
    assert (occ["frames"].values[empty] == 0).all()


def test_every_bin_dimension_and_their_combination(store):
    df = _frames(store)
    occ = occurrence(store, by=("site", "year", "month", "mlat", "mlt"))
    assert occ["label_frames"].dims == ("site", "year", "month", "mlat", "mlt", "class")
    assert list(occ.year.values) == [2012, 2013] and list(occ.site.values) == ["gako", "gill"]
    assert occ.mlat.values.min() == np.floor(df.mlat.min()) + 0.5
    assert occ.mlat.values.max() == np.floor(df.mlat.max()) + 0.5
    by_site = occ["frames"].sum(("year", "month", "mlat", "mlt")).to_pandas()
    assert by_site.to_dict() == df.groupby("site").size().to_dict()
    months = occ["frames"].sum(("site", "year", "mlat", "mlt")).to_pandas()
    assert months[1] == 5 * 60 and months[2] == 60 and months[3] == 60 and months[4] == 0
    assert np.isnan(occ.probability.sel(site="gill", year=2012).values).all()  # gill has nothing in 2012
    mlat = occurrence(store, sites=["gako"], by="mlat")
    assert int(mlat["frames"].sum()) == int((df.site == "gako").sum())
    assert mlat.mlat.values.tolist() == [63.5]  # Gakona's zenith sits at ~63.2 deg


def test_a_minimum_label_probability_drops_the_unsure_frames_everywhere(store):
    df = _frames(store)
    occ = occurrence(store, by="site", min_probability=0.6)
    sure = df[df.p >= 0.6]
    assert occ["frames"].to_pandas().to_dict() == sure.groupby("site").size().to_dict()
    assert occ.attrs["aurora_frames_below_min_probability"] == int((df.p < 0.6).sum())
    with pytest.raises(BadInputError, match="min_probability"):
        occurrence(store, min_probability=1.5)


def test_smoothed_labels_are_those_of_the_events_smoothing_across_blocks(tmp_path, monkeypatch):
    from aurora_pipeline.store import read

    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(1)
    noisy = {}

    def labels(hour, times):
        codes = np.repeat(rng.integers(0, 6, len(times) // 40 + 1), 40)[: len(times)]
        flips = rng.random(len(times)) < 0.2
        codes = np.where(flips, rng.integers(0, 6, len(times)), codes).astype(np.int8)
        noisy[str(hour)] = codes
        return codes

    write_labelled_store(path, "gako", ["2012-01-10T06", "2012-01-10T07"], labels, frames_per_hour=1200,
                         probabilities=lambda h, t, c: np.where(np.eye(6)[c] > 0, 0.6, 0.08))
    monkeypatch.setattr(read, "DASK_CHUNK_BYTES", 1)  # blocks of 1,024 frames: the window spans block edges
    occ = occurrence(path, by="site", smooth="30s")
    ds = aurora_pipeline.open_site(path, "gako", variables=["label", "label_probability"])
    t = ds.time.values.astype("datetime64[ms]").astype(np.int64)
    own = ds.label.values.astype(np.int64)
    whole = smooth_labels(t, ds.label_probability.values.astype(np.float64), np.zeros(len(t), int), 30_000, own)
    np.testing.assert_array_equal(occ["label_frames"].sel(site="gako").values, np.bincount(whole, minlength=6))
    assert not np.array_equal(np.bincount(whole, minlength=6), np.bincount(own, minlength=6))  # smoothing changed it


def test_bad_bins_and_sites_are_refused(store):
    with pytest.raises(BadInputError, match="by=season"):
        occurrence(store, by="season")
    with pytest.raises(BadInputError, match="kian"):
        occurrence(store, sites=["kian"])


def test_years_outside_aacgm_are_left_out_of_magnetic_bins_with_one_warning(tmp_path):
    path = tmp_path / "s.zarr"
    write_labelled_store(path, "gako", ["2031-01-02T08", "2012-01-10T08"], lambda h, t: np.zeros(len(t), np.int8),
                         frames_per_hour=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        occ = occurrence(path, by="mlt")
    assert len(caught) == 1 and "1990-2030" in str(caught[0].message)
    assert occ.attrs["aurora_frames_without_magnetic_coordinates"] == 10 and int(occ["frames"].sum()) == 10
    assert int(occurrence(path, by="year")["frames"].sum()) == 20


def test_the_dial_puts_dawn_on_the_right_and_midnight_at_the_bottom(tmp_path):
    from aurora_pipeline.occurrence_plots import occurrence_figure

    path = tmp_path / "s.zarr"
    # Gakona's MLT is UT - ~10.7 h: arc only around 06 MLT (dawn), clear sky elsewhere around the night
    arc_hour = lambda h, t: np.full(len(t), ARC if str(h).endswith("16") else CLEAR, np.int8)  # noqa: E731
    write_labelled_store(path, "gako", ["2012-01-10T16", "2012-01-10T10", "2012-01-10T22"], arc_hour,
                         frames_per_hour=30, cadence_ms=120_000)
    occ = occurrence(path, by=("mlt", "mlat"))
    lit = occ.probability.sel(sky_class="arc").max("mlat").to_pandas().dropna()
    assert set(lit[lit > 0].index) <= {5.5, 6.5} and len(lit[lit > 0])
    fig = occurrence_figure(occ)
    dial = fig.axes[0]
    fig.canvas.draw()
    mesh = dial.collections[0]
    values = np.ma.masked_invalid(np.asarray(mesh.get_array()).reshape(occ.sizes["mlat"], 24))
    centre = dial.transData.transform((0.0, 0.0))
    for mlt_bin, name in [(6, "dawn"), (0, "midnight"), (12, "noon"), (18, "dusk")]:
        x, y = dial.transData.transform((np.deg2rad((mlt_bin + 0.5) * 15.0), 90.0 - 63.5)) - centre
        side = {"dawn": x > abs(y), "midnight": -y > abs(x), "noon": y > abs(x), "dusk": -x > abs(y)}[name]
        assert side, (name, x, y)
    lit_cells = np.argwhere(np.asarray(values.filled(0)) > 0)
    assert set(lit_cells[:, 1]) <= {5, 6}  # the arc's cells are the dawn bins drawn on the right


def test_the_occurrence_command(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = Path(sys.executable).parent / "aurora-pipeline"
    out, csv = tmp_path / "occ.png", tmp_path / "occ.csv"
    done = subprocess.run([str(cli), "occurrence", "--store", str(store), "--sites", "gako", "--by", "mlt,mlat",
                           "--out", str(out), "--csv", str(csv)], env=env, capture_output=True, text=True, cwd=REPO,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["sites"] == ["gako"] and result["years"] == [2012] and result["frames_counted"] == 360
    assert out.stat().st_size > 10_000
    table = pd.read_csv(csv)
    assert {"mlt", "mlat", "frames", "clear_sky_frames", "count_arc", "probability_arc",
            "probability_error_arc"} <= set(table.columns) and table["frames"].sum() == 360
    bad = subprocess.run([str(cli), "occurrence", "--store", str(store), "--by", "season", "--out", str(out)],
                         env=env, capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL, timeout=600)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "season" in bad.stderr
