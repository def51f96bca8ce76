"""What each command runs on, built from a recipe: the components, the runtime record, the data.

The loops (``trainer``, ``evaluate``, ``bench``, ``predict``, ``export``) receive these built objects and
never read the recipe. Every check that can fail runs here, before data is read or a graph compiled.
"""
from __future__ import annotations

import dataclasses

import math
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from .._atomic import probe_writable
from .._errors import CheckpointError, ConfigError
from . import build, state as st
from .data import Batches, align_classes, batches_for, class_names_of, steps_per_epoch
from .keys import TrainSection
from .recipe import Recipe
from .runtime import Runtime, apply_precision, init_runtime, seed_everything


@dataclass
class TrainingJob:
    """Everything a training run needs, built and checked."""

    recipe: Recipe
    runtime: Runtime
    train: TrainSection
    model: build.Resolved
    net: Any
    loss_fn: Any
    optimizer: Any
    lrs: np.ndarray
    train_source: Any
    val_source: Optional[Any]
    num_classes: int
    class_names: List[str]
    steps: int
    batches: Batches
    resume: Optional[st.ResumePoint]

    @property
    def model_name(self) -> str:
        """The model as the recipe names it, for checkpoint file names (``googlenet-3_468.ckpt``)."""
        return self.model.name

    @property
    def dynamic_loss_scale(self) -> bool:
        kind = self.train.loss_scale_type
        # bfloat16 has float32's range: only float16 (MindSpore's amp off the CPU) needs a dynamic scale
        return kind == "dynamic" or (kind == "auto" and self.runtime.precision == "float16")


def _num_classes(requested: Optional[int], source: Any) -> int:
    classes = int(requested or getattr(source, "num_classes", 0))
    if classes < 1:
        raise ConfigError("num_classes is not set and the dataset does not say how many classes it has")
    data_classes = getattr(source, "num_classes", classes)
    if data_classes > classes:
        raise ConfigError(f"the dataset has {data_classes} classes but num_classes is {classes}; "
                          f"set --num_classes {data_classes}")
    return classes


def training_job(recipe: Recipe) -> TrainingJob:
    """Build a training run: runtime, resume point, data, schedule, network (with its starting weights),
    loss and optimizer, in the order the checks need them."""
    s = recipe.sections
    build.select_plugins(s.runtime)
    resume = st.resolve_resume(s.train.resume, s.model.ckpt_path, s.train.resume_opt, s.train.ckpt_save_dir)
    if s.model.ckpt_path and resume is None and not os.path.isfile(s.model.ckpt_path):
        raise CheckpointError(f"ckpt_path {s.model.ckpt_path!r} does not exist; training would start from random "
                              f"weights. Fix the path or drop --ckpt_path")
    if s.model.ckpt_path and s.model.pretrained and resume is None:
        raise ConfigError("pass either --pretrained True (the model's registered weights) or --ckpt_path, not both")
    folder = s.train.ckpt_save_dir
    for where, what in ((folder, "ckpt_save_dir"), (os.path.join(folder, st.STATE_DIR), "the train-state folder")):
        probe_writable(where, what)
    if resume is None:  # before any rank joins the group (a barrier), so no rank has written yet
        st.claim_run_dir(folder, s.train.overwrite)
    parts = build.resolve_all(recipe)
    model, dataset = parts["model"], parts["dataset"]
    runtime = init_runtime(s.runtime, notices=recipe.notices)
    train_source = build.open_split(s.data, s.data.train_split, role="training", resolved=dataset)
    names = list(getattr(train_source, "class_names", []) or [])
    val_source = None
    if s.train.val_while_train:
        val_source = build.open_split(s.data, s.data.val_split, role="validation", class_names=names or None,
                                      resolved=dataset)
        val_source = align_classes(val_source, names, "validation")
    num_classes = _num_classes(s.model.num_classes, train_source)
    steps = steps_per_epoch(len(train_source), s.data.batch_size, s.data.drop_remainder, runtime.world)
    updates = math.ceil(steps / s.train.gradient_accumulation_steps)
    lrs = build.build_schedule(s.scheduler, updates, s.train.epoch_size, recipe.given, parts["scheduler"])
    net = _network(recipe, model, num_classes, runtime, start_from=None if resume else s.model.ckpt_path)
    loss_fn = build.build_loss(s.loss, recipe.given, parts["loss"])
    optimizer = build.build_optimizer(s.optimizer, net.trainable_params(), lrs, recipe.given, parts["opt"])
    _check_optimizer(optimizer)
    transforms = build.transform_keys(s.transforms, s.model.in_channels, recipe.given)
    batches = batches_for(s.data, transforms, runtime.workers, num_classes)
    return TrainingJob(build.named(recipe, parts), runtime, s.train, model, net, loss_fn, optimizer, lrs,
                       train_source, val_source,
                       num_classes, class_names_of(train_source, num_classes), steps, batches, resume)


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "global_step") or not hasattr(optimizer, "parameters"):
        raise ConfigError(f"the optimizer built is a {type(optimizer).__name__}, not a mindspore.nn.Optimizer; "
                          f"an optimizer factory returns one (docs/plugin-kinds.md)")


