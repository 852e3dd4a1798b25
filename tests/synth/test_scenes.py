"""Synthetic sky scenes: look like raw all-sky frames, deterministic, smooth in time, kinds tell apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.synth.scenes import CLASSES, SkyScene, render_oath_image, scene_schedule

SIZE = 256


def radius_map(size: int = SIZE) -> np.ndarray:
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size] - c
    return np.hypot(x, y)


def blocks(frame: np.ndarray, b: int = 8) -> np.ndarray:
    """8 x 8 block means: the picture without the pixel noise."""
    s = frame.shape[0]
    return frame.astype(np.float64).reshape(s // b, b, s // b, b).mean(axis=(1, 3))


@pytest.mark.parametrize("kind", CLASSES)
def test_frame_is_a_raw_all_sky_image(kind):
    frame = SkyScene(kind, seed=4).render(60.0)
    assert frame.shape == (SIZE, SIZE) and frame.dtype == np.uint16
    r = radius_map()
    outside = frame[r > 0.5 * SIZE].astype(float)  # the corners, beyond the fisheye circle
    assert 2150 < np.median(outside) < 2500  # dark offset like the real file's 2223..2400
    spread = 1.4826 * np.median(np.abs(outside - np.median(outside)))  # robust: a moon's bloom column may cross
    assert 8 < spread < 40  # read noise only
    sky = frame[r < 0.3 * SIZE].astype(float)
    assert np.median(sky) > np.median(outside) + 150  # the sky is brighter than the dark corners


@pytest.mark.parametrize("kind", CLASSES)
def test_same_kind_seed_and_time_give_the_same_frame(kind):
    a = SkyScene(kind, seed=11).render(123.0)
    b = SkyScene(kind, seed=11).render(123.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, SkyScene(kind, seed=12).render(123.0))


@pytest.mark.parametrize("kind", CLASSES)
@pytest.mark.parametrize("seed", [1, 7])
def test_consecutive_frames_are_much_closer_than_other_scenes(kind, seed):
    scene = SkyScene(kind, seed)
    now, next_frame = blocks(scene.render(300.0)), blocks(scene.render(303.0))
    step = np.abs(now - next_frame).mean()
    other_seed = np.abs(now - blocks(SkyScene(kind, seed + 1).render(300.0))).mean()
    other_kinds = min(np.abs(now - blocks(SkyScene(k, seed).render(300.0))).mean() for k in CLASSES if k != kind)
    assert step < other_seed / 4 and step < other_kinds / 4
    later = np.abs(now - blocks(scene.render(1500.0))).mean()
    assert later > step  # the scene does evolve


def point_sources(frame: np.ndarray) -> np.ndarray:
    """Pixels well above their 5 x 5 median, in units of the expected noise there."""
    f = frame.astype(float)
    local = median_filter(f, 5)
    noise = np.sqrt(20.0**2 + 2.0 * np.maximum(local - 2300.0, 0.0))
    return (f - local) > 6 * noise


def test_stars_turn_about_the_zenith():
    scene = SkyScene("clear", seed=3)
    r = radius_map()
    stars = point_sources(scene.render(0.0)) & (r > 40) & (r < 100)
    assert stars.sum() > 20
    later = scene.render(3600.0).astype(float) - median_filter(scene.render(3600.0).astype(float), 5)
    # look for each star where an hour of sidereal rotation has carried it
    angle = 7.292e-5 * 3600.0
    c = (SIZE - 1) / 2
    y, x = np.mgrid[0:SIZE, 0:SIZE] - c
    xs = np.rint(c + x * np.cos(angle) - y * np.sin(angle)).astype(int).clip(0, SIZE - 1)
    ys = np.rint(c + x * np.sin(angle) + y * np.cos(angle)).astype(int).clip(0, SIZE - 1)
    assert later[ys, xs][stars].mean() > 3 * max(later[stars].mean(), 20.0)


def test_moon_saturates_and_clear_sky_does_not():
    for seed in range(5):
        assert (SkyScene("moon", seed).render(0.0) == 65535).sum() >= 10
        assert (SkyScene("clear", seed).render(0.0) == 65535).sum() == 0


def test_clouds_hide_stars():
    inner = radius_map() < 0.35 * SIZE
    clear = [(point_sources(SkyScene("clear", s).render(0.0)) & inner).sum() for s in range(8)]
    cloudy = [(point_sources(SkyScene("cloudy", s).render(0.0)) & inner).sum() for s in range(8)]
    assert np.mean(cloudy) < 0.6 * np.mean(clear)


def features(image: np.ndarray) -> np.ndarray:
    hist = np.histogram(image, bins=16, range=(0, 1))[0] / image.size
    return np.concatenate([blocks(image, image.shape[0] // 16).ravel(), hist])


def test_kinds_are_separable_but_not_by_brightness_alone():
    images, means, labels = [], [], []
    for k, kind in enumerate(CLASSES):
        for seed in range(30):
            images.append(features(render_oath_image(kind, seed, size=128)))
            means.append([SkyScene(kind, seed, size=128).render(0.0).mean()])
            labels.append(k)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    on_pictures = cross_val_score(model, np.array(images), labels, cv=5).mean()
    on_brightness = cross_val_score(model, np.array(means), labels, cv=5).mean()
    print(f"linear accuracy on 16 x 16 thumbnails + histogram: {on_pictures:.2f}, on mean counts: {on_brightness:.2f}")
    assert on_pictures > 0.55  # chance is 1/6
    assert on_brightness < 0.5
    assert on_pictures > on_brightness + 0.15


@pytest.mark.parametrize("kind", CLASSES)
def test_oath_image_is_cropped_and_stretched(kind):
    image = render_oath_image(kind, seed=2)
    assert image.shape == (SIZE, SIZE) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    r = radius_map()
    assert np.all(image[r > 0.49 * SIZE] == 0.0)  # outside the cropped disc
    disc = image[r < 0.46 * SIZE]
    assert 0.001 < np.mean(disc == 0.0) < 0.05  # eq. 1: about 1 % at 0 ...
    assert 0.001 < np.mean(disc >= 0.9999) < 0.05  # ... and about 1 % at 1 (or saturated)
    np.testing.assert_array_equal(image, render_oath_image(kind, seed=2))


def test_scene_schedule_has_runs_of_minutes():
    runs = scene_schedule(3, 1200, np.random.default_rng(5))
    assert runs[0].start == 0 and runs[-1].stop == 3 * 1200
    assert all(a.stop == b.start for a, b in zip(runs, runs[1:]))
    assert all(a.kind != b.kind for a, b in zip(runs, runs[1:]))
    minutes = np.array([(r.stop - r.start) * 3 / 60 for r in runs[:-1]])
    assert minutes.min() >= 3 - 0.05 and minutes.max() <= 40 + 0.05
    assert {r.kind for r in runs} <= set(CLASSES)
    again = scene_schedule(3, 1200, np.random.default_rng(5))
    assert again == runs


@pytest.mark.parametrize("kwargs, problem", [
    (dict(kind="aurora", seed=0), "unknown sky kind"),
    (dict(kind="arc", seed=-1), "non-negative"),
    (dict(kind="arc", seed=0, size=16), "smaller than 32"),
])
def test_bad_scene_arguments(kwargs, problem):
    with pytest.raises(BadInputError, match=problem):
        SkyScene(**kwargs)
