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
  ``_data.to_channels``), colour jitter answers its C++ form;
- in an encoded-image pipeline, the decode step is fused with a leading ``RandomResizedCrop`` into
  ``RandomCropDecodeResize``, which decodes only the crop of a JPEG (same crop sampling).
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


def resolve_hints(ops: Sequence[Any], channels: int) -> List[Any]:
    """``ops`` with each Python transform that answers ``as_mindspore_ops(channels)`` replaced by its answer,
    as long as the image it gets is known to be uint8 HWC with ``channels`` channels: from the start of the
    pipeline, through MindSpore ops that keep that layout and through replaced transforms."""
    out: List[Any] = []
    known = True
    for op in ops:
        hint = getattr(op, HINT, None) if known and not is_cpp(op) else None
        replacement = hint(channels) if callable(hint) else None
        if replacement is not None:
            out.extend(replacement)
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
        python = use_processes and not is_cpp(op) and not isinstance(op, AddChannelAxis)
        if stages and stages[-1].processes == python:
            stages[-1].ops.append(op)
        else:
            stages.append(Stage([op], python))
    return stages


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