def _network(recipe: Recipe, model: build.Resolved, num_classes: int, runtime: Runtime, *,
             start_from: Optional[str]) -> Any:
    """The network with identical initial weights on every rank, its starting weights (``ckpt_path`` or the
    model's pretrained weights, adapted for fine-tuning) and the precision the recipe asks for."""
    s = recipe.sections
    seed_everything(s.runtime.seed)
    net, _ = build.build_model(s.model, num_classes, given=recipe.given, resolved=model, kernels=runtime.kernels)
    if start_from:
        build.load_model_weights(net, model, start_from, fine_tune=True)
    elif s.model.pretrained:
        build.load_model_weights(net, model, build.pretrained_weights(model), fine_tune=True)
    if runtime.precision != "float16":  # bfloat16 on the CPU lives in the kernels, not in casts
        return net
    return build.mixed_precision(net, s.runtime.amp_level, s.runtime.amp_cast_list)


@dataclass
class EvaluationJob:
    """A trained (or pretrained) network and the validation data to score it on."""

    runtime: Runtime
    net: Any
    num_classes: int
    source: Any
    batches: Batches
    label: str
    split: str
    #: test-time augmentation (val_tta)
    tta: str = "none"


def evaluation_job(recipe: Recipe) -> EvaluationJob:
    """``validate``: the checkpoint (or the model's pretrained weights) and the validation split; every
    missing or mismatched input fails here, before any data is read."""
    from .inference import check_checkpoint, load_network, trained_class_names

    s = recipe.sections
    build.select_plugins(s.runtime)
    ckpt = s.model.ckpt_path
    if not s.model.pretrained or ckpt:
        check_checkpoint(ckpt)
    model = build.resolve(s.model.model, "model")
    names = trained_class_names(ckpt) if ckpt else None
    source = build.open_split(s.data, s.data.val_split, role="validation", class_names=names)
    source = align_classes(source, names, "validation")
    runtime = init_runtime(s.runtime, notices=recipe.notices)
    apply_precision(runtime, runtime.val_precision)
    if s.model.pretrained and not ckpt:
        weights = build.pretrained_weights(model)
        classes = int(s.model.num_classes or weights.num_classes)
        net, _ = build.build_model(s.model, classes, given=recipe.given, resolved=model, kernels=runtime.kernels)
        build.load_model_weights(net, model, weights, fine_tune=False)
        net.set_train(False)
    else:
        net, classes = load_network(recipe, ckpt, s.model.num_classes, kernels=runtime.kernels, model=model)
    data_classes = getattr(source, "num_classes", classes)
    if data_classes > classes:
        raise ConfigError(f"the validation data has {data_classes} classes, the network {classes}")
    batches = batches_for(s.data, build.transform_keys(s.transforms, s.model.in_channels), runtime.workers)
    return EvaluationJob(runtime, net, classes, source, batches, ckpt or "pretrained weights", s.data.val_split,
                         s.train.val_tta)


@dataclass
class InferenceJob:
    """A trained network on one process, with its class names and evaluation transform keys."""

    runtime: Runtime
    net: Any
    num_classes: int
    class_names: List[str]
    transforms: dict
    checkpoint: str
    input_size: int
    in_channels: int


def inference_job(recipe: Recipe, *, portable: bool = False, names_file: Optional[str] = None) -> InferenceJob:
    """``predict``/``export``: the checkpoint's network; ``portable`` builds it on standard MindSpore ops
    only (C++ kernels are fast here, but neither ONNX nor another MindSpore installation could run them)."""
    from .inference import class_names, load_network

    s = recipe.sections
    build.select_plugins(s.runtime)
    runtime = init_runtime(s.runtime, need_distribution=False, notices=recipe.notices)
    apply_precision(runtime, runtime.val_precision)
    ckpt = s.model.ckpt_path
    net, classes = load_network(recipe, ckpt, s.model.num_classes,
                                kernels="native" if portable else runtime.kernels)
    return InferenceJob(runtime, net, classes, class_names(ckpt, classes, names_file),
                        build.transform_keys(s.transforms, s.model.in_channels), ckpt, s.transforms.image_resize,
                        s.model.in_channels)


