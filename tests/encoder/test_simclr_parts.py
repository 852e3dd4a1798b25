"""The SimCLR parts: encoder, projection head and the two-view augmentation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.encoder import AugmentConfig, ProjectionHead, apply_params, frames_to_input, resnet18_encoder, sample_params, two_views

ONLY_FLIP = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))  # no crop: the whole frame


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def half_means(views, dim):
    """Mean of the first and second half of each view along ``dim`` (-1: left/right, -2: top/bottom)."""
    first, second = torch.chunk(views, 2, dim=dim)
    return first.mean(dim=(1, 2, 3)), second.mean(dim=(1, 2, 3))


# ---- encoder --------------------------------------------------------------------------------


def test_encoder_maps_one_channel_frames_to_512_features():
    encoder = resnet18_encoder().eval()
    with torch.no_grad():
        h = encoder(torch.rand(3, 1, 64, 64))
    assert h.shape == (3, 512) and torch.isfinite(h).all()
    with pytest.raises(RuntimeError):  # RGB input no longer fits the stem
        encoder(torch.rand(1, 3, 64, 64))


def test_encoder_is_resnet18_with_one_channel_stem_and_no_classifier():
    encoder = resnet18_encoder()
    conv1 = encoder.conv1
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (1, 64, (7, 7), (2, 2), (3, 3))
    assert conv1.bias is None
    assert isinstance(encoder.fc, nn.Identity)
    # ResNet18 has 11,689,512 parameters; minus the 512x1000+1000 classifier and 2 of the 3 input channels of conv1
    assert sum(p.numel() for p in encoder.parameters()) == 11_689_512 - 513_000 - 2 * 64 * 7 * 7


def test_encoder_random_init_follows_the_seed():
    torch.manual_seed(3)
    a = resnet18_encoder().conv1.weight
    torch.manual_seed(3)
    b = resnet18_encoder().conv1.weight
    c = resnet18_encoder().conv1.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- projection head ------------------------------------------------------------------------


def test_head_has_no_biases_and_computes_w2_relu_w1():
    head = ProjectionHead(512, 256, 64)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and all(m.bias is None for m in linears)
    assert not any("bias" in name for name, _ in head.named_parameters())
    h = torch.randn(5, 512)
    expected = head.layer2.weight @ torch.clamp(head.layer1.weight @ h.T, min=0)
    assert torch.allclose(head(h), expected.T, atol=1e-5)
    assert head(h).shape == (5, 64)


def test_head_refuses_bad_dimensions():
    with pytest.raises(BadInputError, match="out_dim"):
        ProjectionHead(512, 512, 0)


# ---- frames_to_input ------------------------------------------------------------------------


def test_frames_to_input_scales_uint8_and_resizes():
    frames = torch.full((2, 64, 48), 255, dtype=torch.uint8)
    frames[1] = 51
    x = frames_to_input(frames, 32)
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(1, 32, 32)) and torch.allclose(x[1], torch.full((1, 32, 32), 0.2))
    assert frames_to_input(frames).shape == (2, 1, 64, 48)
    with pytest.raises(BadInputError, match="uint8"):
        frames_to_input(frames.float(), 32)


# ---- augmentation ---------------------------------------------------------------------------


def test_views_of_the_same_frame_all_differ():
    frame = torch.rand(1, 1, 32, 32, generator=gen(1))
    views = two_views(frame.expand(8, 1, 32, 32), AugmentConfig(), gen(), out_size=32)
    assert views.shape == (16, 1, 32, 32)
    flat = views.flatten(1)
    distance = torch.cdist(flat, flat)
    assert (distance + torch.eye(16) * 1e9).min() > 1e-3  # every pair of views differs


def test_two_views_of_frame_k_sit_on_rows_2k_and_2k_plus_1():
    levels = torch.tensor([0.1, 0.5, 0.9])
    frames = levels.view(3, 1, 1, 1).expand(3, 1, 32, 32)  # constant frames: every crop keeps the level
    views = two_views(frames, AugmentConfig(), gen(), out_size=16)
    assert torch.allclose(views.mean(dim=(1, 2, 3)), levels.repeat_interleave(2), atol=1e-6)


def test_never_flips_left_right():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(200, 1, 32, 32)  # brighter to the right
    views = two_views(ramp, AugmentConfig(), gen(), out_size=32)  # default random crops
    left, right = half_means(views, -1)
    assert (left < right).all()
    bright_left = torch.zeros(100, 1, 32, 32)
    bright_left[..., :16] = 1.0
    views = two_views(bright_left, AugmentConfig(**ONLY_FLIP), gen(), out_size=32)
    left, right = half_means(views, -1)
    assert (left > 0.99).all() and (right < 0.01).all()


def test_flips_top_bottom_about_half_the_time():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(1000, 1, 32, 32)  # brighter at the bottom
    views = two_views(ramp, AugmentConfig(**ONLY_FLIP), gen(), out_size=32)
    top, bottom = half_means(views, -2)
    flipped = (top > bottom).double().mean().item()
    assert 0.45 < flipped < 0.55  # 2000 views: binomial sd 0.011
    assert (views[top > bottom] - torch.flip(ramp[0], dims=[-2])).abs().max() < 1e-5
    assert (views[top < bottom] - ramp[0]).abs().max() < 1e-5


def test_flip_probability_zero_and_one():
    ramp = torch.linspace(0, 1, 16).view(1, 1, 16, 1).expand(50, 1, 16, 16)
    never = two_views(ramp, AugmentConfig(**ONLY_FLIP, flip_top_bottom=0.0), gen(), out_size=16)
    always = two_views(ramp, AugmentConfig(**ONLY_FLIP, flip_top_bottom=1.0), gen(), out_size=16)
    assert torch.allclose(never, ramp[:1].expand_as(never), atol=1e-5)
    assert torch.allclose(always, torch.flip(ramp[:1], dims=[-2]).expand_as(always), atol=1e-5)


def test_crop_sizes_follow_scale_and_ratio():
    cfg = AugmentConfig(crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    params = sample_params(2000, cfg, gen(), (64, 64))
    crop_w, crop_h = params.theta[:, 0, 0], params.theta[:, 1, 1].abs()  # no rotation: diagonal = crop fractions
    area, ratio = crop_w * crop_h, crop_w / crop_h
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.6 + 1e-5
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 2.0 + 1e-5
    assert abs(area.mean().item() - 0.4) < 0.02  # uniform in the area range (all these crops fit)
    centre = params.theta[:, :, 2]
    assert (centre[:, 0].abs() <= 1 - crop_w + 1e-6).all() and (centre[:, 1].abs() <= 1 - crop_h + 1e-6).all()


def test_default_crops_stay_inside_the_frame_and_vary_in_size():
    params = sample_params(4000, AugmentConfig(), gen(), (128, 128))
    crop_w, crop_h = params.theta[:, 0, 0], params.theta[:, 1, 1].abs()
    assert (crop_w <= 1 + 1e-6).all() and (crop_h <= 1 + 1e-6).all()
    area = crop_w * crop_h
    assert area.min() < 0.1 and area.max() > 0.95


def test_same_seed_same_views_other_seed_other_views():
    frames = torch.rand(4, 1, 32, 32, generator=gen(5))
    a = two_views(frames, AugmentConfig(), gen(1), 32)
    b = two_views(frames, AugmentConfig(), gen(1), 32)
    c = two_views(frames, AugmentConfig(), gen(2), 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_extras_are_off_by_default():
    cfg = AugmentConfig()
    assert (cfg.brightness, cfg.contrast, cfg.rotation_degrees, cfg.blur_sigma) == (0, 0, 0, 0)
    params = sample_params(4, cfg, gen())
    assert params.brightness is None and params.contrast is None and params.blur_sigma is None
    assert torch.allclose(params.theta[:, 0, 1], torch.zeros(4)) and torch.allclose(params.theta[:, 1, 0], torch.zeros(4))


def test_brightness_jitter_scales_each_view():
    frames = torch.full((50, 1, 16, 16), 0.5)
    views = two_views(frames, AugmentConfig(**ONLY_FLIP, brightness=0.4), gen(), 16)
    levels = views.mean(dim=(1, 2, 3))
    assert levels.min() >= 0.3 - 1e-6 and levels.max() <= 0.7 + 1e-6 and levels.std() > 0.05
    assert torch.allclose(views.std(dim=(1, 2, 3)), torch.zeros(100), atol=1e-6)  # still constant views


def test_contrast_jitter_changes_spread_not_mean():
    frames = torch.linspace(0.3, 0.7, 16).view(1, 1, 1, 16).expand(20, 1, 16, 16)
    views = two_views(frames, AugmentConfig(**ONLY_FLIP, contrast=0.5), gen(), 16)
    assert torch.allclose(views.mean(dim=(1, 2, 3)), torch.full((40,), 0.5), atol=1e-5)
    assert views.std(dim=(1, 2, 3)).std() > 0.01


def test_blur_smooths_some_views():
    checker = ((torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2).float().expand(100, 1, 16, 16)
    views = two_views(checker, AugmentConfig(**ONLY_FLIP, flip_top_bottom=0.0, blur_sigma=2.0), gen(), 16)
    changed = (views - checker[:1]).abs().amax(dim=(1, 2, 3)) > 1e-5
    assert 0.35 < changed.double().mean() < 0.65  # blur_probability 0.5
    assert (views[changed].std(dim=(1, 2, 3)) < checker[0].std()).all()  # blurring only smooths


def test_rotation_turns_the_frame():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(200, 1, 32, 32)
    views = two_views(ramp, AugmentConfig(**ONLY_FLIP, flip_top_bottom=0.0, rotation_degrees=30.0), gen(), 32)
    top, bottom = half_means(views, -2)
    # rotating a left-right ramp tilts it, so the top and bottom halves differ, both ways
    assert (top - bottom).max() > 0.05 and (bottom - top).max() > 0.05


def test_apply_params_refuses_mismatched_count():
    params = sample_params(3, AugmentConfig(), gen())
    with pytest.raises(BadInputError, match="one set of parameters per view"):
        apply_params(torch.rand(4, 1, 8, 8), params, 8)


@pytest.mark.parametrize(
    "bad",
    [dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.5)), dict(crop_scale=(0.5,)), dict(crop_ratio=(2.0, 1.0)),
     dict(flip_top_bottom=1.5), dict(brightness=-0.1), dict(blur_sigma=0.05)],
)
def test_bad_augment_settings_refused(bad):
    with pytest.raises(BadInputError):
        AugmentConfig(**bad)


def test_augment_config_accepts_lists_from_json():
    assert AugmentConfig(crop_scale=[0.5, 1]).crop_scale == (0.5, 1.0)
    assert math.isclose(AugmentConfig().crop_ratio[1], 4 / 3)
    assert np.isfinite(AugmentConfig().crop_scale).all()
