"""Spec records: what a plugin tells the registry about each component, without importing it."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Tuple, Union

#: The kinds of component a plugin can provide; each has its own hook.
KINDS: Tuple[str, ...] = ("model", "optimizer", "scheduler", "loss", "augmentation", "dataset")

#: ImageNet's per-channel mean and std on the 0..255 scale (MindCV's and timm's defaults).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: Tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Target = Union[str, Callable[..., Any]]


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class WeightsSpec:
    """Where a set of weights comes from and how it must be fed (torchvision's WeightsEnum, as a record).

    ``eval_transform`` (an augmentation name), ``crop_pct``, ``interpolation``, ``mean`` and ``std`` record
    the evaluation preprocessing the ``metrics`` were measured with; ``mindplug info`` shows them so a
    recipe can match them.
    """

    tag: str
    file_name: str
    sha256: str | None = None
    source: str = ""
    num_classes: int = 1000
    input_size: Tuple[int, int, int] = (3, 224, 224)
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    eval_transform: str = "resize_center_crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _frozen_mapping(self.metrics))


@dataclass(frozen=True)
class ComponentSpec:
    """One component a plugin provides.

    ``target`` is either a lazy ``"package.module:attr"`` string, imported only on ``create``, or the
    object itself (for components registered in-process). ``fallback=True`` lets the component answer its
    bare name only while no other plugin provides that name (a zoo that repeats a built-in's name keeps
    the built-in the default); its canonical id ``<plugin>:<name>`` always works. ``default=True`` makes it
    what a recipe gets when it names no component of this kind (for augmentations: the pipeline that reads
    MindCV's augmentation keys).
    """

    name: str
    kind: str
    target: Target
    description: str = ""
    tags: Tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    weights: Tuple[WeightsSpec, ...] = ()
    fallback: bool = False
    default: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))

    @property
    def target_path(self) -> str:
        """The target as ``module:attr`` text, for display."""
        if isinstance(self.target, str):
            return self.target
        module = getattr(self.target, "__module__", "?")
        qualname = getattr(self.target, "__qualname__", repr(self.target))
        return f"{module}:{qualname}"


@dataclass(frozen=True)
class PluginRecord:
    """A plugin the registry loaded: where it came from and how long its import took."""

    name: str
    distribution: str
    version: str
    module: str
    import_seconds: float
    n_specs: int
    api_requires: str = ""
    imported_mindspore: bool = False


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, kept so errors can explain missing names."""

    name: str
    distribution: str
    version: str
    module: str
    stage: str
    error: str
    traceback: str = ""

    def describe(self) -> str:
        return (f"plugin '{self.name}' ({self.distribution} {self.version}) failed to {self.stage}: "
                f"{self.error}")


@dataclass(frozen=True)
class ComponentInfo:
    """What ``mindplug.info`` answers: provider, target, signature and description of one component."""

    name: str
    canonical_id: str
    kind: str
    plugin: str
    distribution: str
    version: str
    target: str
    signature: str
    description: str
    tags: Tuple[str, ...]
    metadata: Mapping[str, Any]
    weights: Tuple[WeightsSpec, ...]
