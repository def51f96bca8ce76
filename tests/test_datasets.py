"""Dataset components: image_folder on a generated tree (corrupt files named, skip mode counted),
fashion_mnist on generated IDX files (gzip and plain) and the Debian files when present, the embedded
sample, and clear errors."""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mindplug
from mindplug import ComponentArgumentError, DataError, UnknownComponentError
from mindplug.plugins.datasets._idx import DEBIAN_DIR, FASHION_MNIST_CLASSES

CLASSES = ["cat", "dog", "emu"]


def dataset(name: str, **kwargs):
    return mindplug.create(name, kind="dataset", **kwargs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """data/train/<class>/*.png (2-3 images each, some gray), data/val/<class>/*.jpg."""
    for split, ext, per_class in (("train", ".png", 3), ("val", ".jpg", 2)):
        for c, name in enumerate(CLASSES):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((6 + i, 5, 3), 40 * c + i, np.uint8)
                mode_image = Image.fromarray(pixels).convert("L") if i == 1 else Image.fromarray(pixels)
                mode_image.save(folder / f"img{i}{ext}")
            (folder / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_reads_the_imagenet_layout(tree):
    src = dataset("image_folder", data_dir=str(tree), split="train")
    assert len(src) == 9 and src.class_names == CLASSES and src.num_classes == 3
    labels = [src[i][1] for i in range(len(src))]
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]            # sorted classes, sorted files
    img, label = src[4]
    assert img.dtype == np.uint8 and img.shape == (7, 5, 3) and label == 1   # the gray file comes out RGB
    assert img[0, 0, 0] == 41
    gray = dataset("image_folder", data_dir=str(tree), split="train", in_channels=1)
    assert gray[0][0].shape == (6, 5, 1)


def test_imagenet_name_is_the_same_component(tree):
    src = dataset("imagenet", data_dir=str(tree), split="val")
    assert len(src) == 6 and src.class_names == CLASSES
    assert mindplug.info("imagenet", kind="dataset").target == mindplug.info("image_folder", kind="dataset").target


def test_image_folder_split_dir_and_class_names(tree):
    src = dataset("image_folder", data_dir=str(tree), split="val", split_dir="train")
    assert len(src) == 9
    (tree / "val" / "emu").rename(tree / "val_emu_moved")
    fixed = dataset("image_folder", data_dir=str(tree), split="val", class_names=CLASSES)
    assert fixed.num_classes == 3 and {fixed[i][1] for i in range(len(fixed))} == {0, 1}
    with pytest.raises(DataError, match=r"class directories \['dog'\] that are not in class_names"):
        dataset("image_folder", data_dir=str(tree), split="val", class_names=["cat"])


def _corrupt(tree: Path) -> Path:
    bad = tree / "train" / "dog" / "img1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return bad


def test_corrupt_image_is_named(tree):
    bad = _corrupt(tree)
    src = dataset("image_folder", data_dir=str(tree), split="train")
    src[0]
    with pytest.raises(DataError, match=f"cannot decode image {bad}.*on_error='skip'"):
        src[4]


def test_corrupt_image_skip_mode_counts_and_reports(tree, caplog):
    bad = _corrupt(tree)
    src = dataset("image_folder", data_dir=str(tree), split="train", on_error="skip")
    with caplog.at_level(logging.WARNING):
        rows = [src[i] for i in range(len(src))]
        src[4]
    assert len(rows) == 9 and src.num_skipped == 1 and src.skipped == {str(bad)}
    assert rows[4][1] == 1 and rows[4][0].shape == (8, 5, 3)           # replaced by the next readable image
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1  # reported once


def test_image_folder_missing_paths_show_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"data_dir .*nothere does not exist.*expected layout"):
        dataset("image_folder", data_dir=str(tmp_path / "nothere"))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"split directory .*validation does not exist \(found: \['train'\]\)"):
        dataset("image_folder", data_dir=str(tmp_path), split="validation")
    with pytest.raises(DataError, match="no images .* under .*train.*expected layout"):
        dataset("image_folder", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="data_dir is required"):
        dataset("image_folder")
    with pytest.raises(DataError, match="on_error must be 'raise' or 'skip'"):
        dataset("image_folder", data_dir=str(tmp_path), on_error="ignore")


