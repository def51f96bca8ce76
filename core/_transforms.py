"""The per-sample and batch transforms of a run: an explicit list from the recipe, or the default pipeline.

- An explicit list, ``transforms: {train: [{type: random_crop, size: 32, padding: 2}, hflip, ...],
  eval: [...], batch: {type: mixup_cutmix, ...}}`` (or the engine's ``augmentations`` /
  ``eval_augmentations`` lists): every step is created by registry name.
- Otherwise the augmentation a plugin declares ``default`` (the built-in one reads MindCV's keys:
  ``image_resize``, ``scale``, ``hflip``, ``mean``, ...) builds the stage from the recipe's keys, with the
  transforms of ``transforms: {train_extra: [...], eval_extra: [...]}`` added at their place: a
  ``place:`` key in the entry, else the first place tag of the component's spec, else ``photometric``.

``check_pipeline`` runs the transforms on one sample before a dataset is built, so a step that breaks the
boundary types (uint8 HWC in, float32 CHW with the network's channels out) is an error naming it, not a
MindSpore graph failure.

Nothing here names a plugin's component: ``create`` (``mindplug.create`` by default) makes each step.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import ConfigError, MindplugError, did_you_mean

CreateFn = Callable[..., Any]
Step = Tuple[str, Dict[str, Any]]
STAGES = ("train", "eval", "batch")
_EXTRA_KEYS = ("train_extra", "eval_extra")
#: where the default pipeline takes added transforms (its documented places), in pipeline order
PLACES = ("decoded", "geometric", "photometric", "tensor")
DEFAULT_PLACE = "photometric"
_LEGACY_KEYS = {"train": "augmentations", "eval": "eval_augmentations"}
#: keys of the transforms section that are not arguments of the default pipeline
_NOT_PIPELINE_KEYS = ("transforms", "augmentations", "eval_augmentations", "aug_splits")


def _default_create() -> CreateFn:
    from . import create

    return create


def explicit_entry(cfg: Mapping[str, Any], stage: str) -> Tuple[Optional[Any], str]:
    """The explicit entry for a stage and its config path, or (None, '')."""
    section = cfg.get("transforms")
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"config 'transforms' must be a mapping with keys {', '.join(STAGES)}, "
                          f"got {type(section).__name__}")
    section = section or {}
    allowed = STAGES + _EXTRA_KEYS
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise ConfigError(f"config 'transforms' has unknown key {unknown[0]!r}"
                          f"{did_you_mean(str(unknown[0]), allowed)}; use {', '.join(allowed)}")
    legacy = _LEGACY_KEYS.get(stage)
    if legacy and cfg.get(legacy) is not None:
        if section.get(stage) is not None:
            raise ConfigError(f"both 'transforms.{stage}' and '{legacy}' are set; keep one")
        return cfg[legacy], legacy
    return section.get(stage), f"transforms.{stage}"


def _entry(entry: Any, path: str) -> Step:
    """``"hflip"`` or ``{type: hflip, prob: 0.3}`` -> (name, args)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and "type" in entry:
        return str(entry["type"]), {k: v for k, v in entry.items() if k != "type"}
    raise ConfigError(f"config '{path}': a transform is a name or a mapping with a 'type' key, got {entry!r}")


def _create(create: CreateFn, name: str, args: Mapping[str, Any], path: str) -> Any:
    try:
        return create(name, kind="augmentation", **dict(args))
    except MindplugError as exc:
        raise type(exc)(f"config '{path}' ({name}): {exc}") from exc


def pipeline_keys(cfg: Mapping[str, Any], factory: Callable[..., Any]) -> Dict[str, Any]:
    """The recipe keys handed to the default pipeline: those its signature takes (all, for ``**keys``)."""
    offered = {k: v for k, v in cfg.items() if k not in _NOT_PIPELINE_KEYS and v is not None}
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return offered
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params}
    return {k: v for k, v in offered.items() if k in names}


