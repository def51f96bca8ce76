"""Write the Animal-MNIST dataset (10 animal classes, 10,000 grey 28x28 images, MIT licence) as an image
folder, the layout `mindplug train` reads with `dataset: image_folder`: OUT/train/<class>/*.png and
OUT/val/<class>/*.png, 800 training and 200 validation images per class (a fixed, seeded split).

The data comes from the `animal-mnist` package on PyPI, whose only other content is a loader that imports
TensorFlow, so install it without its dependencies:

    python -m pip install --no-deps animal-mnist==0.4
    python examples/datasets/animal_mnist_to_folder.py /path/to/animal_mnist

Its files are pickled numpy arrays; they are read with an unpickler that accepts nothing but numpy arrays,
so a tampered file cannot run code.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any, Tuple

import numpy as np
from PIL import Image

#: the label order of the package (its README lists the classes in this order)
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are expected here")
        return super().find_class(module, name)


def _load(path: Path) -> np.ndarray:
    return np.asarray(_ArraysOnly(io.BytesIO(gzip.decompress(path.read_bytes()))).load())


def load_animal_mnist() -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int [N]) from the installed animal-mnist package."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("animal-mnist is not installed: python -m pip install --no-deps animal-mnist==0.4")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    images = _load(folder / "animal_data_version_3.gz").astype(np.uint8).reshape(-1, 28, 28)
    labels = _load(folder / "animal_label_version_3.gz").astype(np.int64).reshape(-1)
    if images.shape[0] != labels.shape[0] or labels.max() >= len(CLASSES):
        raise SystemExit(f"unexpected data: {images.shape[0]} images, {labels.shape[0]} labels, max label "
                         f"{labels.max()}")
    return images, labels


def write_folder(out: Path, val_per_class: int = 200, seed: int = 0) -> None:
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        indices = rng.permutation(np.flatnonzero(labels == label))
        for split, chosen in (("val", indices[:val_per_class]), ("train", indices[val_per_class:])):
            target = out / split / name
            target.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(target / f"{index:05d}.png")
    print(f"wrote {len(labels)} images of {len(CLASSES)} classes into {out}/train and {out}/val")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (it becomes the recipe's data_dir)")
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_folder(args.out, args.val_per_class, args.seed)


if __name__ == "__main__":
    main()
