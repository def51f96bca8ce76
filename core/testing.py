"""Checks for plugin authors: create every component of a plugin and hold it to its kind's contract.

Use it in a plugin's own tests (``mindplug.testing.check_plugin("myplugin")``) or from the command line
(``mindplug doctor --check myplugin``). Each kind is checked as the engine uses it: a model's output has
``num_classes`` columns; an optimizer updates its parameters and follows a per-step learning rate; a schedule
has one float32 rate per step; an augmentation keeps uint8 HWC (float32 CHW for ``tensor`` ones, batches
for ``batch`` ones); a dataset's ``len``, items and ``class_names`` agree; a loss is a scalar with
gradients. Nothing is downloaded; a dataset that needs data is checked only with ``data_dir``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._errors import MindplugError
from ._registry import Entry, Registry, default_registry

__all__ = ["Finding", "PluginCheckError", "check_plugin", "check_component"]

NUM_CLASSES = 3
#: values for required arguments the checks can give
_SAMPLE_ARGS = {"size": 24, "num_classes": NUM_CLASSES, "multi_step_decay_milestones": [1, 2]}


@dataclass(frozen=True)
class Finding:
    """One component's result: ``ok``, ``fail`` (a broken contract) or ``skip`` (could not be checked here)."""

    component: str
    kind: str
    status: str
    message: str

    def __str__(self) -> str:
        label = {"ok": "ok   ", "fail": "FAIL ", "skip": "skip "}[self.status]
        return f"{label} {self.kind} '{self.component}': {self.message}"


class PluginCheckError(AssertionError):
    """A plugin broke its contract; the message lists every defect."""


class _Defect(Exception):
    pass


class _Skip(Exception):
    pass


def check_plugin(plugin: str, *, data_dir: Optional[str] = None, registry: Optional[Registry] = None,
                 raise_on_failure: bool = True) -> List[Finding]:
    """Check every component of the plugin named ``plugin`` (its entry-point name); raises
    ``PluginCheckError`` naming each defect (unless ``raise_on_failure`` is False)."""
    registry = registry or default_registry()
    entries = [e for e in registry.entries() if e.plugin == plugin]
    failed = [f for f in registry.failures if f.name == plugin]
    findings: List[Finding] = [Finding(plugin, "plugin", "fail", f.describe()) for f in failed]
    if not entries and not failed:
        known = sorted({e.plugin for e in registry.entries()})
        findings.append(Finding(plugin, "plugin", "fail", f"no loaded plugin is named {plugin!r}; loaded: "
                                                          f"{', '.join(known)}"))
    with _pynative():
        findings += [check_component(e, data_dir=data_dir, registry=registry) for e in entries]
    defects = [f for f in findings if f.status == "fail"]
    if defects and raise_on_failure:
        raise PluginCheckError(f"plugin '{plugin}' breaks the mindplug contract ({len(defects)} defect(s)):\n"
                               + "\n".join(f"  - {f}" for f in defects))
    return findings


def check_component(entry: Entry, *, data_dir: Optional[str] = None,
                    registry: Optional[Registry] = None) -> Finding:
    """Create one component and check it against its kind's contract."""
    registry = registry or default_registry()
    kind = entry.spec.kind
    try:
        factory = registry.load_target(entry)
        message = _CHECKS[kind](entry, factory, data_dir)
    except _Skip as skip:
        return Finding(entry.canonical_id, kind, "skip", str(skip))
    except _Defect as defect:
        return Finding(entry.canonical_id, kind, "fail", str(defect))
    except MindplugError as exc:
        return Finding(entry.canonical_id, kind, "fail", str(exc).splitlines()[0])
    except Exception as exc:  # noqa: BLE001 - whatever a component raises is what its author must see
        return Finding(entry.canonical_id, kind, "fail", f"{type(exc).__name__}: {_first(exc)}")
    return Finding(entry.canonical_id, kind, "ok", message)


# ---------------------------------------------------------------- helpers

