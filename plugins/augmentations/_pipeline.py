"""The default pipeline: MindCV's augmentation keys turned into its ImageNet pipeline, for any dataset.

``mindcv_pipeline`` is the component a recipe gets when it gives no explicit ``transforms`` list (this
plugin declares it the default augmentation). From ``image_resize``, ``scale``, ``ratio``, ``hflip``,
``vflip``, ``color_jitter``, ``interpolation``, ``crop_pct``, ``auto_augment``, ``re_*``, ``mean``, ``std``,
``mixup``, ``cutmix``, ``cutmix_prob`` and ``in_channels`` it builds the training, evaluation or batch
stage. Each step is made by ``create(name, kind="augmentation", **args)``: this plugin's own factories by
default, so another plugin's component of the same name cannot change the default pipeline.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from mindplug import IMAGENET_MEAN, IMAGENET_STD
from mindplug._errors import ConfigError, MindplugError, did_you_mean

LOG = logging.getLogger(__name__)
CreateFn = Callable[..., Any]
Step = Tuple[str, Dict[str, Any]]

#: MindCV's defaults for the recipe keys this module reads
DEFAULTS: Mapping[str, Any] = {
    "image_resize": 224, "scale": (0.08, 1.0), "ratio": (0.75, 1.333), "hflip": 0.5, "vflip": 0.0,
    "color_jitter": None, "interpolation": "bilinear", "crop_pct": 0.875, "auto_augment": None,
    "re_prob": 0.0, "re_scale": (0.02, 0.33), "re_ratio": (0.3, 3.3), "re_value": 0, "re_max_attempts": 10,
    "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "mixup": 0.0, "cutmix": 0.0, "cutmix_prob": 1.0,
    "mixup_switch_prob": 0.5, "in_channels": 3,
}
#: first token of an ``auto_augment`` policy string -> the augmentation component that parses it
POLICY_COMPONENTS: Mapping[str, str] = {
    "randaug": "rand_augment", "rand": "rand_augment", "autoaug": "auto_augment", "autoaugr": "auto_augment",
    "trivialaugwide": "trivial_augment_wide", "trivialaug": "trivial_augment_wide", "augmix": "augmix",
}
#: network input channels -> the step that makes every image have them (no-op when it already has)
CHANNEL_STEPS: Mapping[int, str] = {3: "to_rgb", 1: "to_grayscale"}


def _own_create(name: str, kind: str = "augmentation", **kwargs: Any) -> Any:
    """This plugin's factory of ``name`` (not the registry's: the default pipeline is this plugin's own)."""
    from mindplug._signature import check_arguments

    from . import _factories

    factory = getattr(_factories, name)
    check_arguments(factory, kwargs, f"The augmentation 'augmentations:{name}'")
    return factory(**kwargs)


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    value = cfg.get(key)
    return DEFAULTS.get(key) if value is None else value


def _create(create: CreateFn, name: str, args: Mapping[str, Any], path: str) -> Any:
    try:
        return create(name, kind="augmentation", **dict(args))
    except MindplugError as exc:
        raise type(exc)(f"config '{path}' ({name}): {exc}") from exc


def _make(steps: Sequence[Step], create: CreateFn, path: str) -> List[Any]:
    return [_create(create, name, args, f"{path}[{i}]") for i, (name, args) in enumerate(steps)]


def _norm_values(cfg: Mapping[str, Any], channels: int) -> Tuple[List[float], List[float]]:
    """mean/std for ``channels``; a 3-value mean for a 1-channel network becomes its average."""
    mean, std = [float(v) for v in _get(cfg, "mean")], [float(v) for v in _get(cfg, "std")]
    if channels == 1 and len(mean) == 3 and len(std) == 3:
        LOG.info("in_channels is 1: normalising with the average of the 3-channel mean/std")
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    return mean, std


def _channel_steps(channels: int) -> List[Step]:
    name = CHANNEL_STEPS.get(channels)
    return [(name, {})] if name else []


def _jitter_args(value: Any) -> Dict[str, Any]:
    if isinstance(value, (int, float)):
        return {"brightness": float(value), "contrast": float(value), "saturation": float(value)}
    values = [float(v) for v in value]
    if len(values) not in (3, 4):
        raise ConfigError(f"config 'color_jitter' must be one number or 3-4 numbers (brightness, contrast, "
                          f"saturation[, hue]), got {value!r}")
    return dict(zip(("brightness", "contrast", "saturation", "hue"), values))


def policy_component(policy: str) -> str:
    """The augmentation component for an ``auto_augment`` policy string, by its first token."""
    head = str(policy).strip().lower().split("-")[0]
    if head not in POLICY_COMPONENTS:
        raise ConfigError(f"config 'auto_augment': unknown policy {policy!r}{did_you_mean(head, POLICY_COMPONENTS)}"
                          f"; use e.g. 'randaug-m9-n2-mstd0.5', 'autoaug', 'trivialaugwide' or 'augmix-m3-w3'")
    return POLICY_COMPONENTS[head]


