"""The per-sample transforms as MindSpore ``map`` stages: runs of C++ dataset ops in threads, runs of
Python transforms in worker processes.

MindSpore executes a ``map`` whose list holds any Python callable entirely in its process pool when
``python_multiprocessing`` is on (C++ ops included, one eager call at a time), and entirely in GIL-bound
threads when it is off. Splitting the list at every change of kind keeps the C++ ops in threads and moves
Python work (Pillow policies, jitter on grey images, plugin transforms) off the main process's GIL.

Two rewrites keep the result the same while doing less work:

- a Python transform that offers MindSpore ops doing its work (the ``as_mindspore_ops(channels)`` hint)
  is replaced by them where the pipeline knows the image's layout: a channel step with nothing to do
  answers ``[]`` (the pipeline converts channels before the first transform anyway,
  ``_data.to_channels``), flips and colour jitter answer their C++ forms. MindSpore 2.10 seeds every random
  op of a pipeline with the same seed, so two random C++ ops draw the same numbers: a crop's offset would
  decide the flip. A pipeline therefore keeps at most one random C++ op; a random hint beyond it stays the
  Python transform, which draws from its own generator;
- in an encoded-image pipeline, the decode step is fused with a leading ``RandomResizedCrop`` into
  ``RandomCropDecodeResize``, which decodes only the crop of a JPEG (same crop sampling).

A flip that only per-pixel steps follow (colour, normalisation, layout, resizing, random erasing: none
tells a mirrored image from its mirror's distribution) is applied to whole batches instead, in numpy from a
generator of its own: the independence of the Python flip at the cost of one call per batch, not per image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Sequence

import numpy as np

HINT = "as_mindspore_ops"


def is_cpp(op: Any) -> bool:
    """Whether ``op`` is a MindSpore dataset op that runs in C++ (a Compose only if all its ops do)."""
    from mindspore.dataset.transforms.py_transforms_util import Implementation
    from mindspore.dataset.transforms.transforms import CompoundOperation, TensorOperation

    if isinstance(op, CompoundOperation):
        return all(is_cpp(inner) for inner in getattr(op, "transforms", [None]))
    return isinstance(op, TensorOperation) and getattr(op, "implementation", None) != Implementation.PY


def _keeps_layout(op: Any) -> bool:
    """Whether a MindSpore op keeps a uint8 HWC image uint8 HWC with its channel count (crops, flips,
    resizes, colour jitter), so a hint further on still knows what it gets."""
    import mindspore.dataset.transforms as mst
    import mindspore.dataset.vision as msv

    if isinstance(op, (mst.Compose, mst.RandomApply, mst.RandomChoice)):
        return all(_keeps_layout(inner) for inner in op.transforms)
    return isinstance(op, (msv.RandomResizedCrop, msv.RandomCrop, msv.RandomHorizontalFlip, msv.RandomVerticalFlip,
                           msv.Resize, msv.CenterCrop, msv.RandomColorAdjust))


def is_random_cpp(op: Any) -> bool:
    """Whether ``op`` is a MindSpore C++ op that draws random numbers (their class names say Random)."""
    if not is_cpp(op):
        return False
    inner = getattr(op, "transforms", None)
    if inner and not type(op).__name__.startswith("Random"):
        return any(is_random_cpp(i) for i in inner)
    return type(op).__name__.startswith("Random")


def resolve_hints(ops: Sequence[Any], channels: int) -> List[Any]:
    """``ops`` with each Python transform that answers ``as_mindspore_ops(channels)`` replaced by its answer,
    as long as the image it gets is known to be uint8 HWC with ``channels`` channels (from the start of the
    pipeline, through MindSpore ops that keep that layout and through replaced transforms) and the pipeline
    keeps at most one random C++ op (the first random step, usually the crop)."""
    out: List[Any] = []
    known = True
    budget = 1 - sum(1 for op in ops if is_random_cpp(op))
    for op in ops:
        hint = getattr(op, HINT, None) if known and not is_cpp(op) else None
        replacement = hint(channels) if callable(hint) else None
        random_ops = sum(1 for r in replacement or () if is_random_cpp(r))
        if replacement is not None and random_ops <= budget:
            out.extend(replacement)
            budget -= random_ops
            known = all(_keeps_layout(r) for r in replacement)
            continue
        out.append(op)
        known = known and is_cpp(op) and _keeps_layout(op)
    return out


class AddChannelAxis:
    """(H, W) -> (H, W, 1): MindSpore's RGB-to-grey conversion drops the axis the pipeline keeps."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image[:, :, None] if image.ndim == 2 else image


def decode_steps(ops: Sequence[Any], *, grey: bool, channels: int) -> List[Any]:
    """Decode encoded bytes in C++, with the channel conversion the Python path does before the first
    transform: ``grey`` makes every image grey first (a source that delivers grey), then the network's
    ``channels``. A leading RandomResizedCrop joins the decode when no conversion comes between."""
    import mindspore.dataset.vision as msv

    ops = list(ops)
    to_grey = grey or channels == 1
    if not to_grey and ops and type(ops[0]) is msv.RandomResizedCrop:
        crop = ops.pop(0)
        return [msv.RandomCropDecodeResize(crop.size, scale=crop.scale, ratio=crop.ratio,
                                           interpolation=crop.interpolation, max_attempts=crop.max_attempts)] + ops
    steps: List[Any] = [msv.Decode()]
    if to_grey:
        steps.append(msv.ConvertColor(msv.ConvertMode.COLOR_RGB2GRAY))
        steps.append(msv.ConvertColor(msv.ConvertMode.COLOR_GRAY2RGB) if channels == 3 else AddChannelAxis())
    return steps + ops


