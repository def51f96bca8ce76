"""Where and how a run executes: device, graph/pynative mode, data-parallel ranks, workers, kernels, seeds.

``init_runtime`` turns the recipe's runtime section into a ``Runtime`` record of what this machine does.
What the recipe asks for that the machine cannot do (an Ascend target on a CPU host, ``distribute``
without an msrun launch, more workers than CPUs) is adapted in the record, never in the recipe, and
reported in ONE notice; the record is saved beside the run's config as ``runtime.yaml``.
"""
from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .._map_stages import usable_cpus
from .keys import RuntimeSection

LOG = logging.getLogger("mindplug.engine")
_MSRUN_ENV = ("MS_WORKER_NUM", "MS_ROLE")
KERNELS_ENV = "MINDPLUG_KERNELS"


@dataclass(frozen=True)
class Runtime:
    """The facts of this process, as adapted to the machine."""

    device: str
    mode: int
    rank: int = 0
    world: int = 1
    workers: int = 1
    sink: bool = False
    kernels: str = "native"
    #: what training computes in (amp_level): float32, bfloat16 (the CPU kernels) or float16 (MindSpore's amp)
    precision: str = "float32"
    #: the same for validation, prediction and the bench's inference (val_amp_level)
    val_precision: str = "float32"
    seed: int = 42
    notices: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def mode_name(self) -> str:
        return "GRAPH" if self.mode == 0 else "PYNATIVE"

    def to_dict(self) -> Dict[str, Any]:
        record = asdict(self)
        record["notices"] = list(self.notices)
        return record


def setup_logging(rank: int = 0) -> None:
    """Plain ``message`` lines on stdout for rank 0; other ranks log warnings only."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.propagate = False
    LOG.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def launched_by_msrun() -> bool:
    return all(key in os.environ for key in _MSRUN_ENV)


_DEVICE_NODES = {"Ascend": ("/dev/davinci0",), "GPU": ("/dev/nvidia0", "/dev/nvidiactl")}


def _available(target: str) -> bool:
    """Whether MindSpore can run on ``target``; device nodes are checked first, since asking MindSpore
    about a backend it cannot load prints library errors."""
    if target == "CPU":
        return True
    if not any(os.path.exists(node) for node in _DEVICE_NODES.get(target, ())):
        return False
    try:
        import mindspore as ms

        return bool(ms.hal.is_available(target))
    except Exception:  # a backend plugin that fails to load is as good as absent
        return False


def _pick_device(requested: str, notices: List[str]) -> str:
    if requested == "auto":
        return next(t for t in ("Ascend", "GPU", "CPU") if _available(t))
    if _available(requested):
        return requested
    notices.append(f"device_target {requested} is not available on this machine: running on CPU")
    return "CPU"


def join_msrun_group() -> Tuple[int, int]:
    """(rank, world) after joining the msrun group in data-parallel mode with averaged gradients."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, world = get_rank(), get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    return rank, world


def _kernels(requested: str, device: str) -> str:
    """'kernels' when mindplug's C++ kernels run the model, else 'native'; the environment can force it."""
    from mindplug.ops import _library

    choice = os.environ.get(KERNELS_ENV, "").strip().lower() or requested
    if choice not in ("auto", "kernels", "native"):
        from .._errors import ConfigError

        raise ConfigError(f"{KERNELS_ENV}={choice!r} is not one of auto, kernels, native")
    if choice == "native" or device != "CPU":
        return "native"
    return "kernels" if _library.available() else "native"


def _precision(level: str, key: str, device: str, kernels: str, found: List[str]) -> str:
    """What amp level `level` means here. On the CPU any level but O0 is bfloat16 in the kernels' GEMMs
    (fp32 weights, optimizer state, BatchNorm, softmax and loss), where the CPU has AVX512_BF16; elsewhere
    it is MindSpore's float16 mixed precision."""
    if level == "O0":
        return "float32"
    if device != "CPU":
        return "float16"
    from mindplug.ops import _library

    if kernels != "kernels":
        found.append(f"{key} {level} on the CPU means bfloat16 in mindplug's kernels, which are off "
                     f"(kernels: native): computing in float32")
        return "float32"
    if not _library.bf16_available():
        found.append(f"{key} {level}: this CPU has no AVX512_BF16 (or the kernels run their portable GEMM): "
                     f"computing in float32")
        return "float32"
    return "bfloat16"


def apply_precision(runtime: "Runtime", precision: str) -> None:
    """Switches the kernels' GEMMs to `precision` (a no-op unless the kernels run the model)."""
    if runtime.kernels == "kernels":
        from mindplug.ops import _library

        _library.set_precision("bfloat16" if precision == "bfloat16" else "float32")


def init_runtime(section: RuntimeSection, *, need_distribution: bool = True,
                 notices: Sequence[str] = ()) -> Runtime:
    """Set MindSpore's device and mode, join the msrun group when launched by msrun, seed everything;
    ``notices`` (e.g. the recipe's) join the machine's in the one notice line."""
    import mindspore as ms

    found: List[str] = list(notices)
    device = _pick_device(section.device_target, found)
    try:
        ms.set_device(device)
    except RuntimeError:  # this process already ran MindSpore on a device (an in-process second command)
        if ms.get_context("device_target") != device:
            raise
    ms.set_context(mode=ms.GRAPH_MODE if section.mode == 0 else ms.PYNATIVE_MODE)
    rank, world = 0, 1
    if need_distribution and launched_by_msrun():
        rank, world = join_msrun_group()
        if not section.distribute:
            found.append(f"launched by msrun with {world} workers: training data-parallel although "
                         f"distribute is False")
    elif need_distribution and section.distribute:
        found.append("distribute is True but this process was not launched by msrun: running as one "
                     "process (use `msrun --worker_num N --local_worker_num N python train.py ...` for "
                     "data parallel, or --distribute False to silence this)")
    cpus = usable_cpus()
    workers = section.num_parallel_workers
    if workers > cpus:
        found.append(f"num_parallel_workers {workers} capped to this machine's {cpus} CPUs")
        workers = cpus
    setup_logging(rank)
    seed_everything(section.seed)
    kernels = _kernels(section.kernels, device)
    precision = _precision(section.amp_level, "amp_level", device, kernels, found)
    val_precision = _precision(section.val_amp_level, "val_amp_level", device, kernels,
                               [] if section.val_amp_level == section.amp_level else found)
    runtime = Runtime(device=device, mode=section.mode, rank=rank, world=world, workers=workers,
                      sink=section.dataset_sink_mode and device != "CPU",  # sinking needs a device queue
                      kernels=kernels, precision=precision, val_precision=val_precision, seed=section.seed,
                      notices=tuple(found))
    apply_precision(runtime, precision)
    if found and runtime.is_main:
        LOG.warning("notice: " + "; ".join(found) + ".")
    return runtime


def seed_everything(seed: int) -> None:
    """The same seed on every rank, so every rank builds identical initial weights."""
    import mindspore as ms
    import mindspore.dataset as ds

    random.seed(seed)
    np.random.seed(seed % 2**32)
    ms.set_seed(seed)
    ds.config.set_seed(seed % 2**32)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order, augmentation and dropout: a function of (seed, epoch) only,
    so an interrupted and resumed run draws exactly what an uninterrupted one draws."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0] % (2**31 - 1))


def is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
