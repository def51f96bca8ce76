"""Turn a random-access dataset source into a sharded, seeded MindSpore pipeline.

The source (``len(src)``, ``src[i] -> (HWC uint8 image, int label)``) is read through
``GeneratorDataset`` with our own index sampler, so that:

- shards are disjoint and together cover every sample exactly once (shard ``k`` takes every
  ``num_shards``-th index of the epoch's order); ``equal_shards=True`` instead pads the shorter shards
  by wrapping around, so every rank runs the same number of steps (data-parallel training);
- the order of epoch ``e`` is a pure function of ``(seed, e)``: every rank draws the same permutation,
  and a resumed run can ask for the order of any epoch.

The sampler hands out the same indices on each of three paths (``Feed.path``):

- ``files``: a source that lists its image files (``_fast_sources``) is read as encoded bytes, decoded and
  cropped in C++: by mindplug's batch decode (``_jpeg_batches``) when a random resized crop is the only
  per-image step, else by MindSpore's ops; a file the C++ decoder may not be given goes through ``src[i]``;
- ``arrays``: a source that exposes whole arrays is read row by row from them, with no call into it;
- ``python``: any other source, ``src[i]`` in threads.

Per-sample transforms then run in ``map`` stages (MindSpore ops in C++ threads, Python callables in worker
processes, ``_map_stages``), batches are formed (the trailing per-pixel steps and the flips then run on the
whole batch), and an optional batch transform (Mixup/CutMix) maps ``(image, label)`` to soft labels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._errors import ConfigError, DataError

COLUMNS = ["image", "label"]
_RAISED = re.compile(r"(?:mindplug\._errors\.)?\b(\w+Error): (.+)")


def pipeline_error(exc: BaseException) -> Optional[Exception]:
    """The mindplug error (e.g. a ``DataError`` naming an unreadable file) that a source or transform raised
    inside MindSpore's dataset workers, which MindSpore re-raises as a RuntimeError with its traceback."""
    from . import _errors

    for name, message in reversed(_RAISED.findall(str(exc))):
        cls = getattr(_errors, name, None)
        if isinstance(cls, type) and issubclass(cls, _errors.MindplugError):
            return cls(message.strip())
    return None


