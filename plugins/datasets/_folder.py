"""``image_folder``: the ImageNet layout ``data_dir/<split>/<class>/<image>``, decoded with Pillow.

Classes are the sorted sub-directory names of the split (or an explicit ``class_names`` list, so that
train and val agree even if a split lacks a class); files are sorted within each class.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from mindplug._errors import DataError
from mindplug._images import read_image

LOG = logging.getLogger(__name__)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif")
LAYOUT = ("expected layout:\n  {root}/\n    {split}/\n      <class_a>/img001.jpg ...\n"
          "      <class_b>/img002.png ...")
_ON_ERROR = ("raise", "skip")
SKIP_HINT = ("; fix or delete the file, or skip unreadable files with on_error='skip' (command line: "
             "--dataset.on_error skip; `mindplug check-data -c RECIPE` lists them all)")


class ImageFolder:
    """Random-access ``(HWC uint8 image, int label)`` over a class-per-directory tree.

    ``on_error="raise"`` turns an unreadable image into a DataError naming the file; ``"skip"`` logs it,
    counts it in ``skipped`` and serves the next readable image in its place, so the length stays fixed.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, *, split_dir: str | None = None,
                 class_names: Sequence[str] | None = None, in_channels: int = 3,
                 extensions: Sequence[str] = EXTENSIONS, on_error: str = "raise") -> None:
        if in_channels not in (1, 3):
            raise DataError(f"image_folder: in_channels must be 1 or 3, got {in_channels}")
        if on_error not in _ON_ERROR:
            raise DataError(f"image_folder: on_error must be 'raise' or 'skip', got {on_error!r}")
        root = Path(data_dir).expanduser()
        folder = root / (split_dir or split)
        layout = LAYOUT.format(root=root, split=split_dir or split)
        if not root.is_dir():
            raise DataError(f"image_folder: data_dir {root} does not exist; {layout}")
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(f"image_folder: split directory {folder} does not exist (found: {present or 'none'}); "
                            f"set split_dir (train_split/val_split) or fix the tree; {layout}")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        self.class_names: List[str] = list(class_names) if class_names is not None else found
        unknown = sorted(set(found) - set(self.class_names))
        if unknown:
            raise DataError(f"image_folder: {folder} has class directories {unknown} that are not in "
                            f"class_names; add them or remove the directories")
        suffixes = tuple(e.lower() for e in extensions)
        samples: List[Tuple[str, int]] = []
        empty = []
        for label, name in enumerate(self.class_names):
            class_dir = folder / name
            if class_dir.is_dir():
                files = sorted(f for f in os.listdir(class_dir) if f.lower().endswith(suffixes))
                samples.extend((str(class_dir / f), label) for f in files)
                if not files:
                    empty.append(str(class_dir))
        if empty and class_names is None:  # a class taken from the folders must have images
            raise DataError(f"image_folder: class folder(s) without images ({', '.join(suffixes)}): "
                            f"{', '.join(empty)}; add images or remove the folder(s)")
        if not samples:
            raise DataError(f"image_folder: no images ({', '.join(suffixes)}) under {folder}; {layout}")
        self.samples = samples
        self.num_classes = len(self.class_names)
        self.channels = in_channels
        self.on_error = on_error
        self.skipped: set[str] = set()
        self._lock = threading.Lock()
        self.root, self.split = folder, split

    def __len__(self) -> int:
        return len(self.samples)

    def file_paths(self) -> List[Tuple[str, int]]:
        """``(path, label)`` of every sample in index order, for the pipeline's C++ decode path: it reads the
        files itself and calls ``self[i]`` only for one it may not decode, so ``on_error`` still applies
        (docs/plugin-kinds.md, datasets)."""
        return self.samples

    def load(self, index: int) -> Tuple[np.ndarray, int]:
        """Decode one sample (any Pillow mode: 16-bit grey is scaled, not clipped); errors name the file."""
        path, label = self.samples[index]
        return read_image(path, self.channels, hint=SKIP_HINT), label

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        if self.on_error == "raise":
            return self.load(index)
        for step in range(len(self.samples)):
            candidate = (index + step) % len(self.samples)
            try:
                return self.load(candidate)
            except DataError as exc:
                path = self.samples[candidate][0]
                with self._lock:
                    new = path not in self.skipped
                    self.skipped.add(path)
                if new:
                    LOG.warning("%s (skipped: %d so far)", exc, len(self.skipped))
        raise DataError(f"image_folder: no readable image under {self.root} ({len(self.skipped)} skipped)")

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {self.num_classes} classes)"


def image_folder(*, data_dir: str | None = None, split: str = "train", split_dir: str | None = None,
                 class_names: Sequence[str] | None = None, in_channels: int = 3,
                 extensions: Sequence[str] = EXTENSIONS, on_error: str = "raise") -> ImageFolder:
    """An ImageNet-layout folder; ``split_dir`` overrides the directory name of ``split``."""
    if not data_dir:
        raise DataError("image_folder: data_dir is required (the directory that holds train/ and val/); "
                        + LAYOUT.format(root="data_dir", split=split_dir or split))
    return ImageFolder(data_dir, split, split_dir=split_dir, class_names=class_names, in_channels=in_channels,
                       extensions=extensions, on_error=on_error)
