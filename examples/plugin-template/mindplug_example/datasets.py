"""A dataset: a random-access source of (uint8 HWC image, int label), free of MindSpore."""
import os

import numpy as np


class NpzFolder:
    def __init__(self, path: str, class_names=None) -> None:
        with np.load(path) as data:
            self.images, self.labels = data["images"], data["labels"].astype(np.int64)
        if self.images.ndim == 3:
            self.images = self.images[:, :, :, None]
        count = int(self.labels.max()) + 1 if self.labels.size else 0
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def npz_folder(*, data_dir=None, split: str = "train", class_names=None) -> NpzFolder:
    """data_dir/<split>.npz with arrays 'images' (N, H, W[, C], uint8) and 'labels' (N,)."""
    if not data_dir:
        raise ValueError("npz_folder: data_dir is required (the folder that holds train.npz and val.npz)")
    path = os.path.join(data_dir, f"{split}.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz_folder: {path} does not exist; write it with numpy.savez(path, "
                                f"images=..., labels=...)")
    return NpzFolder(path, class_names)
