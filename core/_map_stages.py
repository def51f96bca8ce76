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

The steps at the end of the pipeline that have a batch form (``on_batch``: colour jitter, random erasing,
and our batch versions of MindSpore's Normalize/HWC2CHW) run on the stacked batch instead, once per batch:
uint8 images are batched, flipped, jittered and normalised in single C++ calls. A flip that only per-pixel
steps follow (colour, normalisation, layout, resizing, random erasing: none tells a mirrored image from its
mirror's distribution) is applied to whole batches too, before the tail, from a generator of its own: the
independence of the Python flip at the cost of one call per batch, not per image.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

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
    """(``ops`` without the flips that only flip-commuting steps follow, a ``BatchSteps`` spec of those flips:
    [(axis of the batch array, probability, whether the batch is channels-last)], the axis counting in the
    layout the batch has when the flips run: after ``ops``, before the batch tail)."""
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
    return kept, [((2 if chw else 1) + flip.axis, float(flip.prob), not chw) for flip in deferred]


def _flip_in_cpp(images: np.ndarray, chosen: np.ndarray, axis: int, channels_last: bool) -> bool:
    """The flip in place in mindplug's C++ library, if it serves the batch."""
    try:
        from mindplug.ops import _library
    except ImportError:
        return False
    return _library.flip_images(images, chosen, axis, channels_last)


BATCH_HINT = "on_batch"


class BatchNormalize:
    """MindSpore's ``Normalize`` (HWC), optionally followed by ``HWC2CHW``, on a stacked batch: one C++ call
    over a uint8 batch (the same float32 arithmetic), numpy for anything else."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], chw: bool = False) -> None:
        self.mean, self.std, self.chw = [float(v) for v in mean], [float(v) for v in std], bool(chw)

    def on_batch(self, images: np.ndarray, rng: np.random.Generator, threads: int = 1) -> np.ndarray:
        out = None
        if images.dtype == np.uint8:
            try:
                from mindplug.ops import _library

                out = _library.normalize_images(images, self.mean, self.std, self.chw, threads)
            except ImportError:
                out = None
        if out is None:
            out = (images.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            if self.chw:
                out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        return out


class BatchToCHW:
    """``HWC2CHW`` on a stacked batch."""

    def on_batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


class BatchToFloat:
    """``TypeCast(float32)`` on a stacked batch."""

    def on_batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return images.astype(np.float32, copy=False)


def batch_form(op: Any) -> Optional[List[Any]]:
    """The steps doing ``op``'s work on a stacked batch (objects with ``on_batch``), or None: a Python
    transform's own ``on_batch``, and batch versions of MindSpore's per-pixel layout steps (``Normalize``,
    ``HWC2CHW``, ``TypeCast`` to float32, a ``Compose`` of them)."""
    import mindspore.dataset.transforms as mst
    import mindspore.dataset.vision as msv

    if not is_cpp(op):
        return [op] if callable(getattr(op, BATCH_HINT, None)) else None
    if type(op) is mst.Compose:
        forms = [batch_form(inner) for inner in op.transforms]
        return None if any(f is None for f in forms) else [step for form in forms for step in form]  # type: ignore
    if type(op) is msv.Normalize and op.is_hwc:
        return [BatchNormalize(op.mean, op.std)]
    if type(op) is msv.HWC2CHW:
        return [BatchToCHW()]
    if type(op) is mst.TypeCast and str(op.data_type) == "float32":
        return [BatchToFloat()]
    return None


def defer_tail(ops: Sequence[Any]) -> tuple:
    """(``ops`` without their trailing run of steps that have a batch form, that run): such steps at the
    end of the pipeline (colour jitter, normalisation, random erasing) run on the stacked batch, once per
    batch, instead of once per image."""
    cut = len(ops)
    while cut and batch_form(ops[cut - 1]) is not None:
        cut -= 1
    return list(ops[:cut]), list(ops[cut:])


def batch_steps(tail: Sequence[Any]) -> List[Any]:
    """The batch forms of ``tail`` (from ``defer_tail``), a ``Normalize`` and the ``HWC2CHW`` after it
    fused into one step."""
    steps: List[Any] = []
    for op in tail:
        for step in batch_form(op) or ():
            if isinstance(step, BatchToCHW) and steps and isinstance(steps[-1], BatchNormalize) \
                    and not steps[-1].chw:
                steps[-1].chw = True
            else:
                steps.append(step)
    return steps


def _takes_threads(fn: Any) -> bool:
    try:
        return "threads" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class BatchSteps:
    """The deferred steps on a stacked batch, all drawing from this generator (seeded by the pass, so a
    pass draws the same every time): each image mirrored along each flip's axis with its probability, then
    each step of the tail in order (an ``on_batch`` that takes ``threads`` gets the pipeline's worker
    count)."""

    def __init__(self, flips: Sequence[tuple], seed: int, tail: Sequence[Any] = (), threads: int = 1) -> None:
        self.flips, self.threads = list(flips), max(1, int(threads))
        self.tail = [(getattr(step, BATCH_HINT), _takes_threads(getattr(step, BATCH_HINT))) for step in tail]
        self.rng = np.random.default_rng([int(seed), 0x5F11])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if not (isinstance(images, np.ndarray) and images.flags.writeable and images.flags.c_contiguous):
            images = np.array(images, copy=True)  # MindSpore hands over its own copy
        for axis, prob, channels_last in self.flips:
            chosen = np.flatnonzero(self.rng.random(images.shape[0]) < prob)
            if chosen.size and not _flip_in_cpp(images, chosen, axis, channels_last):
                images[chosen] = np.flip(images[chosen], axis=axis)  # the gather copies: no overlap
        for step, threads in self.tail:
            images = step(images, self.rng, threads=self.threads) if threads else step(images, self.rng)
        return images
