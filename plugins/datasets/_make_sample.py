"""Rebuild the embedded Fashion-MNIST sample from the full IDX files.

``python -m mindplug.plugins.datasets._make_sample [source_dir]``: the first 400 images of every class
from the training file and the first 100 of every class from the test file, in file order, written as
gzip IDX files (mtime 0, so the bytes are reproducible) into ``data/``.
"""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from ._idx import DEBIAN_DIR, FILES, IMAGES_MAGIC, LABELS_MAGIC, SAMPLE_DIR, load_idx_split

PER_CLASS = {"train": 400, "test": 100}


def balanced_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` indices of every class, in file order."""
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        out.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main(source: str = DEBIAN_DIR, target: Path = SAMPLE_DIR) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for split, (images_stem, labels_stem) in FILES.items():
        images, labels = load_idx_split(source, split, dataset="fashion_mnist")
        keep = balanced_indices(labels, PER_CLASS[split])
        write_idx(target / (images_stem + ".gz"), images[keep], IMAGES_MAGIC)
        write_idx(target / (labels_stem + ".gz"), labels[keep], LABELS_MAGIC)
        print(f"{split}: {keep.size} images from {source}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
