"""Components of a run, built from the recipe's typed sections through the registry (no plugin named here).

Each component is resolved once (registry entry, imported factory, its signature). A factory receives the
documented arguments of its kind (docs/plugin-kinds.md): the fixed ones, the section's keys its signature
takes (all of them for ``**kwargs``), and the arguments written under ``{type: name, ...}``. A key the
recipe sets that the chosen component does not take is reported (an error under
``MINDPLUG_STRICT_PLUGINS``). The engine, not the factory, loads weights: ``ckpt_path``, ``pretrained``.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from .._errors import CheckpointError, ComponentBuildError, ConfigError, DataError, MindplugError
from .._registry import STRICT_ENV, Entry, configure_plugins, default_registry
from .._signature import check_arguments
from .keys import COMPONENT_KEYS, DataSection, LossSection, ModelSection, OptimizerSection, RuntimeSection
from .keys import SchedulerSection, TransformsSection, offered
from .recipe import component_choice

LOG = logging.getLogger("mindplug.engine")
TRACEBACK_ENV = "MINDPLUG_TRACEBACK"
_KEY_OF_KIND = {kind: key for key, kind in COMPONENT_KEYS.items()}


def select_plugins(section: RuntimeSection) -> None:
    """The recipe's ``plugins:`` section (allow, block, prefer) goes to the registry before any lookup."""
    if section.plugins:
        configure_plugins(allow=section.plugins.get("allow"), block=section.plugins.get("block"),
                          prefer=section.plugins.get("prefer"))


@dataclass(frozen=True)
class Resolved:
    """A component chosen by the recipe: its registry entry, its factory and what that factory accepts."""

    kind: str
    name: str
    entry: Entry
    factory: Callable[..., Any]
    accepts: Optional[FrozenSet[str]]  # keyword names; None for a ``**kwargs`` factory
    explicit: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.entry.canonical_id

    def takes(self, name: str) -> bool:
        return self.accepts is None or name in self.accepts

    def __call__(self, base: Mapping[str, Any], offers: Mapping[str, Any] = {},
                 given: Iterable[str] = ()) -> Any:
        """Build it: ``base`` always, ``offers`` where taken (None means 'the component's default'),
        explicit arguments on top. Set-but-untaken offers are reported; a raising factory is one error."""
        kwargs = dict(base)
        untaken = []
        for name, value in offers.items():
            if value is None:
                continue
            if self.takes(name):
                kwargs[name] = list(value) if isinstance(value, tuple) else value
            elif name in given:
                untaken.append(name)
        if untaken:
            _report_untaken(self, untaken)
        kwargs.update(self.explicit)
        what = f"config '{_KEY_OF_KIND.get(self.kind, self.kind)}': the {self.kind} '{self.id}'"
        check_arguments(self.factory, kwargs, what)
        try:
            return self.factory(**kwargs)
        except MindplugError:
            raise
        except Exception as exc:
            raise ComponentBuildError(f"the {self.kind} '{self.id}' failed to build: {type(exc).__name__}: "
                                      f"{exc}{_traceback_hint(exc)}") from exc


def _report_untaken(resolved: Resolved, keys: List[str]) -> None:
    accepted = ", ".join(sorted(resolved.accepts or ())) or "(none)"
    text = (f"the recipe sets {', '.join(repr(k) for k in keys)}, which the {resolved.kind} '{resolved.id}' "
            f"does not take (its arguments: {accepted})")
    if os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no", "off"):
        raise ConfigError(f"{text}; remove the key or choose a {resolved.kind} that uses it ({STRICT_ENV} is set)")
    LOG.warning(f"warning: {text}: it has no effect")


def _traceback_hint(exc: BaseException) -> str:
    if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
        return "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return f" (set {TRACEBACK_ENV}=1 for the traceback)"


