"""The transform pipeline builder (recipe keys and explicit lists) and make_mindspore_dataset
(seeded order, disjoint full-cover shards, output columns, batch transform)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import mindplug
from mindplug import ConfigError, DataError, UnknownComponentError
from mindplug._data import ShardSampler, make_mindspore_dataset
from mindplug._transforms import build_batch_transform, build_transforms
from mindplug.plugins.augmentations._pipeline import build_batch_transform as recipe_batch_transform
from mindplug.plugins.augmentations._pipeline import build_transforms as recipe_transforms
from mindplug.plugins.augmentations._pipeline import recipe_eval_steps, recipe_train_steps


class Recorder:
    """A stand-in for mindplug.create: records (name, kwargs) so the builder is tested alone."""

    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, name: str, kind: str, **kwargs):
        assert kind == "augmentation"
        self.calls.append((name, kwargs))
        return name


def names(steps) -> list:
    return [name for name, _ in steps]


# ---------------------------------------------------------------- recipe keys

def test_recipe_train_is_mindcv_order_with_gray_to_rgb():
    steps = recipe_train_steps({"image_resize": 32, "hflip": 0.5, "vflip": 0.2, "color_jitter": 0.4,
                                "re_prob": 0.25, "re_value": "random", "in_channels": 3})
    assert names(steps) == ["to_rgb", "random_resized_crop", "hflip", "vflip", "color_jitter", "normalize",
                            "random_erasing"]
    args = dict(steps)
    assert args["random_resized_crop"] == {"size": 32, "scale": [0.08, 1.0], "ratio": [0.75, 1.333],
                                           "interpolation": "bilinear"}
    assert args["color_jitter"] == {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}
    assert args["random_erasing"]["value"] == "random" and args["random_erasing"]["prob"] == 0.25
    np.testing.assert_allclose(args["normalize"]["mean"], [123.675, 116.28, 103.53])


def test_recipe_auto_augment_replaces_color_jitter_and_picks_the_component():
    for policy, component in (("randaug-m9-n2-mstd0.5", "rand_augment"), ("autoaug-originalr", "auto_augment"),
                              ("trivialaugwide", "trivial_augment_wide"), ("augmix-m3-w3", "augmix")):
        steps = recipe_train_steps({"auto_augment": policy, "color_jitter": 0.4, "hflip": 0.0})
        assert names(steps) == ["to_rgb", "random_resized_crop", component, "normalize"]
        assert dict(steps)[component]["policy"] == policy
    with pytest.raises(ConfigError, match="unknown policy 'randaugment-m9'.*randaug"):
        recipe_train_steps({"auto_augment": "randaugment-m9"})


def test_recipe_eval_uses_crop_pct_and_one_channel_normalisation():
    steps = recipe_eval_steps({"image_resize": 224, "crop_pct": 0.875, "in_channels": 1})
    assert names(steps) == ["to_grayscale", "resize_center_crop", "normalize"]
    assert dict(steps)["resize_center_crop"] == {"size": 224, "crop_pct": 0.875, "interpolation": "bilinear"}
    norm = dict(steps)["normalize"]
    assert len(norm["mean"]) == 1 and norm["channels"] == 1
    np.testing.assert_allclose(norm["mean"], [(123.675 + 116.28 + 103.53) / 3])


def test_builder_goes_through_the_create_function_only():
    rec = Recorder()
    out = recipe_transforms({"image_resize": 16, "hflip": 0.5}, is_training=True, create=rec)
    assert out == names(rec.calls) == ["to_rgb", "random_resized_crop", "hflip", "normalize"]


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("is_training", [True, False])
def test_recipe_pipeline_runs_on_gray_data(in_channels, is_training):
    cfg = {"image_resize": 24, "crop_pct": 0.875, "in_channels": in_channels, "color_jitter": 0.4,
           "auto_augment": "randaug-m9-n2-mstd0.5" if in_channels == 3 else None, "re_prob": 0.5}
    x = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    for op in build_transforms(cfg, is_training=is_training):
        x = op(x)
    assert x.shape == (in_channels, 24, 24) and x.dtype == np.float32


# ---------------------------------------------------------------- explicit lists

FMNIST_TRAIN = [{"type": "to_rgb"}, {"type": "random_crop", "size": 28, "padding": 2}, "hflip",
                {"type": "resize", "size": 32}, {"type": "normalize", "mean": [72.9], "std": [90.0], "channels": 3}]


def test_explicit_lists_for_train_eval_batch():
    rec = Recorder()
    cfg = {"transforms": {"train": FMNIST_TRAIN, "eval": ["to_rgb", {"type": "resize", "size": 32}],
                          "batch": {"type": "mixup_cutmix", "mixup_alpha": 0.2}},
           "image_resize": 999}                                   # recipe keys are ignored when a list is given
    assert build_transforms(cfg, is_training=True, create=rec) == ["to_rgb", "random_crop", "hflip", "resize",
                                                                   "normalize"]
    assert rec.calls[1] == ("random_crop", {"size": 28, "padding": 2})
    assert build_transforms(cfg, is_training=False, create=rec) == ["to_rgb", "resize"]
    assert build_batch_transform(cfg, 10, create=rec) == "mixup_cutmix"
    assert rec.calls[-1] == ("mixup_cutmix", {"mixup_alpha": 0.2, "num_classes": 10})


def test_engine_list_keys_are_accepted():
    rec = Recorder()
    cfg = {"augmentations": ["hflip"], "eval_augmentations": [{"type": "center_crop", "size": 8}]}
    assert build_transforms(cfg, is_training=True, create=rec) == ["hflip"]
    assert build_transforms(cfg, is_training=False, create=rec) == ["center_crop"]
    with pytest.raises(ConfigError, match="both 'transforms.train' and 'augmentations'"):
        build_transforms({"augmentations": ["hflip"], "transforms": {"train": ["vflip"]}}, is_training=True)


def test_explicit_list_errors_name_the_config_path():
    with pytest.raises(UnknownComponentError, match=r"transforms.train\[1\].*hflp.*did you mean 'hflip'"):
        build_transforms({"transforms": {"train": ["to_rgb", "hflp"]}}, is_training=True)
    with pytest.raises(ConfigError, match=r"transforms.train\[0\].*'type' key"):
        build_transforms({"transforms": {"train": [{"size": 3}]}}, is_training=True)
    with pytest.raises(ConfigError, match="unknown key 'trian'.*'train'"):
        build_transforms({"transforms": {"trian": []}}, is_training=True)
    with pytest.raises(mindplug.ComponentArgumentError, match=r"transforms.train\[0\].*sise"):
        build_transforms({"transforms": {"train": [{"type": "resize", "sise": 3}]}}, is_training=True)


def test_batch_transform_from_recipe_keys():
    assert recipe_batch_transform({"mixup": 0.0, "cutmix": 0.0}, 10) is None
    assert build_batch_transform({"mixup": 0.0, "cutmix": 0.0}, 10) is None  # through the default pipeline
    rec = Recorder()
    recipe_batch_transform({"mixup": 0.8, "cutmix": 1.0, "cutmix_prob": 0.7}, 5, create=rec)
    assert rec.calls == [("mixup_cutmix", {"num_classes": 5, "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
                                           "prob": 0.7, "switch_prob": 0.5})]


# ---------------------------------------------------------------- make_mindspore_dataset

class Toy:
    """A random-access source whose pixel value is its index, so rows can be identified after transforms."""

    def __init__(self, n: int) -> None:
        self.n, self.class_names, self.num_classes = n, ["a", "b", "c"], 3

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full((4, 4, 1), i, np.uint8), i % 3


def ids(data) -> list:
    out = []
    for images, labels in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        out.extend(images[:, 0, 0, 0].astype(int).tolist())
    return out


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_are_disjoint_and_cover_everything(num_shards):
    parts = [ids(make_mindspore_dataset(Toy(10), shuffle=True, seed=5, num_shards=num_shards, shard_id=k,
                                        batch_size=4)) for k in range(num_shards)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(10))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_equal_shards_pad_by_wrapping():
    parts = [ShardSampler(10, shuffle=True, seed=1, num_shards=3, shard_id=k, equal_shards=True).indices(0)
             for k in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4] and set(np.concatenate(parts)) == set(range(10))


def test_order_is_a_function_of_seed_and_epoch():
    a = ids(make_mindspore_dataset(Toy(12), shuffle=True, seed=7, batch_size=5))
    b = ids(make_mindspore_dataset(Toy(12), shuffle=True, seed=7, batch_size=5))
    c = ids(make_mindspore_dataset(Toy(12), shuffle=True, seed=8, batch_size=5))
    assert a == b and a != c and sorted(a) == list(range(12))
    assert ids(make_mindspore_dataset(Toy(12), shuffle=False, seed=7, batch_size=5)) == list(range(12))
    data = make_mindspore_dataset(Toy(12), shuffle=True, seed=7, batch_size=12)
    it = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
    epochs = [[int(v) for v in images[:, 0, 0, 0]] for _ in range(2) for images, _ in it]
    assert epochs[0] == a and epochs[1] != a and sorted(epochs[1]) == list(range(12))
    resumed = make_mindspore_dataset(Toy(12), shuffle=True, seed=7, batch_size=12, start_epoch=1)
    assert ids(resumed) == epochs[1]


def test_output_columns_and_batch_transform():
    src = mindplug.create("fashion_mnist_sample", kind="dataset", split="test")
    cfg = {"transforms": {"train": FMNIST_TRAIN}, "mixup": 0.2}
    data = make_mindspore_dataset(src, shuffle=True, seed=0, transforms=build_transforms(cfg, is_training=True),
                                  batch_size=16, drop_remainder=True, num_parallel_workers=2,
                                  batch_transform=build_batch_transform(cfg, src.num_classes))
    assert data.get_col_names() == ["image", "label"]
    # iterators are run to the end: abandoning one with 2 source workers costs MindSpore ~5 s of teardown
    batches = list(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    images, labels = batches[0]
    assert len(batches) == 62 and images.shape == (16, 3, 32, 32) and images.dtype == np.float32
    assert labels.shape == (16, 10) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)
    plain = make_mindspore_dataset(src, shuffle=False, seed=0, batch_size=8)
    batches = list(plain.create_tuple_iterator(num_epochs=1, output_numpy=True))
    images, labels = batches[0]
    assert len(batches) == 125 and images.shape == (8, 1, 28, 28) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.tolist() == [int(src[i][1]) for i in range(8)]
    np.testing.assert_array_equal(images[3, 0], src[3][0][:, :, 0])     # no transforms: raw values, CHW


def test_bad_dataset_arguments():
    with pytest.raises(ConfigError, match="both num_shards and shard_id"):
        make_mindspore_dataset(Toy(4), shuffle=False, seed=0, num_shards=2)
    with pytest.raises(ConfigError, match="shard_id must be in 0..num_shards-1"):
        make_mindspore_dataset(Toy(4), shuffle=False, seed=0, num_shards=2, shard_id=2)
    with pytest.raises(DataError, match="is empty"):
        make_mindspore_dataset(Toy(0), shuffle=False, seed=0)
    with pytest.raises(DataError, match="fewer than num_shards"):
        make_mindspore_dataset(Toy(1), shuffle=False, seed=0, num_shards=2, shard_id=0)


@pytest.mark.slow
def test_fashion_mnist_pipeline_is_fast_enough_for_training():
    """The README's promise: the 32 px Fashion-MNIST training pipeline feeds hundreds of images/s on 2 cores."""
    src = mindplug.create("fashion_mnist_sample", kind="dataset")
    cfg = {"transforms": {"train": FMNIST_TRAIN}}
    data = make_mindspore_dataset(src, shuffle=True, seed=0, transforms=build_transforms(cfg, is_training=True),
                                  batch_size=128, num_parallel_workers=2)
    start, n = time.perf_counter(), 0
    for images, _ in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        n += images.shape[0]
    assert n == 4000 and n / (time.perf_counter() - start) > 500


