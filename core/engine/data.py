"""Data for a run: sources by registry name, sharded MindSpore pipelines whose order and augmentation
are a function of (seed, epoch), and the checks that fail fast on a bad data dir or an empty split."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from .._errors import DataError
from .components import build_source
from .config import Config


class Subset:
    """The first ``n`` items of a source (``num_samples``), keeping its class names."""

    def __init__(self, source: Any, n: int):
        self.source = source
        self.n = min(n, len(source))
        self.class_names = list(getattr(source, "class_names", []))
        self.num_classes = getattr(source, "num_classes", len(self.class_names))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.source[index]


def open_split(cfg: Config, split: str, *, role: str) -> Any:
    """One split's source; a missing data dir or an empty split is a DataError naming it."""
    if cfg.data_dir and not os.path.exists(str(cfg.data_dir)):
        raise DataError(f"data_dir {cfg.data_dir!r} does not exist; pass --data_dir with the dataset root "
                        f"(ImageNet layout: <data_dir>/{cfg.train_split}/<class>/*.JPEG and "
                        f"<data_dir>/{cfg.val_split}/<class>/*)")
    source = build_source(cfg, split)
    if cfg.num_samples:
        source = Subset(source, cfg.num_samples)
    if len(source) == 0:
        raise DataError(f"the {role} split '{split}' of dataset '{cfg.component('dataset')[0]}' "
                        f"(data_dir {cfg.data_dir!r}) holds no images")
    return source


def shard_size(total: int, world: int) -> int:
    """Images every rank sees per epoch: the same on every rank, so no rank waits for another."""
    return total // world if world > 1 else total


def steps_per_epoch(cfg: Config, total: int, world: int) -> int:
    per_rank = shard_size(total, world)
    steps = per_rank // cfg.batch_size if cfg.drop_remainder else math.ceil(per_rank / cfg.batch_size)
    if steps < 1:
        raise DataError(f"the training split has {total} images: fewer than one batch of {cfg.batch_size} "
                        f"per worker ({world} workers); lower --batch_size or add data")
    return steps


@dataclass
class Pipeline:
    """A batched dataset and how many batches one pass yields."""

    dataset: Any
    steps: int

    def batches(self) -> Any:
        return self.dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)


def _transforms(cfg: Config, training: bool) -> List[Any]:
    from mindplug._transforms import build_transforms

    return list(build_transforms(cfg, is_training=training))


def batch_transform(cfg: Config, num_classes: int) -> Optional[Callable[..., Any]]:
    """Mixup/cutmix on whole batches (None when the recipe has neither)."""
    from mindplug._transforms import build_batch_transform

    return build_batch_transform(cfg, num_classes)


def make_pipeline(cfg: Config, source: Any, *, training: bool, seed: int, rank: int, world: int,
                  steps: Optional[int] = None, num_classes: Optional[int] = None) -> Pipeline:
    """Decode, shard, shuffle (training), augment and batch; sample order and augmentation draws are a
    function of ``seed`` (with one data worker; several workers keep the order but not every draw)."""
    from mindplug._data import make_mindspore_dataset

    shuffle = bool(cfg.shuffle if training else cfg.eval_shuffle)
    mix = batch_transform(cfg, num_classes) if training and num_classes else None
    dataset = make_mindspore_dataset(source, shuffle=shuffle, seed=seed, num_shards=world, shard_id=rank,
                                     num_parallel_workers=cfg.num_parallel_workers,
                                     transforms=_transforms(cfg, training), batch_size=cfg.batch_size,
                                     drop_remainder=bool(cfg.drop_remainder) if training else False,
                                     batch_transform=mix, equal_shards=training and world > 1)
    if steps is not None:
        dataset = dataset.take(steps)
    return Pipeline(dataset, steps if steps is not None else dataset.get_dataset_size())


def class_names_of(source: Any, num_classes: int) -> List[str]:
    names = list(getattr(source, "class_names", []) or [])
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]