def _first(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


class _pynative:
    """Checks run eagerly (PYNATIVE): no graph compile per component."""

    def __enter__(self) -> None:
        import mindspore as ms

        self.previous = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)

    def __exit__(self, *exc: Any) -> None:
        import mindspore as ms

        ms.set_context(mode=self.previous)


def _accepted(factory: Callable[..., Any]) -> Tuple[set, bool, List[str]]:
    """(keyword names, takes **kwargs, required names)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return set(), True, []
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params), required


def _call(factory: Callable[..., Any], given: Dict[str, Any], what: str) -> Any:
    """The factory called with the ``given`` arguments it takes, plus sample values for required ones."""
    names, var_kw, required = _accepted(factory)
    kwargs = {k: v for k, v in given.items() if var_kw or k in names}
    for name in required:
        if name not in kwargs:
            if name not in _SAMPLE_ARGS:
                raise _Skip(f"not created: it needs the argument {name!r}, which has no default")
            kwargs[name] = _SAMPLE_ARGS[name]
    try:
        return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001
        args = ", ".join(sorted(kwargs)) or "no arguments"
        raise _Defect(f"the {what} factory raised with {args}: {type(exc).__name__}: {_first(exc)}") from None


def _tensor(array: np.ndarray) -> Any:
    import mindspore as ms

    return ms.Tensor(array)


def _logits_of(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


# ---------------------------------------------------------------- the kinds

def _check_model(entry: Entry, factory: Callable[..., Any], _data: Optional[str]) -> str:
    from mindspore import nn

    names, var_kw, _ = _accepted(factory)
    if not var_kw and "num_classes" not in names:
        raise _Defect("the factory takes no num_classes argument; the engine always passes it")
    channel_options = [3, 1] if var_kw or "in_channels" in names else [3]
    size = int((entry.spec.metadata.get("default_input_size") or (3, 32, 32))[-1])
    sizes = [32] if size <= 32 else [32, size]
    checked = []
    for channels in channel_options:
        given = {"num_classes": NUM_CLASSES, **({"in_channels": channels} if len(channel_options) > 1 else {})}
        net = _call(factory, given, "model")
        if not isinstance(net, nn.Cell):
            raise _Defect(f"the factory returned a {type(net).__name__}, not a mindspore.nn.Cell")
        params = [p.name for p in net.get_parameters()]
        if len(set(params)) != len(params):
            raise _Defect("two parameters share a name; checkpoints load by name")
        net.set_train(False)
        out, error = None, None
        for side in sizes:
            x = np.random.default_rng(0).standard_normal((2, channels, side, side)).astype(np.float32)
            try:
                out = _logits_of(net(_tensor(x)))
                break
            except Exception as exc:  # noqa: BLE001 - try the model's own input size next
                error = exc
        if out is None:
            raise _Defect(f"forward of a 2x{channels}x{sizes[-1]}x{sizes[-1]} input failed: {type(error).__name__}: "
                          f"{_first(error)}")
        shape = tuple(out.shape)
        if shape != (2, NUM_CLASSES):
            raise _Defect(f"with num_classes={NUM_CLASSES} the output has shape {shape}, not (2, {NUM_CLASSES}): "
                          f"the factory must honour num_classes")
        if not np.all(np.isfinite(out.asnumpy())):
            raise _Defect("the output is not finite")
        checked.append(f"{channels}-channel")
    return f"{' and '.join(checked)} input give (2, {NUM_CLASSES}) logits"


def _check_optimizer(entry: Entry, factory: Callable[..., Any], _data: Optional[str]) -> str:
    from mindspore import nn

    from .engine.steps import StepState, TrainStep, WithLoss

    net = nn.Dense(4, NUM_CLASSES)
    rates = np.array([0.1, 0.0, 0.1], np.float32)  # the middle step must not move anything
    optimizer = _call(factory, {"params": net.trainable_params(), "lr": rates}, "optimizer")
    if not isinstance(optimizer, nn.Optimizer):
        raise _Defect(f"the factory returned a {type(optimizer).__name__}, not a mindspore.nn.Optimizer")
    step = TrainStep(WithLoss(net, nn.CrossEntropyLoss()), optimizer, StepState(net.trainable_params(), 1.0, 1),
                     apply=True)
    x = _tensor(np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32))
    y = _tensor(np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32))
    history = [[p.asnumpy().copy() for p in net.trainable_params()]]
    for _ in range(3):
        step(x, y)
        history.append([p.asnumpy().copy() for p in net.trainable_params()])
    moved = [any(not np.array_equal(a, b) for a, b in zip(history[i], history[i + 1])) for i in range(3)]
    if not moved[0]:
        raise _Defect("a step with lr 0.1 left every parameter unchanged")
    if moved[1]:
        raise _Defect("a step whose per-step learning rate is 0 changed the parameters: the optimizer does not "
                      "read its rate with get_lr() (the engine sets global_step to pick each step's rate)")
    if int(optimizer.global_step.asnumpy().reshape(-1)[0]) != 3:
        raise _Defect("global_step is not the number of updates after 3 steps")
    if not all(np.all(np.isfinite(p)) for p in history[-1]):
        raise _Defect("the parameters are not finite after 3 steps")
    return "updates its parameters and follows a per-step learning rate"


def _check_scheduler(entry: Entry, factory: Callable[..., Any], _data: Optional[str]) -> str:
    rates = _call(factory, {"lr": 0.1, "steps_per_epoch": 4, "num_epochs": 3}, "scheduler")
    array = np.asarray(rates)
    if array.shape != (12,):
        raise _Defect(f"for 4 steps x 3 epochs it returned shape {array.shape}, not (12,): one rate per step")
    if not np.issubdtype(array.dtype, np.floating):
        raise _Defect(f"it returned {array.dtype} rates, not floats (float32)")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise _Defect("the rates must be finite and >= 0")
    return f"12 rates for 4 x 3 steps, {array.min():.3g}..{array.max():.3g}"


def _check_augmentation(entry: Entry, factory: Callable[..., Any], _data: Optional[str]) -> str:
    tags = set(entry.spec.tags)
    rng = np.random.default_rng(2)
    if "batch" in tags:
        fn = _call(factory, {"num_classes": NUM_CLASSES}, "augmentation")
        images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
        out = fn(images, np.array([0, 1, 2, 0], np.int32))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise _Defect("a batch transform returns (images, soft labels)")
        soft = np.asarray(out[1])
        if np.asarray(out[0]).shape != images.shape or soft.shape != (4, NUM_CLASSES):
            raise _Defect(f"a batch transform keeps the images' shape and gives [N, {NUM_CLASSES}] soft labels")
        return "batch transform: images kept, soft labels"
    if entry.spec.default or "pipeline" in tags:
        from ._transforms import check_pipeline

        for stage in ("train", "eval"):
            ops = _call(factory, {"stage": stage, "in_channels": 3, "image_resize": 24}, "augmentation")
            check_pipeline(list(ops), rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), 3, f"the {stage} stage")
        return "pipeline: uint8 HWC in, float32 CHW out, for train and eval"
    op = _call(factory, {}, "augmentation")
    if "normalize" in tags:
        x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        y = np.asarray(op(x))
        if y.shape != (3, 32, 32) or y.dtype != np.float32:
            raise _Defect(f"a 'normalize' transform turns uint8 HWC into float32 CHW; it gave {y.shape} {y.dtype}")
        return "uint8 HWC in, float32 CHW out"
    if "tensor" in tags:
        x = rng.standard_normal((3, 32, 32)).astype(np.float32)
        y = np.asarray(op(x))
        if y.shape != x.shape or y.dtype != np.float32:
            raise _Defect(f"a 'tensor' transform keeps float32 CHW; it gave {y.shape} {y.dtype}")
        return "keeps float32 CHW"
    for channels in (3, 1):
        x = rng.integers(0, 256, (32, 32, channels), dtype=np.uint8)
        y = np.asarray(op(x))
        if y.dtype != np.uint8 or y.ndim != 3:
            raise _Defect(f"given a uint8 HWC image it returned {y.shape} {y.dtype}: an augmentation keeps uint8 "
                          f"HWC (tag it 'tensor' if it works after normalisation)")
    return "keeps uint8 HWC (1 and 3 channels)"


def _check_dataset(entry: Entry, factory: Callable[..., Any], data_dir: Optional[str]) -> str:
    given: Dict[str, Any] = {"split": "train"}
    if data_dir:
        given["data_dir"] = data_dir
    names, var_kw, required = _accepted(factory)
    try:
        source = factory(**{k: v for k, v in given.items() if var_kw or k in names})
    except Exception as exc:  # noqa: BLE001
        if not data_dir:
            raise _Skip(f"not created without data ({type(exc).__name__}: {_first(exc)}); check it with "
                        f"data_dir") from None
        raise _Defect(f"the factory raised with data_dir={data_dir!r}: {type(exc).__name__}: {_first(exc)}") from None
    try:
        count = len(source)
    except TypeError:
        raise _Defect("the source has no len(); a dataset is random-access") from None
    if count < 1:
        raise _Defect("the source is empty")
    image, label = source[0]
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise _Defect(f"item 0's image is {image.shape} {image.dtype}: a source gives uint8 HW or HWC (C = 1 or 3)")
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise _Defect(f"item 0's label is {type(label).__name__}, not an int")
    class_names = list(getattr(source, "class_names", None) or [])
    classes = getattr(source, "num_classes", None)
    if not class_names or not all(isinstance(n, str) for n in class_names):
        raise _Defect("the source has no class_names (a list of str)")
    if classes != len(class_names):
        raise _Defect(f"num_classes = {classes} but class_names has {len(class_names)} names")
    if not 0 <= int(label) < classes:
        raise _Defect(f"item 0's label {label} is outside 0..{classes - 1}")
    return f"{count} items, {classes} classes, images {image.shape} uint8"


def _check_loss(entry: Entry, factory: Callable[..., Any], _data: Optional[str]) -> str:
    import mindspore as ms
    from mindspore import nn

    loss = _call(factory, {}, "loss")
    if not isinstance(loss, nn.Cell):
        raise _Defect(f"the factory returned a {type(loss).__name__}, not a mindspore.nn.Cell")
    logits = _tensor(np.random.default_rng(3).standard_normal((4, NUM_CLASSES)).astype(np.float32))
    labels = _tensor(np.array([0, 1, 2, 0], np.int32))
    value = loss(logits, labels)
    if int(np.prod(value.shape)) != 1:
        raise _Defect(f"it returned shape {tuple(value.shape)}, not a scalar (reduction 'mean')")
    grad = ms.grad(lambda x: loss(x, labels))(logits).asnumpy()
    if not np.all(np.isfinite(grad)) or not np.any(grad):
        raise _Defect("its gradient with respect to the logits is zero or not finite")
    soft = _tensor(np.full((4, NUM_CLASSES), 1.0 / NUM_CLASSES, np.float32))
    try:
        loss(logits, soft)
    except Exception as exc:  # noqa: BLE001
        raise _Defect(f"it fails on soft labels [N, C] (mixup/cutmix): {type(exc).__name__}: {_first(exc)}") from None
    return f"scalar {float(value.asnumpy()):.4f} with finite gradients; takes hard and soft labels"


_CHECKS: Dict[str, Callable[[Entry, Callable[..., Any], Optional[str]], str]] = {
    "model": _check_model, "optimizer": _check_optimizer, "scheduler": _check_scheduler,
    "augmentation": _check_augmentation, "dataset": _check_dataset, "loss": _check_loss,
}