class ShardSampler:
    """Indices of one shard for each epoch; ``iter()`` starts the next epoch.

    One iterator with ``num_epochs=N`` walks epochs ``start_epoch..start_epoch+N-1``. MindSpore copies the
    sampler for every new iterator, so a fresh iterator over the same dataset restarts at ``start_epoch``:
    build one pipeline per epoch with ``start_epoch=epoch`` (or a per-epoch seed).
    """

    def __init__(self, num_rows: int, *, shuffle: bool, seed: int, num_shards: int = 1, shard_id: int = 0,
                 equal_shards: bool = False, start_epoch: int = 0) -> None:
        self.num_rows, self.shuffle, self.seed = int(num_rows), bool(shuffle), int(seed)
        self.num_shards, self.shard_id, self.equal_shards = int(num_shards), int(shard_id), bool(equal_shards)
        self.epoch = int(start_epoch)

    def indices(self, epoch: int) -> np.ndarray:
        """This shard's indices in epoch ``epoch``'s order."""
        order = np.arange(self.num_rows, dtype=np.int64)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
        if self.equal_shards and self.num_rows % self.num_shards:
            extra = self.num_shards - self.num_rows % self.num_shards
            order = np.concatenate([order, order[:extra]])
        return order[self.shard_id::self.num_shards]

    def __iter__(self) -> Iterator[int]:
        indices = self.indices(self.epoch)
        self.epoch += 1
        return iter(indices.tolist())

    def __len__(self) -> int:
        total = self.num_rows
        if self.equal_shards:
            return -(-total // self.num_shards)
        return total // self.num_shards + (1 if self.shard_id < total % self.num_shards else 0)


def to_channels(image: Any, channels: Optional[int]) -> np.ndarray:
    """An HWC uint8 image with ``channels`` channels (None: as it is): grey is repeated to RGB, RGB becomes
    grey with Pillow's ITU-R 601 luma weights, an alpha channel is dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise DataError(f"a dataset image must be HWC (or HW), got shape {image.shape}")
    have = image.shape[2]
    if have in (2, 4):  # LA / RGBA: the colour without its alpha
        image, have = image[:, :, : have - 1], have - 1
    if channels is None or have == channels:
        return np.ascontiguousarray(image)
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        rgb = image.astype(np.uint32)
        grey = (rgb[:, :, 0] * 19595 + rgb[:, :, 1] * 38470 + rgb[:, :, 2] * 7471 + 0x8000) >> 16
        return grey.astype(np.uint8)[:, :, None]
    raise DataError(f"cannot turn a {have}-channel image into {channels} channel(s); the network takes "
                    f"in_channels = {channels}")


class _Rows:
    """The source as MindSpore wants it: numpy arrays per column (images with the network's channels),
    int32 labels."""

    def __init__(self, source: Any, channels: Optional[int] = None) -> None:
        self.source = source
        self.channels = channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image, label = self.source[int(index)]
        return to_channels(image, self.channels), np.array(label, dtype=np.int32)


def _check_shards(num_shards: Optional[int], shard_id: Optional[int]) -> Tuple[int, int]:
    if (num_shards is None) != (shard_id is None):
        raise ConfigError(f"give both num_shards and shard_id or neither (got num_shards={num_shards}, "
                          f"shard_id={shard_id})")
    if num_shards is None:
        return 1, 0
    if int(num_shards) < 1 or not 0 <= int(shard_id) < int(num_shards):
        raise ConfigError(f"shard_id must be in 0..num_shards-1 and num_shards >= 1, got shard_id={shard_id}, "
                          f"num_shards={num_shards}")
    return int(num_shards), int(shard_id)


def _default_transforms() -> List[Any]:
    """Without transforms the contract still holds: CHW float32 (raw 0..255 values)."""
    import mindspore as ms
    import mindspore.dataset.transforms as mst
    import mindspore.dataset.vision as msv

    return [msv.HWC2CHW(), mst.TypeCast(ms.float32)]


@dataclass
class Feed:
    """A batched pipeline, the path it reads its source by, and what it takes to continue after the C++
    decoder refuses a file (``files`` path): the rows served, the pass's order, its decode op, and a
    rebuild of the rest of the pass from a position in that order."""

    dataset: Any
    path: str
    rows: Any = None
    order: Any = None
    decode: Any = None
    rebuild: Optional[Callable[[int], Any]] = None
    limit: Optional[int] = None
    decoder: str = ""  # who decodes on the files path: "JPEG batches" (``_jpeg_batches``) or "MindSpore ops"

    def take(self, count: int) -> "Feed":
        """At most ``count`` batches per pass."""
        self.dataset, self.limit = self.dataset.take(count), int(count)
        return self

    def batches(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """One pass of numpy ``(images, labels)`` batches. An error a source raised in MindSpore's workers
        comes out as that error; a file the C++ decoder refuses is traced, decoded through ``src[i]`` (whose
        ``on_error`` applies: one error naming the file, or the file skipped) and the pass continues."""
        dataset, start, done, batches = self.dataset, 0, 0, 0
        while True:
            if self.rows is not None:
                self.rows.restart()
            iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
            try:
                for images, labels in iterator:
                    yield images, labels
                    done, batches = done + int(labels.shape[0]), batches + 1
                return
            except RuntimeError as exc:
                error = pipeline_error(exc)
                if error is not None:
                    raise error from None
                if self.rebuild is None or not self._retrace(start, done):
                    raise
                start, done = start + done, 0
                dataset = self.rebuild(start)
                if self.limit is not None:
                    dataset = dataset.take(self.limit - batches)
            finally:
                iterator.stop()

    def _retrace(self, start: int, done: int) -> bool:
        """Find the file in flight the C++ decoder refuses and send it through ``src[i]`` from now on; False
        when none is refused (the failure was something else)."""
        rows = self.rows
        if rows.head != self.order[start:start + len(rows.head)].tolist():
            return False  # not the order this feed expected: nothing safe to restart from
        index = rows.first_failure(self.order[start + done:start + rows.served], self.decode)
        if index is None or index in rows.python:
            return False  # nothing refused, or refused again: no progress to be made
        rows.python.add(index)
        rows.source[index]  # raises the source's own error naming the file, unless it can read or skip it
        return True


def batch_decoder(ops: Sequence[Any], samples: Sequence[Tuple[str, int]], seed: int) -> Optional[Any]:
    """The batch decode (``_jpeg_batches``) for a files pipeline whose only per-image step is the crop-decode
    (the rest runs on batches), over files that are mostly JPEG; else None (MindSpore's map decodes)."""
    from ._jpeg_batches import JpegCropBatches, mostly_jpeg
    from ._map_stages import defer_flips, defer_tail

    kept, _ = defer_flips(defer_tail(ops)[0])
    if len(kept) != 1 or not mostly_jpeg(samples):
        return None
    return JpegCropBatches.of(kept[0], seed)


class _Positions:
    """A fixed list of indices, the same on every iteration: the rest of a pass restarted part-way."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = [int(i) for i in indices]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_mindspore_dataset(source: Any, **options: Any) -> Any:
    """A batched ``mindspore.dataset`` with columns ``image`` (float32 NCHW) and ``label``; the keywords
    are ``make_feed``'s. Iterate ``make_feed(...).batches()`` instead to have decode failures of the C++
    path traced to their file."""
    return make_feed(source, **options).dataset


def make_feed(source: Any, *, shuffle: bool, seed: int, num_shards: Optional[int] = None,
              shard_id: Optional[int] = None, num_parallel_workers: int = 2,
              transforms: Optional[Sequence[Any]] = None, batch_size: int = 32, drop_remainder: bool = False,
              batch_transform: Optional[Callable[..., Any]] = None, equal_shards: bool = False,
              start_epoch: int = 0, channels: Optional[int] = None,
              check: Optional[Callable[[np.ndarray], None]] = None, fast: bool = True) -> Feed:
    """The pipeline of ``source`` with columns ``image`` (float32 NCHW) and ``label``.

    ``label`` is int32 ``[N]``, or float32 ``[N, C]`` soft labels after a batch transform. ``channels``
    converts every image to the network's channel count first; ``check(image)`` sees the first one, as
    ``src[0]`` gives it. ``seed`` also seeds MindSpore's random ops and Python's/numpy's global generators
    (``ds.config.set_seed``; worker processes get ``seed + worker``), which the transforms draw from; with
    several workers their per-sample draws are not reproducible, the sample order and shards always are.
    ``fast=False`` builds the pipeline as it was before the fast paths, their reference: every source read
    through ``src[i]``, every transform as given, in one ``map`` in threads.
    """
    import mindspore.dataset as ds

    from ._fast_sources import ArrayRows, FileRows, array_channels, array_pair, file_list
    from ._map_stages import (BatchSteps, Stage, apply_stages, batch_steps, decode_steps, defer_flips, defer_tail,
                              resolve_hints, split_stages, usable_cpus)

    shards, shard = _check_shards(num_shards, shard_id)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    try:
        rows = len(source)
    except TypeError:
        raise DataError(f"dataset source {source!r} has no len(); a source is random-access "
                        f"(len(src), src[i] -> (image, label))") from None
    if rows == 0:
        raise DataError(f"dataset source {source!r} is empty")
    if rows < shards:
        raise DataError(f"dataset source {source!r} has {rows} samples, fewer than num_shards={shards}")
    workers = max(1, min(int(num_parallel_workers), usable_cpus()))
    if check is not None:  # before the pipeline exists: a bad step is a clear error, not a graph failure
        check(_Rows(source, channels)[0][0])
    ds.config.set_seed(int(seed))
    operations = list(transforms) if transforms else _default_transforms()

    def sampler() -> ShardSampler:
        return ShardSampler(rows, shuffle=shuffle, seed=seed, num_shards=shards, shard_id=shard,
                            equal_shards=equal_shards, start_epoch=start_epoch)

    def finish(data: Any, ops: Sequence[Any], decoder: Any = None) -> Any:
        flips: List[Any] = []
        tail: List[Any] = []
        if fast:
            ops, tail = defer_tail(ops)
            ops, flips = defer_flips(ops)
        if decoder is not None:  # ops is the crop-decode alone: the batch op's workers decode whole batches
            data = data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers,
                              per_batch_map=decoder, input_columns=["image"], python_multiprocessing=False)
        else:
            data = apply_stages(data, split_stages(ops) if fast else [Stage(list(ops), False)], workers)
            data = data.batch(batch_size, drop_remainder=drop_remainder, num_parallel_workers=workers)
        if flips or tail:  # in one thread, from the pass's seed: the same draws every time, and resumable
            data = data.map(operations=BatchSteps(flips, seed, batch_steps(tail), workers), input_columns="image",
                            num_parallel_workers=1, python_multiprocessing=False)
        if batch_transform is not None:
            data = data.map(operations=batch_transform, input_columns=COLUMNS, output_columns=COLUMNS,
                            num_parallel_workers=1, python_multiprocessing=False)
        return data

    samples = file_list(source) if fast else None
    grey = getattr(source, "channels", None) == 1
    target = channels or getattr(source, "channels", None)
    if samples is not None and target in (1, 3):
        ops = decode_steps(resolve_hints(operations, target), grey=grey, channels=target)
        decoder = batch_decoder(ops, samples, seed)
        file_rows = FileRows(source, samples)
        first = sampler()  # one Python thread reads the files: more would only contend for the GIL
        data = ds.GeneratorDataset(file_rows, column_names=COLUMNS, sampler=first, num_parallel_workers=1,
                                   python_multiprocessing=False)
        order = first.indices(first.epoch)  # the pass's order (MindSpore's argument checks iterate the sampler)

        def rest(start: int) -> Any:
            data = ds.GeneratorDataset(file_rows, column_names=COLUMNS, sampler=_Positions(order[start:]),
                                       num_parallel_workers=1, python_multiprocessing=False)
            return finish(data, ops, decoder and decoder.restarted(start))

        return Feed(finish(data, ops, decoder), "files", file_rows, order, decoder.check if decoder else ops[0], rest,
                    decoder="JPEG batches" if decoder else "MindSpore ops")
    pair = array_pair(source) if fast else None
    if pair is not None:
        images = array_channels(pair[0], channels)
        data = ds.GeneratorDataset(ArrayRows(images, pair[1]), column_names=COLUMNS, sampler=sampler(),
                                   num_parallel_workers=1, python_multiprocessing=False)
        return Feed(finish(data, resolve_hints(operations, images.shape[3])), "arrays")
    data = ds.GeneratorDataset(_Rows(source, channels), column_names=COLUMNS, sampler=sampler(),
                               num_parallel_workers=workers, python_multiprocessing=False)
    ops = resolve_hints(operations, channels) if channels and fast else operations
    return Feed(finish(data, ops), "python")