def recipe_train_steps(cfg: Mapping[str, Any]) -> List[Step]:
    """MindCV's ImageNet training pipeline as (name, args) steps."""
    channels = int(_get(cfg, "in_channels"))
    size, interpolation = _get(cfg, "image_resize"), _get(cfg, "interpolation")
    mean, std = _norm_values(cfg, channels)
    steps = _channel_steps(channels)
    steps.append(("random_resized_crop", {"size": size, "scale": list(_get(cfg, "scale")),
                                          "ratio": list(_get(cfg, "ratio")), "interpolation": interpolation}))
    for key in ("hflip", "vflip"):
        if float(_get(cfg, key)) > 0:
            steps.append((key, {"prob": float(_get(cfg, key))}))
    policy, jitter = cfg.get("auto_augment"), cfg.get("color_jitter")
    if policy:
        steps.append((policy_component(policy), {"policy": policy, "interpolation": interpolation, "mean": mean}))
    elif jitter is not None and jitter != 0:
        steps.append(("color_jitter", _jitter_args(jitter)))
    steps.append(("normalize", {"mean": mean, "std": std, "channels": channels}))
    if float(_get(cfg, "re_prob")) > 0:
        steps.append(("random_erasing", {"prob": float(_get(cfg, "re_prob")), "scale": list(_get(cfg, "re_scale")),
                                         "ratio": list(_get(cfg, "re_ratio")), "value": _get(cfg, "re_value"),
                                         "max_attempts": int(_get(cfg, "re_max_attempts"))}))
    return steps


def recipe_eval_steps(cfg: Mapping[str, Any]) -> List[Step]:
    """MindCV's evaluation pipeline: resize to image_resize/crop_pct, centre crop, normalise."""
    channels = int(_get(cfg, "in_channels"))
    mean, std = _norm_values(cfg, channels)
    return _channel_steps(channels) + [
        ("resize_center_crop", {"size": _get(cfg, "image_resize"), "crop_pct": float(_get(cfg, "crop_pct")),
                                "interpolation": _get(cfg, "interpolation")}),
        ("normalize", {"mean": mean, "std": std, "channels": channels}),
    ]


#: where added transforms go, in pipeline order: right after decoding (uint8 HWC), after the crops and
#: flips (uint8 HWC), after the colour ops just before normalisation (uint8 HWC), after normalisation
#: (float32 CHW)
PLACES = ("decoded", "geometric", "photometric", "tensor")
_GEOMETRIC = ("random_resized_crop", "hflip", "vflip", "resize_center_crop")


def _insertion_points(names: Sequence[str]) -> Dict[str, int]:
    """Index in the step list where each place's added transforms go."""
    decoded = sum(1 for n in names if n in CHANNEL_STEPS.values())
    geometric = max([i + 1 for i, n in enumerate(names) if n in _GEOMETRIC], default=decoded)
    photometric = names.index("normalize") if "normalize" in names else len(names)
    return {"decoded": decoded, "geometric": geometric, "photometric": photometric, "tensor": len(names)}


def build_transforms(cfg: Mapping[str, Any], *, is_training: bool, create: Optional[CreateFn] = None,
                     extra: Sequence[Tuple[str, Any]] = ()) -> List[Any]:
    """The per-sample transforms of MindCV's pipeline for the keys in ``cfg``, with ``extra``
    ``(place, transform)`` pairs inserted at their place (``PLACES``), in the order given."""
    stage = "train" if is_training else "eval"
    steps = recipe_train_steps(cfg) if is_training else recipe_eval_steps(cfg)
    ops = _make(steps, create or _own_create, f"recipe {stage} pipeline")
    points = _insertion_points([name for name, _ in steps])
    for place, _ in extra:
        if place not in PLACES:
            raise ConfigError(f"mindcv_pipeline: place {place!r} is not one of {', '.join(PLACES)}"
                              f"{did_you_mean(str(place), PLACES)}")
    out: List[Any] = []
    for index in range(len(ops) + 1):
        out += [op for place, op in extra if points[place] == index]
        if index < len(ops):
            out.append(ops[index])
    return out


def build_batch_transform(cfg: Mapping[str, Any], num_classes: int,
                          create: Optional[CreateFn] = None) -> Optional[Callable[..., Any]]:
    """Mixup/CutMix from ``mixup``/``cutmix``, or None when both are off."""
    if not (float(_get(cfg, "mixup")) > 0 or float(_get(cfg, "cutmix")) > 0):
        return None
    args = {"num_classes": num_classes, "mixup_alpha": float(_get(cfg, "mixup")),
            "cutmix_alpha": float(_get(cfg, "cutmix")), "prob": float(_get(cfg, "cutmix_prob")),
            "switch_prob": float(_get(cfg, "mixup_switch_prob"))}
    return _create(create or _own_create, "mixup_cutmix", args, "recipe mixup/cutmix")


STAGES = ("train", "eval", "batch")


def mindcv_pipeline(*, stage: str = "train", num_classes: Optional[int] = None,
                    extra: Sequence[Tuple[str, Any]] = (), **keys: Any) -> Any:
    """MindCV's pipeline of one stage from its recipe keys (``DEFAULTS`` lists them): 'train' and 'eval'
    give per-sample transforms (uint8 HWC in, float32 CHW out) with ``extra`` ``(place, transform)`` pairs
    inserted at their place (``PLACES``); 'batch' gives the Mixup/CutMix transform or None."""
    unknown = sorted(set(keys) - set(DEFAULTS))
    if unknown:
        from mindplug import ComponentArgumentError

        raise ComponentArgumentError(
            "mindcv_pipeline does not take " + ", ".join(f"'{k}'{did_you_mean(k, DEFAULTS)}" for k in unknown)
            + f"; its keys: {', '.join(DEFAULTS)}")
    if stage not in STAGES:
        raise ConfigError(f"mindcv_pipeline: stage {stage!r} is not one of {', '.join(STAGES)}"
                          f"{did_you_mean(str(stage), STAGES)}")
    if stage == "batch":
        if num_classes is None:
            raise ConfigError("mindcv_pipeline: the batch stage needs num_classes")
        return build_batch_transform(keys, num_classes)
    return build_transforms(keys, is_training=stage == "train", extra=extra)