def test_random_steps_draw_independently():
    """MindSpore seeds every random C++ op of a pipeline alike (a crop's offset would decide the flip): the
    pipeline keeps one, and the flips draw from generators of their own."""
    import mindplug

    class Marker:
        class_names, num_classes = ["a"], 1

        def __len__(self):
            return 1200

        def __getitem__(self, i):
            image = np.zeros((8, 8, 1), np.uint8)
            image[0, 1, 0] = 255
            return image, 0

    crop = mindplug.create("random_crop", kind="augmentation", size=8, padding=2)
    ops = [crop, mindplug.create("hflip", kind="augmentation", prob=0.5),
           mindplug.create("vflip", kind="augmentation", prob=0.5)]
    normalize = mindplug.create("normalize", kind="augmentation", mean=[0.0], std=[1.0], channels=1)
    for steps, plane in ((ops, lambda batch: batch[:, :, :, 0]), (ops + [normalize], lambda batch: batch[:, 0])):
        _assert_independent_flips(steps, plane, Marker())


def _assert_independent_flips(ops, plane, source):
    feed = make_mindspore_dataset(source, shuffle=False, seed=3, transforms=ops, batch_size=100,
                                  num_parallel_workers=2)
    cases = []  # (the crop's row offset, flipped left-right, flipped up-down) of every visible marker
    for images, _ in feed.create_tuple_iterator(num_epochs=1, output_numpy=True):
        for image in plane(images):
            found = np.argwhere(image == 255)
            if len(found):
                row, col = (int(v) for v in found[0])
                cases.append((row if row < 4 else 7 - row, col >= 4, row >= 4))
    cases = np.array(cases)
    assert len(cases) > 400
    for offset in (0, 1, 2):  # whatever the crop drew, each flip happens about half the time
        chosen = cases[cases[:, 0] == offset]
        assert len(chosen) > 60 and 0.3 < chosen[:, 1].mean() < 0.7 and 0.3 < chosen[:, 2].mean() < 0.7, offset
    both = (cases[:, 1] & cases[:, 2]).mean()
    assert 0.15 < both < 0.35, both  # not 0.5: the two flips are not the same draw


def test_flips_before_per_pixel_steps_move_to_whole_batches():
    import mindplug
    from mindplug._map_stages import defer_flips

    crop = mindplug.create("random_crop", kind="augmentation", size=8, padding=2)
    hflip = mindplug.create("hflip", kind="augmentation", prob=0.3)
    normalize = mindplug.create("normalize", kind="augmentation", mean=[0.0], std=[1.0], channels=1)
    kept, flips = defer_flips([crop, hflip, normalize])
    assert kept == [crop, normalize] and flips == [(3, 0.3, False)]  # columns of an NCHW batch
    assert defer_flips([crop, hflip])[1] == [(2, 0.3, True)]          # columns of an NHWC batch
    policy = mindplug.create("rand_augment", kind="augmentation")
    assert defer_flips([crop, hflip, policy, normalize]) == ([crop, hflip, policy, normalize], [])
