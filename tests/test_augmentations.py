"""Augmentation components: created by name, shapes/dtypes as documented, seeded reproducibility,
policy-string parsing (incl. the inc0 and mstd cases other toolboxes get wrong), mixup/cutmix, errors."""
from __future__ import annotations

import math
import os

import mindspore.dataset as ds
import numpy as np
import pytest

import mindplug
from mindplug import ComponentArgumentError, ConfigError, UnknownComponentError
from mindplug.plugins.augmentations._policy import (AugMixConfig, AutoAugmentConfig, RandAugmentConfig,
                                                    family_of, parse_policy)


def aug(name: str, **kwargs):
    return mindplug.create(name, kind="augmentation", **kwargs)


def image(channels: int, height: int = 28, width: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


# name, kwargs, expected output shape as a function of (H, W, C) input
HWC_CASES = [
    ("random_resized_crop", {"size": 16}, lambda h, w, c: (16, 16, c)),
    ("random_resized_crop", {"size": [12, 18], "interpolation": "bicubic"}, lambda h, w, c: (12, 18, c)),
    ("random_crop", {"size": 20, "padding": 4}, lambda h, w, c: (20, 20, c)),
    ("hflip", {"prob": 1.0}, lambda h, w, c: (h, w, c)),
    ("vflip", {"prob": 1.0}, lambda h, w, c: (h, w, c)),
    ("resize", {"size": [32, 30]}, lambda h, w, c: (32, 30, c)),
    ("center_crop", {"size": 16}, lambda h, w, c: (16, 16, c)),
    ("resize_center_crop", {"size": 16, "crop_pct": 0.875}, lambda h, w, c: (16, 16, c)),
    ("color_jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}, lambda h, w, c: (h, w, c)),
    ("rand_augment", {"policy": "randaug-m9-n2-mstd0.5"}, lambda h, w, c: (h, w, c)),
    ("rand_augment", {"policy": "randaug-m9-n3-mstd0.5-inc1-w0"}, lambda h, w, c: (h, w, c)),
    ("auto_augment", {"policy": "autoaug"}, lambda h, w, c: (h, w, c)),
    ("auto_augment", {"policy": "autoaug-originalr"}, lambda h, w, c: (h, w, c)),
    ("auto_augment", {"policy": "autoaug-v0-mstd0.5"}, lambda h, w, c: (h, w, c)),
    ("trivial_augment_wide", {}, lambda h, w, c: (h, w, c)),
    ("augmix", {"policy": "augmix-m3-w3"}, lambda h, w, c: (h, w, c)),
    ("augmix", {"policy": "augmix-m5-w2-d2-b1"}, lambda h, w, c: (h, w, c)),
    ("to_rgb", {}, lambda h, w, c: (h, w, 3)),
    ("to_grayscale", {}, lambda h, w, c: (h, w, 1)),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name,kwargs,shape", HWC_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HWC_CASES)])
def test_hwc_transforms_keep_dtype_and_documented_shape(name, kwargs, shape, channels):
    ds.config.set_seed(1)
    op = aug(name, **kwargs)
    x = image(channels)
    for _ in range(3):                     # several draws: every random branch keeps the contract
        out = np.asarray(op(x))
        assert out.dtype == np.uint8
        assert out.shape == shape(*x.shape)


@pytest.mark.parametrize("name,kwargs", [
    ("random_resized_crop", {"size": 16}), ("random_crop", {"size": 24, "padding": 2}),
    ("color_jitter", {"hue": 0.1}), ("rand_augment", {"policy": "randaug-m9-n2-mstd0.5-inc1"}),
    ("auto_augment", {}), ("trivial_augment_wide", {}), ("augmix", {}), ("hflip", {}),
])
def test_random_transforms_are_reproducible_under_a_seed(name, kwargs):
    """In a MindSpore pipeline (how they run in training): same seed, same draws; another seed, others.

    (Called eagerly with a seed set, MindSpore's own random ops repeat one draw on every call.)
    """
    batch = np.stack([image(3, height=28, width=28, seed=s) for s in range(8)])

    def run(seed: int) -> list:
        ds.config.set_seed(seed)
        data = ds.NumpySlicesDataset({"image": batch}, shuffle=False)
        data = data.map(operations=[aug(name, **kwargs)], input_columns="image", num_parallel_workers=1)
        return [row[0] for row in data.create_tuple_iterator(num_epochs=1, output_numpy=True)]

    first, second, third = run(123), run(123), run(124)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, third))   # the seed matters


def test_flips_are_exact_mirrors():
    x = image(3)
    assert np.array_equal(aug("hflip", prob=1.0)(x), x[:, ::-1])
    assert np.array_equal(aug("vflip", prob=1.0)(x), x[::-1])
    assert np.array_equal(aug("hflip", prob=0.0)(x), x)


def test_random_crop_padding_shows_the_fill():
    x = np.full((8, 8, 1), 200, np.uint8)
    ds.config.set_seed(0)
    op = aug("random_crop", size=8, padding=4, fill=0)
    outs = [op(x) for _ in range(20)]
    assert any((o == 0).any() for o in outs) and all(o.shape == (8, 8, 1) for o in outs)


def test_resize_center_crop_uses_crop_pct_like_mindcv():
    x = np.zeros((64, 64, 3), np.uint8)
    x[24:40, 24:40] = 255                       # a bright centre square
    out = aug("resize_center_crop", size=32, crop_pct=0.5)(x)   # resize to 64 (no-op), crop the middle 32
    assert out.shape == (32, 32, 3)
    assert out[8:24, 8:24].min() == 255 and out[:4].max() == 0


def test_normalize_makes_chw_float32_with_mean_std_on_0_255():
    x = np.full((4, 6, 3), 255, np.uint8)
    out = aug("normalize", mean=[127.5, 0, 255], std=[127.5, 255, 1])(x)
    assert out.shape == (3, 4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 1.0, 0.0], atol=1e-6)
    one = aug("normalize", mean=[100.0], std=[50.0], channels=3)(x)          # one value fits any channel count
    np.testing.assert_allclose(one, np.full((3, 4, 6), 3.1), atol=1e-5)
    gray = aug("normalize", channels=1)(image(1))
    assert gray.shape == (1, 28, 20) and gray.dtype == np.float32


