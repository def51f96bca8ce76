"""Batches for a run: sharded MindSpore pipelines whose order and augmentation are a function of
(seed, epoch), built from the recipe's transforms and the runtime's worker count."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .._errors import DataError


class Relabeled:
    """A split whose classes are a subset of the training split's, with labels as the training split numbers
    them (by class name): a class missing from one split cannot shift the others' labels."""

    def __init__(self, source: Any, class_names: List[str]):
        own = list(source.class_names)
        self.source = source
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.index = [self.class_names.index(name) for name in own]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        image, label = self.source[index]
        return image, self.index[int(label)]

    # the wrapped source's fast path (docs/plugin-kinds.md), with the labels renumbered
    @property
    def channels(self) -> Optional[int]:
        return getattr(self.source, "channels", None)

    def file_paths(self) -> Optional[List[Tuple[str, int]]]:
        from mindplug._fast_sources import file_list

        files = file_list(self.source)
        return None if files is None else [(path, self.index[label]) for path, label in files]

    def arrays(self) -> Optional[Tuple[Any, Any]]:
        from mindplug._fast_sources import array_pair

        pair = array_pair(self.source)
        return None if pair is None else (pair[0], np.asarray(self.index)[pair[1]])


def align_classes(source: Any, class_names: Optional[List[str]], role: str) -> Any:
    """``source`` with the training split's class numbering; a class the training split lacks is an error."""
    own = list(getattr(source, "class_names", []) or [])
    if not class_names or not own or own == list(class_names):
        return source
    unknown = [name for name in own if name not in class_names]
    if unknown:
        raise DataError(f"the {role} split has class(es) the training split does not: {', '.join(unknown[:8])}; "
                        f"the network knows {len(class_names)} classes ({', '.join(class_names[:8])}"
                        f"{', ...' if len(class_names) > 8 else ''}): remove them or train with them")
    return Relabeled(source, list(class_names))


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

    # the wrapped source's fast path (docs/plugin-kinds.md), cut to the first n samples
    @property
    def channels(self) -> Optional[int]:
        return getattr(self.source, "channels", None)

    def file_paths(self) -> Optional[List[Tuple[str, int]]]:
        from mindplug._fast_sources import file_list

        files = file_list(self.source)
        return None if files is None else files[:self.n]

    def arrays(self) -> Optional[Tuple[Any, Any]]:
        from mindplug._fast_sources import array_pair

        pair = array_pair(self.source)
        return None if pair is None else (pair[0][:self.n], pair[1][:self.n])


def shard_size(total: int, world: int) -> int:
    """Images every rank sees per epoch: the same on every rank, so no rank waits for another."""
    return total // world if world > 1 else total


def steps_per_epoch(total: int, batch_size: int, drop_remainder: bool, world: int) -> int:
    per_rank = shard_size(total, world)
    steps = per_rank // batch_size if drop_remainder else math.ceil(per_rank / batch_size)
    if steps < 1:
        raise DataError(f"the training split has {total} images: fewer than one batch of {batch_size} "
                        f"per worker ({world} workers); lower --batch_size or add data")
    return steps


@dataclass
class Pipeline:
    """A batched pipeline (``mindplug._data.Feed``) and how many batches one pass yields."""

    feed: Any
    steps: int

    @property
    def dataset(self) -> Any:
        """The ``mindspore.dataset`` behind the batches."""
        return self.feed.dataset

    @property
    def decoder(self) -> str:
        """Who decodes image files on the 'files' path ('JPEG batches' or 'MindSpore ops'), else ''."""
        return self.feed.decoder

    @property
    def path(self) -> str:
        """How the source is read: 'files' (C++ decode), 'arrays' or 'python' (``mindplug._data``)."""
        return self.feed.path

    def batches(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The batches; an error a source raised inside MindSpore's workers comes out as that error, and a
        file the C++ decoder refuses is decoded by the source instead (its ``on_error`` applies)."""
        return self.feed.batches()


@dataclass(frozen=True)
class Batches:
    """How a run turns a source into batches: the transform keys, batch size, shuffling and workers."""

    transforms: Mapping[str, Any]
    batch_size: int
    drop_remainder: bool = True
    shuffle: bool = True
    eval_shuffle: bool = False
    workers: int = 1
    num_classes: Optional[int] = None

    def pipeline(self, source: Any, *, training: bool, seed: int, rank: int = 0, world: int = 1,
                 steps: Optional[int] = None) -> Pipeline:
        """Decode, shard, shuffle (training), augment and batch; sample order and augmentation draws are
        a function of ``seed`` (with one data worker; several workers keep the order but not every draw)."""
        from mindplug._data import make_feed
        from mindplug._transforms import build_batch_transform, build_transforms, check_pipeline

        mix = build_batch_transform(self.transforms, self.num_classes) if training and self.num_classes else None
        ops = build_transforms(self.transforms, is_training=training)
        channels = int(self.transforms["in_channels"])
        what = "the training pipeline" if training else "the evaluation pipeline"
        feed = make_feed(
            source, shuffle=self.shuffle if training else self.eval_shuffle, seed=seed, num_shards=world,
            shard_id=rank, num_parallel_workers=self.workers, transforms=ops, batch_size=self.batch_size,
            drop_remainder=self.drop_remainder if training else False, batch_transform=mix,
            equal_shards=training and world > 1, channels=channels,
            check=lambda image: check_pipeline(ops, image, channels, what))
        if steps is not None:
            feed = feed.take(steps)
        return Pipeline(feed, steps if steps is not None else feed.dataset.get_dataset_size())


def class_names_of(source: Any, num_classes: int) -> List[str]:
    names = list(getattr(source, "class_names", []) or [])
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def batches_for(data: Any, transforms: Dict[str, Any], workers: int, num_classes: Optional[int] = None) -> Batches:
    """The ``Batches`` of a recipe's data section and transform keys on ``workers`` workers."""
    return Batches(transforms, data.batch_size, data.drop_remainder, data.shuffle, data.eval_shuffle, workers,
                   num_classes)