def _default_pipeline(cfg: Mapping[str, Any], stage: str, **extra: Any) -> Any:
    from ._registry import default_registry

    registry = default_registry()
    entry = registry.default("augmentation")
    factory = registry.load_target(entry)
    path = f"default pipeline '{entry.canonical_id}'"
    try:
        return factory(stage=stage, **pipeline_keys(cfg, factory), **extra)
    except MindplugError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def added_transforms(cfg: Mapping[str, Any], stage: str, create: Optional[CreateFn] = None) -> List[Tuple[str, Any]]:
    """``(place, transform)`` of ``transforms.<stage>_extra``, each created by registry name."""
    from ._registry import default_registry

    path = f"transforms.{stage}_extra"
    entries = (cfg.get("transforms") or {}).get(f"{stage}_extra") or []
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"config '{path}' must be a list of transforms, got {type(entries).__name__}")
    create = create or _default_create()
    added = []
    for i, raw in enumerate(entries):
        name, args = _entry(raw, f"{path}[{i}]")
        place = args.pop("place", None)
        if place is None:
            tags = default_registry().resolve(name, "augmentation").spec.tags
            place = next((t for t in tags if t in PLACES), DEFAULT_PLACE)
        if place not in PLACES:
            raise ConfigError(f"config '{path}[{i}]' ({name}): place {place!r} is not one of {', '.join(PLACES)}"
                              f"{did_you_mean(str(place), PLACES)}")
        added.append((place, _create(create, name, args, f"{path}[{i}]")))
    return added


def build_transforms(cfg: Mapping[str, Any], *, is_training: bool, create: Optional[CreateFn] = None) -> List[Any]:
    """The per-sample transforms for ``dataset.map(operations=..., input_columns="image")``."""
    stage = "train" if is_training else "eval"
    explicit, path = explicit_entry(cfg, stage)
    if explicit is None:
        added = added_transforms(cfg, stage, create)
        return list(_default_pipeline(cfg, stage, **({"extra": added} if added else {})))
    if (cfg.get("transforms") or {}).get(f"{stage}_extra"):
        raise ConfigError(f"config 'transforms.{stage}_extra' adds to the default pipeline, but '{path}' replaces "
                          f"it: put those steps into the '{path}' list")
    if not isinstance(explicit, (list, tuple)):
        raise ConfigError(f"config '{path}' must be a list of transforms, got {type(explicit).__name__}")
    create = create or _default_create()
    steps: Sequence[Step] = [_entry(e, f"{path}[{i}]") for i, e in enumerate(explicit)]
    return [_create(create, name, args, f"{path}[{i}]") for i, (name, args) in enumerate(steps)]


def build_batch_transform(cfg: Mapping[str, Any], num_classes: int,
                          create: Optional[CreateFn] = None) -> Optional[Callable[..., Any]]:
    """The batch transform (e.g. Mixup/CutMix) or None: ``transforms.batch``, else the default pipeline's."""
    explicit, path = explicit_entry(cfg, "batch")
    if explicit is None:
        return _default_pipeline(cfg, "batch", num_classes=num_classes)
    name, args = _entry(explicit, path)
    args.setdefault("num_classes", num_classes)
    return _create(create or _default_create(), name, args, path)


def check_pipeline(transforms: Sequence[Any], image: Any, channels: int, what: str) -> None:
    """Run ``transforms`` on one decoded sample (uint8 HWC): a step that fails is named with the image it
    got, and the result must be float32 CHW with the network's ``channels``."""
    import numpy as np

    x = np.asarray(image)
    for index, op in enumerate(transforms):
        try:
            y = op(x)
        except Exception as exc:  # noqa: BLE001 - any failure on a valid sample is the step's
            raise ConfigError(f"{what} step {index + 1} ({_op_name(op)}) failed on a {tuple(x.shape)} {x.dtype} "
                              f"image: {type(exc).__name__}: {_short(exc)}; the pipeline takes uint8 HWC images "
                              f"and must give float32 CHW ones: check the step's place") from None
        x = np.asarray(y[0] if isinstance(y, (tuple, list)) else y)
    if not (x.dtype == np.float32 and x.ndim == 3 and x.shape[0] == channels):
        raise ConfigError(f"{what} ends with a {tuple(x.shape)} {x.dtype} image, but the network takes float32 "
                          f"CHW with {channels} channel(s); end the pipeline with a normalize step "
                          f"(e.g. {{type: normalize, mean: [...], std: [...], channels: {channels}}})")


def _op_name(op: Any) -> str:
    return type(op).__name__


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"