@pytest.mark.parametrize("value", [0, "random"])
def test_random_erasing_on_chw_float(value):
    ds.config.set_seed(0)
    x = np.ones((3, 20, 20), np.float32)
    out = aug("random_erasing", prob=1.0, value=value)(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert not np.array_equal(out, x)


def test_to_rgb_and_grayscale():
    g = image(1)
    rgb = aug("to_rgb")(g)
    assert rgb.shape == (28, 20, 3) and all(np.array_equal(rgb[:, :, i], g[:, :, 0]) for i in range(3))
    assert aug("to_rgb")(rgb) is rgb
    assert np.array_equal(aug("to_grayscale")(rgb), g)


def test_policy_ops_refuse_other_channel_counts_with_the_fix():
    with pytest.raises(ConfigError, match="1 or 3 channels.*to_rgb"):
        aug("rand_augment")(image(4))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_policy_op_at_every_magnitude(channels):
    """Each op of the RandAugment/AutoAugment/AugMix tables at the ends of its range (0 bits kept included)."""
    from mindplug.plugins.augmentations._pil_ops import LEVEL, AugmentOp, from_pil, to_pil

    x = image(channels, 9, 7)
    for name in LEVEL:
        for magnitude in (0.0, 5.0, 10.0, 12.0):
            out = from_pil(AugmentOp(name, 1.0, magnitude, magnitude_max=12.0)(to_pil(x)))
            assert out.shape == x.shape and out.dtype == np.uint8, name
    black = from_pil(AugmentOp("PosterizeIncreasing", 1.0, 10.0)(to_pil(x)))
    assert not black.any()


# ---------------------------------------------------------------- policy strings

def test_randaug_string_parsed_fully():
    cfg = parse_policy("randaug-m9-n2-mstd0.5")
    assert cfg == RandAugmentConfig(magnitude=9, num_layers=2, magnitude_std=0.5)
    cfg = parse_policy("rand-m7-n3-mstd1-mmax12-inc1-w0-p0.7")
    assert (cfg.magnitude, cfg.num_layers, cfg.magnitude_std, cfg.magnitude_max) == (7, 3, 1.0, 12)
    assert cfg.increasing and cfg.weight_idx == 0 and cfg.prob == 0.7
    assert parse_policy("randaug-m9-mstd101").magnitude_std == math.inf


def test_inc0_means_not_increasing():
    assert parse_policy("randaug-m9-n2-inc1").increasing is True
    assert parse_policy("randaug-m9-n2-inc0").increasing is False   # timm/MindCV: bool("0") is True
    ops = [op.name for op in aug("rand_augment", policy="randaug-m9-inc1").ops]
    assert "PosterizeIncreasing" in ops and "Posterize" not in ops
    ops = [op.name for op in aug("rand_augment", policy="randaug-m9-inc0").ops]
    assert "Posterize" in ops and "PosterizeIncreasing" not in ops


def test_mstd_reaches_every_op():
    op = aug("rand_augment", policy="randaug-m9-n2-mstd0.5")
    assert {o.magnitude_std for o in op.ops} == {0.5} and {o.magnitude for o in op.ops} == {9}
    assert {o.magnitude_std for sub in aug("auto_augment", policy="autoaug-mstd0.3").policy for o in sub} == {0.3}


def test_autoaug_policies():
    assert parse_policy("autoaug") == AutoAugmentConfig(policy="original")
    assert parse_policy("autoaug-originalr").policy == "originalr"
    assert parse_policy("autoaugr").policy == "originalr"
    assert parse_policy("autoaug-v0r-mstd0.5") == AutoAugmentConfig(policy="v0r", magnitude_std=0.5)
    names = {o.name for sub in aug("auto_augment", policy="autoaug-originalr").policy for o in sub}
    assert "PosterizeIncreasing" in names and "PosterizeOriginal" not in names


def test_augmix_and_trivialaug_strings():
    assert parse_policy("augmix-m3-w3") == AugMixConfig(severity=3, width=3)
    cfg = parse_policy("augmix-m5-w4-d2-a0.5-b1-mstd0")
    assert (cfg.severity, cfg.width, cfg.depth, cfg.alpha, cfg.blended, cfg.magnitude_std) == (5, 4, 2, 0.5, True, 0)
    assert parse_policy("trivialaugwide").num_magnitude_bins == 31
    assert family_of("trivialaugwide") == "trivial_augment_wide"


@pytest.mark.parametrize("policy,fragment", [
    ("randaug-m9-x3", "unknown token 'x3'"),
    ("randaug-m9-n2-mstd", "unknown token 'mstd'"),
    ("randaug-m9-inc2", "token 'inc2' has a bad value"),
    ("randaug-n0", "num_layers must be >= 1"),
    ("randaug-w1", "only weight set w0"),
    ("autoaug-v1", "unknown token 'v1'"),
    ("autoaug-m9", "unknown token 'm9'"),
    ("augmix-m3-q1", "unknown token 'q1'"),
    ("trivialaugwide-m9", "unknown token 'm9'"),
    ("randaugment-m9", "unknown family 'randaugment'"),
])
def test_bad_policy_strings_name_the_token(policy, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        parse_policy(policy)


def test_policy_given_to_the_wrong_family():
    with pytest.raises(ConfigError, match="is a auto_augment policy"):
        aug("rand_augment", policy="autoaug")


# ---------------------------------------------------------------- mixup / cutmix

def test_mixup_cutmix_is_a_batch_component():
    assert "batch" in mindplug.info("mixup_cutmix", kind="augmentation").tags


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.8, "cutmix_alpha": 0.0},
                                    {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
                                    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5}])
