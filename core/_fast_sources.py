"""What a dataset source may expose so its pipeline skips per-sample Python decoding (docs/plugin-kinds.md).

- ``file_paths()`` -> ``[(path, label), ...]`` (or a ``samples`` attribute of that form): entry ``i`` is
  the encoded image file behind ``src[i]``. The pipeline reads the file's bytes in one Python thread and
  decodes them with MindSpore's C++ ops. A file the C++ decoder may not be given (``_image_headers``),
  one it fails on, or one that cannot be read goes through ``src[i]`` instead, so the source's own
  decoding, error message and ``on_error`` still decide. An optional ``channels`` attribute of 1 says
  ``src[i]`` turns every image grey.
- ``arrays()`` -> ``(images, labels)``: uint8 ``(N, H, W)`` or ``(N, H, W, C)`` and ``N`` integer labels
  with ``src[i] == (images[i], labels[i])``. The channel conversion runs once on the whole array and
  rows are read without calling the source.

Either method may return None to decline. Nothing here names a plugin: a source qualifies by what it
exposes.
"""
from __future__ import annotations

import io
import os
import weakref
from typing import Any, List, MutableSet, Optional, Sequence, Tuple

import numpy as np

from ._image_headers import cpp_decodable

Sample = Tuple[str, int]


class _Memory:
    """What a source's files taught earlier passes: the indices decoded through ``src[i]`` (the C++
    decoder refused them) and, per index, the (size, mtime) of the file the structure check last passed,
    so a later epoch reads an unchanged file without checking it again."""

    def __init__(self, count: int) -> None:
        self.python: MutableSet[int] = set()
        self.checked = np.full((count, 2), -1, np.int64)


#: per source, kept across its epochs' pipelines
_MEMORY: "weakref.WeakKeyDictionary[Any, _Memory]" = weakref.WeakKeyDictionary()


def file_list(source: Any) -> Optional[List[Sample]]:
    """The source's ``(path, label)`` list if it offers one that matches its length, else None. A
    ``samples`` attribute counts unless the source has a ``transform`` or ``target_transform`` set
    (torchvision's convention: its items are then not the decoded files)."""
    method = getattr(source, "file_paths", None)
    if callable(method):
        samples = method()
    elif getattr(source, "transform", None) is None and getattr(source, "target_transform", None) is None:
        samples = getattr(source, "samples", None)
    else:
        return None
    if samples is None or isinstance(samples, (str, bytes)):
        return None
    try:
        samples = samples if isinstance(samples, list) else list(samples)
        if len(samples) != len(source):
            return None
        path, label = samples[0]
    except (TypeError, ValueError):
        return None
    if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
        return None
    if not isinstance(label, (int, np.integer)):
        return None
    if type(path) is str and type(label) is int:
        return samples  # already in the form the pipeline reads (a built-in folder's list, not copied)
    return [(os.fsdecode(p), int(y)) for p, y in samples]


def array_pair(source: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The source's ``(images, labels)`` arrays if it offers them in the documented form, else None."""
    method = getattr(source, "arrays", None)
    pair = method() if callable(method) else None
    if pair is None:
        return None
    images, labels = (np.asarray(a) for a in pair)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != len(source):
        return None
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        return None
    return images, labels


def memory(source: Any, count: int) -> _Memory:
    """The source's ``_Memory`` (a fresh one for a source that cannot be weakly referenced)."""
    try:
        found = _MEMORY.get(source)
        if found is None or len(found.checked) != count:
            found = _MEMORY[source] = _Memory(count)
        return found
    except TypeError:
        return _Memory(count)


def python_decoded(source: Any) -> MutableSet[int]:
    """The indices of ``source`` that are decoded through ``src[i]`` from now on."""
    return memory(source, len(source)).python


def as_bmp(image: np.ndarray) -> np.ndarray:
    """An image decoded by the source, re-encoded losslessly for the C++ decoder."""
    from PIL import Image

    from ._data import to_channels

    image = to_channels(image, None)
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, "BMP")
    return np.frombuffer(buffer.getvalue(), np.uint8)


class FileRows:
    """``GeneratorDataset`` source of ``(encoded bytes, int32 label)`` for the C++ decode path.

    ``served`` counts the rows handed out since ``restart()`` (one reading thread: in the sampler's order)
    and ``head`` keeps the first indices, so a failure can be traced to the rows in flight.
    """

    HEAD = 64

    def __init__(self, source: Any, samples: Sequence[Sample]) -> None:
        self.source = source
        self.samples = samples
        self.memory = memory(source, len(samples))
        self.python = self.memory.python
        self.served = 0
        self.head: List[int] = []

    def restart(self) -> None:
        self.served, self.head = 0, []

    def __len__(self) -> int:
        return len(self.samples)

    def encoded(self, index: int) -> Optional[bytes]:
        """The file's bytes when the C++ decoder may be given them, else None."""
        if index in self.python:
            return None
        try:
            data, stamp = _read(self.samples[index][0])
        except OSError:
            return None
        seen = self.memory.checked[index]
        if seen[0] == stamp[0] and seen[1] == stamp[1]:
            return data
        if not cpp_decodable(data):
            return None
        seen[:] = stamp
        return data

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        index = int(index)
        if self.served < self.HEAD:
            self.head.append(index)
        self.served += 1
        data = self.encoded(index)
        if data is not None:
            return np.frombuffer(data, np.uint8), np.array(self.samples[index][1], np.int32)
        image, label = self.source[index]
        return as_bmp(image), np.array(label, np.int32)

    def first_failure(self, indices: Sequence[int], decode: Any) -> Optional[int]:
        """The first of ``indices`` whose file ``decode`` (the pipeline's C++ decode op) rejects."""
        for index in indices:
            data = self.encoded(int(index))
            if data is None:
                continue
            try:
                decode(np.frombuffer(data, np.uint8))
            except Exception:  # noqa: BLE001 - any refusal of the C++ decoder is the file's
                return int(index)
        return None


def _read(path: str) -> Tuple[bytes, Tuple[int, int]]:
    """A file's bytes and (size, mtime), in as few system calls as Python allows (this runs per sample)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(handle)
        data = os.read(handle, info.st_size + 1)
        if len(data) != info.st_size:  # a short read, or a file that grew: read on to the end
            chunks = [data]
            while chunk := os.read(handle, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data, (len(data), info.st_mtime_ns)
    finally:
        os.close(handle)


class ArrayRows:
    """``GeneratorDataset`` source over whole arrays: one index per row, no call into the dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels.astype(np.int32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.int32]:
        return self.images[index], self.labels[index]


def array_channels(images: np.ndarray, channels: Optional[int], chunk: int = 4096) -> np.ndarray:
    """Every image of an ``(N, H, W[, C])`` array converted as ``_data.to_channels`` converts one."""
    from ._data import to_channels

    if images.ndim == 3:
        images = images[:, :, :, None]
    count, height, width, have = images.shape
    if have in (2, 4):
        images, have = images[:, :, :, : have - 1], have - 1
    if channels is None or have == channels:
        return np.ascontiguousarray(images)
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=3)
    out = np.empty((count, height, width, channels), np.uint8)
    for start in range(0, count, chunk):  # the single-image conversion on a tall stack of images
        part = images[start:start + chunk]
        flat = to_channels(part.reshape(-1, width, have), channels)
        out[start:start + len(part)] = flat.reshape(len(part), height, width, channels)
    return out
