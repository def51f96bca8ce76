"""Every recipe key, grouped into the typed sections the engine builds from (data, not code).

Key names and defaults are MindCV's (``config.py`` of the reference toolbox), so its recipes run unchanged.
Each section is a frozen dataclass: a field is one key, its annotation the type every value is converted
to (``mindplug.engine.recipe.coerce``), its metadata the help text and, with ``offer``, the component the
key is handed to when that component's factory takes it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Dict, List, Literal, Mapping, Optional, Tuple, Union, get_type_hints

from .._spec import IMAGENET_MEAN, IMAGENET_STD

Precision = Literal["O0", "O1", "O2", "O3", "auto"]


class _Marker:
    """Tags a key whose values the generic conversion cannot read from the type alone."""


class ComponentMarker(_Marker):
    """A registry name, or a mapping ``{type: name, ...arguments}``."""


class ResumeMarker(_Marker):
    """True/False, or the path of the checkpoint to continue from."""


class ModeMarker(_Marker):
    """0 (GRAPH) or 1 (PYNATIVE); the words 'graph'/'pynative' are accepted too."""


class ScalarMarker(_Marker):
    """A number or a word (random erasing's fill: 0 or 'random')."""


Component = Annotated[Union[str, Mapping[str, Any]], ComponentMarker]
Resume = Annotated[Union[bool, str], ResumeMarker]
Mode = Annotated[int, ModeMarker]
Scalar = Annotated[Union[int, float, str], ScalarMarker]


def key(default: Any, help: str, *, offer: bool = False, effect: str = "") -> Any:
    """A recipe key: its default and help; ``offer`` hands it to the section's component; ``effect`` says
    why mindplug takes no action on it (reported when a recipe sets it)."""
    meta = {"help": help, "offer": offer, "effect": effect}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RuntimeSection:
    """Where and how the run executes; the machine may adapt it (recorded in the run's runtime.yaml)."""

    mode: Mode = key(0, "0 = GRAPH mode (compiled), 1 = PYNATIVE mode; 'graph'/'pynative' also accepted")
    distribute: bool = key(False, "data-parallel training; needs a launch by msrun")
    device_target: Literal["auto", "CPU", "GPU", "Ascend"] = key(
        "auto", "CPU, GPU, Ascend or auto (the best available; ours, MindCV: Ascend)")
    seed: int = key(42, "seed of every random choice: weights, data order, augmentation, dropout")
    num_parallel_workers: int = key(8, "data pipeline workers (capped to the CPU count)")
    dataset_sink_mode: bool = key(True, "sink data to the device (Ascend/GPU; a no-op on CPU)")
    kernels: Literal["auto", "native"] = key(
        "auto", "auto = mindplug's C++ kernels where they serve (CPU), native = MindSpore's own ops")
    amp_level: Precision = key(
        "O0", "mixed precision level: on the CPU O1/O2/O3/auto = bfloat16 in the kernels (where the CPU has "
        "AVX512_BF16), elsewhere MindSpore's float16 amp")
    val_amp_level: Precision = key("O0", "mixed precision level in validation, validate, predict and the "
                                          "bench's inference")
    amp_cast_list: Optional[List[str]] = key(None, "mindspore.nn cell class names cast by O1 (white) / O2 (black)")
    plugins: Optional[Mapping[str, Any]] = key(
        None, "plugin selection: {allow: [...], block: [...], prefer: {name: plugin}}")


@dataclass(frozen=True)
class DataSection:
    """The dataset and how it is split, sampled and batched."""

    dataset: Optional[Component] = key(None, "dataset by registry name, or {type: name, ...arguments}")
    data_dir: Optional[str] = key("./", "dataset root (ImageFolder layout: data_dir/<split>/<class>/*)")
    train_split: str = key("train", "training split name")
    val_split: str = key("val", "validation split name")
    dataset_download: bool = key(False, "accepted for recipe compatibility",
                                 effect="mindplug never downloads data")
    shuffle: bool = key(True, "shuffle the training data (order is a function of seed and epoch)")
    num_samples: Optional[int] = key(None, "use only this many samples of each split")
    batch_size: int = key(128, "batch size per device")
    drop_remainder: bool = key(True, "drop the last incomplete training batch")
    aug_repeats: int = key(0, "repeated augmentation count (0 or 1: off)",
                           effect="repeated augmentation is not implemented")
    eval_shuffle: bool = key(False, "shuffle the evaluation data")


@dataclass(frozen=True)
class TransformsSection:
    """MindCV's augmentation keys (handed to the default pipeline plugin) or explicit pipelines."""

    image_resize: int = key(224, "training crop size and evaluation input size")
    scale: Tuple[float, float] = key((0.08, 1.0), "random resized crop area range")
    ratio: Tuple[float, float] = key((0.75, 1.333), "random resized crop aspect ratio range")
    hflip: float = key(0.5, "horizontal flip probability")
    vflip: float = key(0.0, "vertical flip probability")
    color_jitter: Optional[Union[float, List[float]]] = key(0.4, "colour jitter strength (one value or 3-4 values)")
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos"] = key(
        "bilinear", "resize interpolation")
    auto_augment: Optional[str] = key(None, "policy string: randaug-m9-n2-mstd0.5, autoaug, trivialaugwide, augmix-...")
    aug_splits: int = key(0, "augmentation splits (AugMix)", effect="AugMix splits are not implemented")
    re_prob: float = key(0.0, "random erasing probability")
    re_scale: Tuple[float, float] = key((0.02, 0.33), "random erasing area range")
    re_ratio: Tuple[float, float] = key((0.3, 3.3), "random erasing aspect ratio range")
    re_value: Scalar = key(0, "random erasing fill: a number or 'random'")
    re_max_attempts: int = key(10, "random erasing attempts")
    mean: List[float] = key(list(IMAGENET_MEAN), "per-channel mean on the 0..255 scale")
    std: List[float] = key(list(IMAGENET_STD), "per-channel std on the 0..255 scale")
    crop_pct: float = key(0.875, "evaluation centre-crop fraction")
    mixup: float = key(0.0, "mixup beta parameter (0: off)")
    cutmix: float = key(0.0, "cutmix beta parameter (0: off)")
    cutmix_prob: float = key(1.0, "probability of applying mixup/cutmix to a batch")
    mixup_switch_prob: float = key(0.5, "probability of cutmix instead of mixup when both are on")
    transforms: Optional[Mapping[str, Any]] = key(
        None, "explicit pipelines: {train: [{type: name, ...}, ...], eval: [...], batch: {type: ..., ...}}")
    augmentations: Optional[List[Component]] = key(None, "explicit training pipeline: [{type: name, ...}, ...]")
    eval_augmentations: Optional[List[Component]] = key(None, "explicit evaluation pipeline: [{type: name, ...}]")