# ---------------------------------------------------------------- Fashion-MNIST

def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    data = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    (gzip.open if gz else open)(str(path) + (".gz" if gz else ""), "wb").write(data)


def make_idx_dir(root: Path, gz: bool, n_train: int = 20, n_test: int = 10) -> Path:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x803, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), 0x801, gz)
    return root


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_fashion_mnist_reads_generated_idx(tmp_path, gz):
    make_idx_dir(tmp_path, gz)
    train = dataset("fashion_mnist", data_dir=str(tmp_path))
    assert len(train) == 20 and train.class_names == list(FASHION_MNIST_CLASSES)
    img, label = train[13]
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8 and label == 3
    for split in ("test", "val"):
        assert len(dataset("fashion_mnist", data_dir=str(tmp_path), split=split)) == 10
    rgb = dataset("fashion_mnist", data_dir=str(tmp_path), in_channels=3)
    assert rgb[0][0].shape == (28, 28, 3) and np.array_equal(rgb[0][0][:, :, 2], train[0][0][:, :, 0])


def test_fashion_mnist_validates_files(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes((0x803).to_bytes(4, "big") + labels.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number 0x00000803, expected 0x00000801"):
        dataset("fashion_mnist", data_dir=str(tmp_path))
    make_idx_dir(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        dataset("fashion_mnist", data_dir=str(tmp_path))
    make_idx_dir(tmp_path, gz=False, n_train=20)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8), 0x801, gz=False)
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        dataset("fashion_mnist", data_dir=str(tmp_path))
    gzfile = tmp_path / "t10k-images-idx3-ubyte.gz"
    gzfile.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="cannot read IDX file .*t10k-images"):
        dataset("fashion_mnist", data_dir=str(tmp_path), split="test")


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*zalandoresearch"):
        dataset("fashion_mnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown split 'trian'.*'train'"):
        dataset("fashion_mnist", data_dir=str(tmp_path), split="trian")


@pytest.mark.skipif(not Path(DEBIAN_DIR, "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files():
    train, test = dataset("fashion_mnist"), dataset("fashion_mnist", split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert 0.27 < train.images[:5000].mean() / 255 < 0.30      # pixel mean ~0.286


def test_embedded_sample_loads_balanced_with_class_names():
    train = dataset("fashion_mnist_sample")
    test = dataset("fashion_mnist_sample", split="val")
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(train.labels).tolist() == [400] * 10 and np.bincount(test.labels).tolist() == [100] * 10
    assert train.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot"]
    img, label = train[0]
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8 and 0 <= label < 10 and img.max() > 0


def test_embedded_sample_is_real_fashion_mnist_with_licence():
    from mindplug.plugins.datasets._idx import SAMPLE_DIR
    assert "MIT" in (SAMPLE_DIR / "LICENSE").read_text() and "Zalando" in (SAMPLE_DIR / "README.md").read_text()
    if Path(DEBIAN_DIR, "t10k-images-idx3-ubyte.gz").exists():
        full, sample = dataset("fashion_mnist", split="test"), dataset("fashion_mnist_sample", split="test")
        first_of_class_0 = int(np.flatnonzero(full.labels == 0)[0])
        assert np.array_equal(sample.images[int(np.flatnonzero(sample.labels == 0)[0])],
                              full.images[first_of_class_0])


def test_dataset_names_and_arguments_are_checked():
    assert {"image_folder", "imagenet", "fashion_mnist", "fashion_mnist_sample"} <= set(mindplug.list(kind="dataset"))
    with pytest.raises(UnknownComponentError, match="fashion_mnist"):
        dataset("fashion_mnst")
    with pytest.raises(ComponentArgumentError, match="data_dri"):
        dataset("fashion_mnist", data_dri="/x")
    with pytest.raises(DataError, match="in_channels must be 1 or 3"):
        dataset("fashion_mnist_sample", in_channels=2)