def test_mixup_cutmix_soft_labels(kwargs):
    np.random.seed(0)
    fn = aug("mixup_cutmix", num_classes=5, **kwargs)
    x = np.random.rand(6, 3, 8, 8).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 0], np.int32)
    images, soft = fn(x, y)
    assert images.shape == x.shape and images.dtype == np.float32
    assert soft.shape == (6, 5) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    if kwargs["cutmix_alpha"] and not kwargs["mixup_alpha"]:
        # cutmix: every pixel is either the image's own or its partner's, and lambda is the kept area
        own = np.isclose(images, x).all(1)
        partner = np.isclose(images, x[::-1]).all(1)
        assert (own | partner).all()
        np.testing.assert_allclose(own[1].mean(), soft[1, 1], atol=1e-6)
    if kwargs["mixup_alpha"] and not kwargs["cutmix_alpha"]:
        lam = soft[1, 1]
        np.testing.assert_allclose(images, lam * x + (1 - lam) * x[::-1], atol=1e-5)


def test_mixup_prob_zero_gives_one_hot_and_smoothing():
    fn = aug("mixup_cutmix", num_classes=4, prob=0.0, label_smoothing=0.1)
    x = np.random.rand(2, 1, 4, 4).astype(np.float32)
    images, soft = fn(x, np.array([3, 1]))
    assert np.array_equal(images, x)
    np.testing.assert_allclose(soft[0], [0.025, 0.025, 0.025, 0.925], atol=1e-6)