@dataclass(frozen=True)
class ModelSection:
    """The network and the weights it starts from (loaded by the engine, by parameter name)."""

    model: Optional[Component] = key(None, "model by registry name or {type: name, ...arguments}")
    num_classes: Optional[int] = key(None, "classes; default: the dataset's")
    in_channels: int = key(3, "input channels", offer=True)
    drop_rate: Optional[float] = key(None, "classifier dropout rate (model default when unset)", offer=True)
    drop_path_rate: Optional[float] = key(None, "stochastic depth rate (models that have it)", offer=True)
    pretrained: bool = key(False, "load the model's registered weights from the local cache")
    ckpt_path: str = key("", "checkpoint to start from (training) or to evaluate (validate)")


@dataclass(frozen=True)
class OptimizerSection:
    """The optimizer; the engine builds weight-decay groups' inputs and drives its learning rate."""

    opt: Optional[Component] = key(None, "optimizer by registry name or {type: name, ...}")
    momentum: float = key(0.9, "momentum", offer=True)
    weight_decay: float = key(1e-6, "weight decay", offer=True)
    use_nesterov: bool = key(False, "Nesterov momentum", offer=True)
    weight_decay_filter: Literal["disable", "auto", "norm_and_bias"] = key(
        "disable", "parameters exempt from weight decay", offer=True)
    eps: float = key(1e-10, "optimizer epsilon", offer=True)


@dataclass(frozen=True)
class SchedulerSection:
    """The learning-rate schedule: one rate per optimizer update."""

    scheduler: Optional[Component] = key(None, "learning-rate schedule by registry name or {type: name, ...}")
    lr: float = key(0.001, "base learning rate")
    min_lr: float = key(1e-6, "minimum learning rate", offer=True)
    warmup_epochs: int = key(3, "linear warmup epochs", offer=True)
    warmup_factor: float = key(0.0, "warmup start factor", offer=True)
    decay_epochs: int = key(100, "decay epochs", offer=True)
    decay_rate: float = key(0.9, "decay rate", offer=True)
    multi_step_decay_milestones: List[int] = key([30, 60, 90], "milestone epochs of multi_step_decay", offer=True)
    lr_epoch_stair: bool = key(False, "change the rate once per epoch", offer=True)
    num_cycles: int = key(1, "cosine cycles", offer=True)
    cycle_decay: float = key(1.0, "peak decay per cycle", offer=True)


@dataclass(frozen=True)
class LossSection:
    """The loss."""

    loss: Optional[Component] = key(None, "loss by registry name or {type: name, ...}")
    label_smoothing: float = key(0.0, "label smoothing", offer=True)
    aux_factor: float = key(0.0, "weight of auxiliary logits", offer=True)
    reduction: Literal["mean", "sum", "none"] = key("mean", "loss reduction", offer=True)