def resolve(value: Any, kind: str) -> Resolved:
    """The component a recipe value (name, ``{type: ...}`` or unset) means, with its factory imported once."""
    name, explicit = component_choice(value, kind)
    registry = default_registry()
    entry = registry.resolve(name, kind)
    factory = registry.load_target(entry)
    try:
        params = inspect.signature(factory).parameters.values()
        accepts: Optional[FrozenSet[str]] = frozenset(
            p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        if any(p.kind is p.VAR_KEYWORD for p in params):
            accepts = None
    except (TypeError, ValueError):
        accepts = None
    return Resolved(kind, name, entry, factory, accepts, dict(explicit))


def resolve_all(recipe: Any) -> Dict[str, Resolved]:
    """Every component key of a recipe resolved, by key (``model``, ``opt``, ...)."""
    return {key: resolve(recipe[key], kind) for key, kind in COMPONENT_KEYS.items()}


def named(recipe: Any, resolved: Mapping[str, Resolved]) -> Any:
    """The recipe with the components it resolved written in (an unset key names its installed default),
    so the run's saved config.yaml says what ran."""
    values = {}
    for key, choice in resolved.items():
        value = recipe[key]
        if isinstance(value, Mapping):
            values[key] = {**value, "type": value.get("type") or choice.name}
        elif not value:
            values[key] = choice.name
    return recipe.replace(**values)


def _offers(section: Any, name: str) -> Dict[str, Any]:
    return {key: getattr(section, key) for key in offered(name)}


# ---------------------------------------------------------------- the components

def build_model(section: ModelSection, num_classes: int, *, given: Iterable[str] = (),
                resolved: Optional[Resolved] = None, kernels: str = "native") -> Tuple[Any, Resolved]:
    """(network, its resolved component): ``num_classes`` and the model keys its factory takes; with
    ``kernels`` = "kernels" every layer the C++ kernels serve is put on them (``mindplug.ops.accelerate``),
    whatever plugin the model comes from."""
    resolved = resolved or resolve(section.model, "model")
    with kernel_context(kernels):
        net = resolved({"num_classes": num_classes}, _offers(section, "model"), given)
    if kernels == "kernels":
        from mindplug.ops import accelerate

        net = accelerate(net)
    return net, resolved


def load_model_weights(net: Any, resolved: Resolved, source: Any, *, fine_tune: bool, label: str = "") -> Any:
    """Weights into the network by parameter name, strictly; ``fine_tune`` lets a classifier for another
    class count (and an RGB stem for a 1-channel network) be adapted, as the spec's metadata describes."""
    from .._checkpoint import load_weights

    report = load_weights(net, source, metadata=resolved.entry.spec.metadata, fine_tune=fine_tune,
                          label=label or None)
    if not report.loaded:
        raise CheckpointError(f"{label or source!r}: no parameter of the {resolved.kind} '{resolved.id}' was "
                              f"loaded; it is the checkpoint of another model")
    return report


def pretrained_weights(resolved: Resolved) -> Any:
    """The ``WeightsSpec`` a model declares for ``pretrained=True``."""
    weights = resolved.entry.spec.weights
    if not weights:
        raise ConfigError(f"pretrained is True but the model '{resolved.id}' declares no weights; set "
                          f"--pretrained False, or start from a checkpoint with --ckpt_path")
    return weights[0]


def build_loss(section: LossSection, given: Iterable[str] = (), resolved: Optional[Resolved] = None) -> Any:
    return (resolved or resolve(section.loss, "loss"))({}, _offers(section, "loss"), given)


def build_schedule(section: SchedulerSection, steps_per_epoch: int, num_epochs: int,
                   given: Iterable[str] = (), resolved: Optional[Resolved] = None) -> Any:
    """One learning rate per optimizer update, as a float32 array."""
    import numpy as np

    resolved = resolved or resolve(section.scheduler, "scheduler")
    lrs = resolved({"lr": section.lr, "steps_per_epoch": steps_per_epoch, "num_epochs": num_epochs},
                   _offers(section, "scheduler"), given)
    lrs = np.asarray(lrs, dtype=np.float32).reshape(-1)
    if lrs.shape[0] != steps_per_epoch * num_epochs:
        raise ConfigError(f"scheduler '{resolved.id}' returned {lrs.shape[0]} rates for {steps_per_epoch} steps x "
                          f"{num_epochs} epochs; a scheduler returns one per step")
    return lrs


def build_optimizer(section: OptimizerSection, params: list, lr: Any, given: Iterable[str] = (),
                    resolved: Optional[Resolved] = None) -> Any:
    resolved = resolved or resolve(section.opt, "optimizer")
    return resolved({"params": params, "lr": lr}, _offers(section, "optimizer"), given)


def build_source(section: DataSection, split: str, *, class_names: Optional[Sequence[str]] = None,
                 resolved: Optional[Resolved] = None) -> Any:
    """A random-access dataset source for one split (the dataset plugin reports bad dirs and splits)."""
    resolved = resolved or resolve(section.dataset, "dataset")
    base: Dict[str, Any] = {"split": split}
    if section.data_dir:
        base["data_dir"] = section.data_dir
    offers = {"class_names": list(class_names)} if class_names is not None else {}
    return resolved(base, offers)


#: transform keys that are not MindCV pipeline settings (image_resize also sizes bench and export inputs)
_NOT_PIPELINE = ("transforms", "augmentations", "eval_augmentations", "image_resize")


def transform_keys(section: TransformsSection, in_channels: int, given: Iterable[str] = ()) -> Dict[str, Any]:
    """The transforms section as the pipeline builder reads it, with the network's input channels; MindCV
    augmentation keys a recipe sets next to an explicit list that replaces them are reported."""
    from .._transforms import explicit_entry

    keys = {**{f.name: getattr(section, f.name) for f in dataclasses.fields(section)}, "in_channels": in_channels}
    replaced = [stage for stage in ("train", "eval") if explicit_entry(keys, stage)[0] is not None]
    idle = sorted(k for k in set(given) & set(keys) if k not in _NOT_PIPELINE and k != "in_channels")
    if replaced and idle:
        LOG.warning(f"warning: the recipe gives an explicit {' and '.join(replaced)} transform list, so "
                    f"{', '.join(repr(k) for k in idle)} have no effect there (use transforms.train_extra to "
                    f"add to the default pipeline instead)")
    return keys


def dataset_name(section: DataSection) -> str:
    return component_choice(section.dataset, "dataset")[0]


def open_split(section: DataSection, split: str, *, role: str, class_names: Optional[Sequence[str]] = None,
               resolved: Optional[Resolved] = None) -> Any:
    """One split's source; a missing data dir or an empty split is a DataError naming it."""
    from .data import Subset

    if section.data_dir and not os.path.exists(str(section.data_dir)):
        raise DataError(f"data_dir {section.data_dir!r} does not exist; pass --data_dir with the dataset root "
                        f"(ImageNet layout: <data_dir>/{section.train_split}/<class>/*.JPEG and "
                        f"<data_dir>/{section.val_split}/<class>/*)")
    source = build_source(section, split, class_names=class_names, resolved=resolved)
    if section.num_samples:
        source = Subset(source, section.num_samples)
    if len(source) == 0:
        raise DataError(f"the {role} split '{split}' of dataset '{dataset_name(section)}' (data_dir "
                        f"{section.data_dir!r}) holds no images")
    return source


def mixed_precision(net: Any, level: str, cast_list: Optional[Sequence[str]]) -> Any:
    """Mixed precision by level; ``amp_cast_list`` names mindspore.nn cell classes (no eval of text)."""
    if level == "O0":
        return net
    import mindspore as ms
    from mindspore import nn

    if cast_list and level in ("O1", "O2"):
        classes = []
        for name in cast_list:
            cls = getattr(nn, name.split(".")[-1], None)
            if not isinstance(cls, type):
                raise ConfigError(f"amp_cast_list: '{name}' is not a mindspore.nn cell class")
            classes.append(cls)
        key = "white_list" if level == "O1" else "black_list"
        return ms.amp.custom_mixed_precision(net, **{key: classes})
    return ms.amp.auto_mixed_precision(net, level)


def kernel_context(kernels: str) -> Any:
    """Where a network is built: on the kernels where they serve, or on native ops only."""
    import contextlib

    if kernels == "native":
        from mindplug.ops._dispatch import native

        return native()
    return contextlib.nullcontext()