@dataclass
class Stage:
    """One ``map`` call: its ops and whether they run in worker processes."""

    ops: List[Any]
    processes: bool


def split_stages(ops: Sequence[Any], *, processes: bool = True) -> List[Stage]:
    """Consecutive C++ ops in one thread stage, consecutive Python transforms in one process stage
    (threads too when ``processes`` is False or the machine has one CPU)."""
    use_processes = processes and usable_cpus() > 1
    stages: List[Stage] = []
    for op in ops:
        python = use_processes and not is_cpp(op) and not isinstance(op, AddChannelAxis) and not _releases_gil(op)
        if stages and stages[-1].processes == python:
            stages[-1].ops.append(op)
        else:
            stages.append(Stage([op], python))
    return stages


def _releases_gil(op: Any) -> bool:
    """A Python transform that does its work in C++ with the GIL released (its ``releases_gil`` says so):
    threads run it in parallel, without the copies to and from worker processes."""
    return bool(getattr(op, "releases_gil", False))


def apply_stages(data: Any, stages: Sequence[Stage], workers: int, column: str = "image") -> Any:
    for stage in stages:
        data = data.map(operations=list(stage.ops), input_columns=column, num_parallel_workers=workers,
                        python_multiprocessing=stage.processes)
    return data


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or taskset's share), not every
    CPU of the host: what the data pipeline's workers are sized to."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: steps a flip may move past: they act on every pixel alike (or, like random erasing, draw positions from a
#: mirror-symmetric distribution), so flipping after them gives what flipping before does
_FLIP_COMMUTING_CPP = ("Normalize", "HWC2CHW", "TypeCast", "Rescale", "Resize", "CenterCrop", "RandomColorAdjust",
                       "ConvertColor")
_FLIP_COMMUTING_PY = ("ColorJitter", "RandomErasing", "ToRGB", "ToGrayscale", "AddChannelAxis")


def _commutes_with_flip(op: Any) -> bool:
    inner = getattr(op, "transforms", None)
    if is_cpp(op) and inner and not type(op).__name__.startswith("Random"):
        return all(_commutes_with_flip(i) for i in inner)
    name = type(op).__name__
    return name in (_FLIP_COMMUTING_CPP if is_cpp(op) else _FLIP_COMMUTING_PY)


def _to_chw(op: Any) -> bool:
    inner = getattr(op, "transforms", None)
    if inner and is_cpp(op):
        return any(_to_chw(i) for i in inner)
    return type(op).__name__ == "HWC2CHW"


def defer_flips(ops: Sequence[Any]) -> tuple:
    """(``ops`` without the flips that only flip-commuting steps follow, a ``BatchFlips`` spec of those flips:
    [(axis of the batch array, probability)], the axis counting in the layout the batch will have)."""
    kept: List[Any] = []
    deferred: List[Any] = []
    for index, op in enumerate(ops):
        if type(op).__name__ == "RandomFlip" and hasattr(op, "axis") and all(
                _commutes_with_flip(later) for later in ops[index + 1:] if type(later).__name__ != "RandomFlip"):
            deferred.append(op)
        else:
            kept.append(op)
    chw = any(_to_chw(op) for op in kept)
    # an image's HWC axis 0 (rows) or 1 (columns) as an axis of the batch: NCHW (2, 3) or NHWC (1, 2)
    return kept, [((2 if chw else 1) + flip.axis, float(flip.prob)) for flip in deferred]


def _flip_in_cpp(images: np.ndarray, chosen: np.ndarray, axis: int) -> bool:
    """The flip in place in mindplug's C++ library (normalised NCHW float32 batches), if it serves."""
    try:
        from mindplug.ops import _library
    except ImportError:
        return False
    return _library.flip_images(images, chosen, axis)


BATCH_HINT = "on_batch"


def defer_tail(ops: Sequence[Any]) -> tuple:
    """(``ops`` without their trailing run of Python transforms that offer ``on_batch(images, rng)``, that
    run): such a step last in the pipeline (random erasing) works on the batch, once per batch."""
    cut = len(ops)
    while cut and not is_cpp(ops[cut - 1]) and callable(getattr(ops[cut - 1], BATCH_HINT, None)):
        cut -= 1
    return list(ops[:cut]), list(ops[cut:])


class BatchFlips:
    """The deferred steps on a batch: each image mirrored along each flip's axis with its probability, then
    each trailing batch step, all drawing from this generator (seeded by the pass, so a pass draws the same
    every time)."""

    def __init__(self, flips: Sequence[tuple], seed: int, tail: Sequence[Any] = ()) -> None:
        self.flips, self.tail = list(flips), list(tail)
        self.rng = np.random.default_rng([int(seed), 0x5F11])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if not (isinstance(images, np.ndarray) and images.flags.writeable):  # MindSpore hands over its own copy
            images = np.array(images, copy=True)
        for axis, prob in self.flips:
            chosen = np.flatnonzero(self.rng.random(images.shape[0]) < prob)
            if chosen.size and not _flip_in_cpp(images, chosen, axis):
                images[chosen] = np.flip(images[chosen], axis=axis)  # the gather copies: no overlap
        for step in self.tail:
            images = getattr(step, BATCH_HINT)(images, self.rng)
        return images