@dataclass(frozen=True)
class TrainSection:
    """The training loop: epochs, validation, checkpoints, logging and the update step's options."""

    epoch_size: int = key(90, "training epochs")
    val_while_train: bool = key(False, "validate during training and keep the best checkpoint")
    val_interval: int = key(1, "validate every this many epochs")
    val_tta: Literal["none", "hflip"] = key(
        "none", "test-time augmentation in validation and validate: hflip scores the mean of each image's "
        "logits and its mirror's (twice the inference work)")
    progressive_sizes: List[int] = key(
        [], "progressive resizing: the training step resizes each batch (bilinear, aspect kept) so its shorter "
        "side is this many px, one size per entry of progressive_epochs; validation keeps the eval pipeline's "
        "size. Early epochs at a small size cost less; end at the size the model is validated at")
    progressive_epochs: List[int] = key([], "the epochs (from 1) at which each of progressive_sizes begins; the "
                                            "first is 1, and they increase")
    log_interval: int = key(100, "log a line every this many steps when not on a terminal")
    progress: Literal["auto", "bar", "log", "none"] = key("auto", "progress bar: auto (on a terminal), bar, log, none")
    resume: Resume = key("", "continue a run: True = latest state in ckpt_save_dir, or a checkpoint path")
    resume_opt: bool = key(False, "with ckpt_path: also restore optimizer and schedule (= resume)")
    keep_checkpoint_max: int = key(10, "checkpoints to keep")
    ckpt_save_dir: str = key("./ckpt", "where checkpoints, logs and the resolved config go")
    overwrite: bool = key(False, "start a new run in a ckpt_save_dir that holds another run, removing its files "
                                 "(mindplug's addition; without it such a run is refused)")
    ckpt_save_interval: int = key(1, "save every this many epochs")
    ckpt_save_policy: Literal["latest_k", "top_k"] = key("latest_k",
                                                         "latest_k keeps the newest, top_k the most accurate")
    ema: bool = key(False, "keep an exponential moving average of the weights")
    ema_decay: float = key(0.9999, "EMA decay")
    clip_grad: bool = key(False, "clip gradients by global norm")
    clip_value: float = key(15.0, "global-norm clip value")
    gradient_accumulation_steps: int = key(1, "accumulate this many batches per update")
    loss_scale_type: Literal["fixed", "dynamic", "auto"] = key(
        "fixed", "fixed, dynamic or auto (= dynamic under float16 amp; bfloat16 on the CPU needs no loss "
        "scale)")
    loss_scale: float = key(1.0, "loss scale (fixed) or initial scale (dynamic)")
    drop_overflow_update: bool = key(False, "skip the update of a step whose gradients overflow")


#: section name -> its dataclass, in the order `--help` lists them
SECTIONS: Dict[str, type] = {
    "runtime": RuntimeSection, "data": DataSection, "transforms": TransformsSection, "model": ModelSection,
    "optimizer": OptimizerSection, "scheduler": SchedulerSection, "loss": LossSection, "train": TrainSection,
}

#: keys naming a component, with its kind
COMPONENT_KEYS: Dict[str, str] = {"model": "model", "opt": "optimizer", "scheduler": "scheduler", "loss": "loss",
                                  "dataset": "dataset"}

#: MindCV's older key names: old -> (current, how the old value translates)
LEGACY_KEYS: Dict[str, Tuple[str, Any]] = {
    "smooth_factor": ("label_smoothing", lambda v: v),
    "filter_bias_and_bn": ("weight_decay_filter", lambda v: "norm_and_bias" if v else "disable"),
    "dynamic_loss_scale": ("loss_scale_type", lambda v: "dynamic" if v else "fixed"),
}


@dataclass(frozen=True)
class Key:
    """One recipe key as the loader sees it."""

    name: str
    section: str
    type: Any
    default: Any
    help: str
    offer: bool
    effect: str


@lru_cache(maxsize=1)
def all_keys() -> Dict[str, Key]:
    """Every key of every section, by name."""
    found: Dict[str, Key] = {}
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls, globalns=globals(), include_extras=True)
        for f in dataclasses.fields(cls):
            make = f.default_factory
            default = make() if f.default is dataclasses.MISSING and callable(make) else f.default
            found[f.name] = Key(f.name, section, hints[f.name], default, f.metadata["help"], f.metadata["offer"],
                                f.metadata["effect"])
    return found


def offered(section: str) -> List[str]:
    """Keys of ``section`` handed to its component when the factory takes them."""
    return [k.name for k in all_keys().values() if k.section == section and k.offer]