def test_mixup_switch_prob_picks_cutmix():
    np.random.seed(1)
    always_cut = aug("mixup_cutmix", num_classes=2, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    x = np.random.rand(4, 1, 16, 16).astype(np.float32)
    for _ in range(5):
        images, _ = always_cut(x, np.array([0, 1, 0, 1]))
        assert (np.isclose(images, x) | np.isclose(images, x[::-1])).all()


# ---------------------------------------------------------------- errors through the registry

def test_bad_names_and_arguments_are_clear():
    with pytest.raises(UnknownComponentError, match="hflip"):
        aug("hflp")
    with pytest.raises(ComponentArgumentError, match="policy"):
        aug("rand_augment", polcy="randaug-m9")
    with pytest.raises(ConfigError, match="interpolation 'bilinar'.*bilinear"):
        aug("random_resized_crop", size=8, interpolation="bilinar")
    with pytest.raises(ConfigError, match="interpolation 'lanczos' .MindSpore's resize on numpy images has no"):
        aug("resize", size=8, interpolation="lanczos")
    with pytest.raises(ConfigError, match="size must be"):
        aug("resize", size=-3)
    with pytest.raises(ConfigError, match="random_erasing"):
        aug("random_erasing", value="noise")
    with pytest.raises(ConfigError, match="normalize: mean/std have 3 values for 1-channel"):
        aug("normalize", mean=[1, 2, 3], std=[1, 1, 1], channels=1)
    with pytest.raises(ConfigError, match="hflip"):
        aug("hflip", prob=1.5)
    with pytest.raises(ConfigError, match="num_classes"):
        aug("mixup_cutmix", num_classes=0)


def test_random_erasing_on_a_batch_draws_like_per_image():
    """The pipeline runs a trailing random erasing once per batch (``on_batch``): the same boxes as the
    per-image call for the same generator, in place, and prob / scale / ratio hold over many draws."""
    erase = aug("random_erasing", prob=0.4, scale=(0.05, 0.3), ratio=(0.5, 2.0), value=-1.0)
    batch = np.ones((2000, 2, 16, 16), np.float32)

    def per_image(image, rng):
        erase._rng, erase._pid = rng, os.getpid()  # the per-image call's own generator, set for the test
        return erase(image)

    single = [per_image(image, np.random.default_rng([7, i])) for i, image in enumerate(batch[:50])]
    out = erase.on_batch(batch.copy(), np.random.default_rng(1))
    erased = (out == -1.0).all(axis=1)  # both channels of a box
    areas = erased.sum(axis=(1, 2)) / 256.0
    hit = areas > 0
    assert abs(hit.mean() - 0.4) < 0.04
    assert areas[hit].min() >= 0.03 and areas[hit].max() <= 0.33  # scale, up to the rounding of h and w
    rows, cols = erased.any(axis=2).sum(axis=1)[hit], erased.any(axis=1).sum(axis=1)[hit]
    assert ((rows / cols) >= 0.5 / 1.5).all() and ((rows / cols) <= 2.0 * 1.5).all()
    assert ((out == 1.0) | (out == -1.0)).all()
    for i, image in enumerate(batch[:50]):  # the batch form's boxes are the per-image call's
        np.testing.assert_array_equal(erase.on_batch(image[None].copy(), np.random.default_rng([7, i]))[0],
                                      single[i])