@dataclass
class BenchJob:
    """The recipe's network, loss and optimizer on synthetic data of the recipe's batch and input size."""

    runtime: Runtime
    model: build.Resolved
    net: Any
    loss_fn: Optional[Any]
    optimizer: Optional[Any]
    images: Any
    labels: Any
    loss_scale: float
    clip_value: Optional[float] = None  # the recipe's clip by global norm (clip_grad), as training does it


def bench_job(recipe: Recipe, *, steps: int, train: bool) -> BenchJob:
    import mindspore as ms

    from .runtime import launched_by_msrun

    s = recipe.sections
    build.select_plugins(s.runtime)
    runtime = init_runtime(s.runtime, need_distribution=launched_by_msrun(), notices=recipe.notices)
    if "val_amp_level" not in recipe.given:  # `bench --amp_level O2` measures both phases in it
        runtime = dataclasses.replace(runtime, val_precision=runtime.precision)
    num_classes = int(s.model.num_classes or 1000)
    rng = np.random.default_rng(runtime.seed)
    size, batch = s.transforms.image_resize, s.data.batch_size
    images = ms.Tensor(rng.standard_normal((batch, s.model.in_channels, size, size)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, num_classes, batch).astype(np.int32))
    net, model = build.build_model(s.model, num_classes, given=recipe.given, kernels=runtime.kernels)
    loss_fn = optimizer = None
    if train:
        loss_fn = build.build_loss(s.loss, recipe.given)
        optimizer = build.build_optimizer(s.optimizer, net.trainable_params(),
                                          np.full(steps + 1, s.scheduler.lr, dtype=np.float32), recipe.given)
        _check_optimizer(optimizer)
    return BenchJob(runtime, model, net, loss_fn, optimizer, images, labels, s.train.loss_scale,
                    s.train.clip_value if s.train.clip_grad else None)


def check_data(recipe: Recipe, *, splits: str = "both") -> int:
    """``mindplug check-data``: decode every sample of the recipe's splits, print each unreadable one;
    the number of unreadable samples."""
    import sys

    from .._errors import DataError

    s = recipe.sections
    build.select_plugins(s.runtime)
    dataset = build.resolve(s.data.dataset, "dataset")
    wanted = {"train": [s.data.train_split], "val": [s.data.val_split]}.get(splits,
                                                                           [s.data.train_split, s.data.val_split])
    bad = 0
    for split in wanted:
        source = build.open_split(s.data, split, role=split, resolved=dataset)
        read = getattr(source, "load", None) or source.__getitem__  # load() never skips a bad file
        failed = 0
        for index in range(len(source)):
            try:
                read(index)
            except DataError as exc:
                failed += 1
                print(f"unreadable: {exc}", file=sys.stderr)
        bad += failed
        print(f"split '{split}' of dataset '{dataset.id}': {len(source) - failed} of {len(source)} images readable")
    return bad


@dataclass
class DataBenchJob:
    """The recipe's training pipeline over its training split, without a network (``bench --phase data``)."""

    runtime: Runtime
    model_name: str
    source: Any
    batches: Batches


def data_bench_job(recipe: Recipe) -> DataBenchJob:
    """The training data exactly as ``train`` reads it: the split, transforms, batch size and workers."""
    from .recipe import component_choice
    from .runtime import launched_by_msrun

    s = recipe.sections
    build.select_plugins(s.runtime)
    dataset = build.resolve(s.data.dataset, "dataset")
    runtime = init_runtime(s.runtime, need_distribution=launched_by_msrun(), notices=recipe.notices)
    source = build.open_split(s.data, s.data.train_split, role="training", resolved=dataset)
    num_classes = _num_classes(s.model.num_classes, source)
    steps_per_epoch(len(source), s.data.batch_size, s.data.drop_remainder, runtime.world)
    transforms = build.transform_keys(s.transforms, s.model.in_channels, recipe.given)
    model = component_choice(s.model.model, "model")[0]
    return DataBenchJob(runtime, str(model), source, batches_for(s.data, transforms, runtime.workers, num_classes))
