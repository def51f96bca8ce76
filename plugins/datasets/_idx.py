"""IDX files (the MNIST / Fashion-MNIST format) and the Fashion-MNIST sources built on them.

Free of MindSpore: a source is a random-access sequence of ``(HWC uint8 image, int label)``.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mindplug._errors import DataError, did_you_mean

IMAGES_MAGIC = 0x00000803   # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801   # unsigned bytes, 1 dimension
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
#: split -> (images file, labels file), without the optional .gz
FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_ALIASES = {"train": "train", "test": "test", "val": "test", "validation": "test", "t10k": "test"}
HOW_TO_GET = ("install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
              f"{DEBIAN_DIR}) or download the four *-ubyte.gz files from the Zalando release "
              "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into data_dir; "
              "or use the dataset 'fashion_mnist_sample', shipped with mindplug")


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one IDX file (gzip or plain), checking its magic number and that its size matches its header."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; the file is damaged or not gzip - "
                        f"fetch it again") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is {len(raw)} bytes long, too short for a header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"IDX file {path} has magic number 0x{found:08x}, expected 0x{magic:08x} "
                        f"({'images' if magic == IMAGES_MAGIC else 'labels'}); is it the right file?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} ends inside its header ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"IDX file {path} holds {len(raw)} bytes, but its header {dims} needs {expected}; "
                        f"the file is truncated or damaged - fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_file(data_dir: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


class ArraySource:
    """A random-access source over in-memory ``(N, H, W)`` or ``(N, H, W, C)`` uint8 images and int labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                 in_channels: int = 1, name: str = "") -> None:
        if in_channels not in (1, 3):
            raise DataError(f"{name or 'dataset'}: in_channels must be 1 or 3, got {in_channels}")
        self.images = images if images.ndim == 4 else images[:, :, :, None]
        self.labels = labels.astype(np.int64)
        self.class_names: List[str] = list(class_names)
        self.num_classes = len(self.class_names)
        self.in_channels = in_channels
        self.name = name

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        image = self.images[index]
        if self.in_channels == 3 and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return image, int(self.labels[index])

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        """Every image and label at once, as ``self[i]`` gives them, for the pipeline's array path: it reads
        rows from these arrays without calling ``self[i]`` (docs/plugin-kinds.md, datasets)."""
        if self.in_channels == 3 and self.images.shape[3] == 1:
            return np.repeat(self.images, 3, axis=3), self.labels
        return self.images, self.labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images, {self.num_classes} classes)"


def load_idx_split(data_dir: str | os.PathLike, split: str, *, dataset: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` and labels ``(N,)`` of one split, with the checks a user can act on."""
    key = SPLIT_ALIASES.get(str(split).lower())
    if key is None:
        raise DataError(f"{dataset}: unknown split {split!r}{did_you_mean(str(split), SPLIT_ALIASES)}; "
                        f"use 'train' or 'test' (also 'val')")
    root = Path(data_dir)
    stems = FILES[key]
    paths = [find_file(root, stem) for stem in stems]
    if None in paths:
        missing = [stem + "[.gz]" for stem, p in zip(stems, paths) if p is None]
        where = f"directory {root} does not exist" if not root.is_dir() else f"{', '.join(missing)} not in {root}"
        raise DataError(f"{dataset}: the {key} split's IDX files are missing ({where}); {HOW_TO_GET}")
    images, labels = read_idx(paths[0], IMAGES_MAGIC), read_idx(paths[1], LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{dataset}: {paths[0]} has {images.shape[0]} images but {paths[1]} has "
                        f"{labels.shape[0]} labels; the files come from different releases")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{dataset}: {paths[1]} has label {int(labels.max())}, outside 0..9")
    return images, labels


def fashion_mnist(*, data_dir: str | None = None, split: str = "train", in_channels: int = 1) -> ArraySource:
    """Fashion-MNIST from its IDX files (gzip or plain); default location: the Debian package's."""
    images, labels = load_idx_split(data_dir or DEBIAN_DIR, split, dataset="fashion_mnist")
    return ArraySource(images, labels, FASHION_MNIST_CLASSES, in_channels=in_channels,
                       name=f"fashion_mnist:{split}")


SAMPLE_DIR = Path(__file__).resolve().parent / "data"


def fashion_mnist_sample(*, data_dir: str | None = None, split: str = "train",
                         in_channels: int = 1) -> ArraySource:
    """The class-balanced Fashion-MNIST sample shipped inside mindplug (4000 train / 1000 test, MIT)."""
    images, labels = load_idx_split(data_dir or SAMPLE_DIR, split, dataset="fashion_mnist_sample")
    return ArraySource(images, labels, FASHION_MNIST_CLASSES, in_channels=in_channels,
                       name=f"fashion_mnist_sample:{split}")
