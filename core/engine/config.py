"""Recipe configuration: one schema of every key, YAML loading, command-line overrides, strict checks.

The key names and defaults are those of MindCV's ``config.py`` so the seed's recipes run unchanged; every
value is converted to its declared type, so ``--distribute False`` is False and ``--scale 0.08,1.0`` is a
pair of floats (both parse wrongly in the reference system).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from .._errors import ConfigError, did_you_mean

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}


@dataclass(frozen=True)
class Option:
    """One recipe key: its type name, default, allowed values and a one-line help."""

    type: str
    default: Any
    help: str
    choices: Tuple[Any, ...] = ()
    nullable: bool = False
    group: str = "system"


def _o(type_: str, default: Any, help_: str, group: str, *, choices: Sequence[Any] = (),
       nullable: bool = False) -> Option:
    return Option(type_, default, help_, tuple(choices), nullable or default is None, group)


_IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
_IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]

#: Every key a recipe or the command line may set, with MindCV's defaults (marked where ours differ).
SCHEMA: Dict[str, Option] = {
    # system
    "mode": _o("int", 0, "0 = GRAPH mode (compiled), 1 = PYNATIVE mode; 'graph'/'pynative' also accepted",
               "system", choices=(0, 1)),
    "distribute": _o("bool", False, "data-parallel training; needs a launch by msrun", "system"),
    "device_target": _o("str", "auto", "CPU, GPU, Ascend or auto (the best available; ours, MindCV: Ascend)",
                        "system", choices=("auto", "CPU", "GPU", "Ascend")),
    "val_while_train": _o("bool", False, "validate during training and keep the best checkpoint", "system"),
    "val_interval": _o("int", 1, "validate every this many epochs", "system"),
    "log_interval": _o("int", 100, "log a line every this many steps when not on a terminal", "system"),
    "seed": _o("int", 42, "seed of every random choice: weights, data order, augmentation, dropout", "system"),
    "plugins": _o("mapping", None, "plugin selection: {allow: [...], block: [...], prefer: {name: plugin}}",
                  "system"),
    # dataset
    "dataset": _o("component", "imagenet", "dataset by registry name, or {type: name, ...arguments}", "dataset"),
    "data_dir": _o("str", "./", "dataset root (ImageFolder layout: data_dir/<split>/<class>/*)", "dataset",
                   nullable=True),
    "train_split": _o("str", "train", "training split name", "dataset"),
    "val_split": _o("str", "val", "validation split name", "dataset"),
    "dataset_download": _o("bool", False, "accepted for recipe compatibility; mindplug never downloads",
                           "dataset"),
    "num_parallel_workers": _o("int", 8, "data pipeline workers (capped to the CPU count)", "dataset"),
    "shuffle": _o("bool", True, "shuffle the training data (order is a function of seed and epoch)",
                  "dataset"),
    "num_samples": _o("int", None, "use only this many samples of each split", "dataset"),
    "batch_size": _o("int", 128, "batch size per device", "dataset"),
    "drop_remainder": _o("bool", True, "drop the last incomplete training batch", "dataset"),
    "aug_repeats": _o("int", 0, "repeated augmentation count (0 or 1: off)", "dataset"),
    "eval_shuffle": _o("bool", False, "shuffle the evaluation data", "dataset"),
    # augmentation
    "image_resize": _o("int", 224, "training crop size and evaluation input size", "augmentation"),
    "scale": _o("floats2", (0.08, 1.0), "random resized crop area range", "augmentation"),
    "ratio": _o("floats2", (0.75, 1.333), "random resized crop aspect ratio range", "augmentation"),
    "hflip": _o("float", 0.5, "horizontal flip probability", "augmentation"),
    "vflip": _o("float", 0.0, "vertical flip probability", "augmentation"),
    "color_jitter": _o("floats_or_float", 0.4, "colour jitter strength (one value or 3-4 values)",
                       "augmentation", nullable=True),
    "interpolation": _o("str", "bilinear", "resize interpolation", "augmentation",
                        choices=("bilinear", "nearest", "bicubic", "area", "lanczos")),
    "auto_augment": _o("str", None, "policy string: randaug-m9-n2-mstd0.5, autoaug, trivialaugwide, augmix-...",
                       "augmentation"),
    "aug_splits": _o("int", 0, "augmentation splits (AugMix)", "augmentation"),
    "re_prob": _o("float", 0.0, "random erasing probability", "augmentation"),
    "re_scale": _o("floats2", (0.02, 0.33), "random erasing area range", "augmentation"),
    "re_ratio": _o("floats2", (0.3, 3.3), "random erasing aspect ratio range", "augmentation"),
    "re_value": _o("scalar", 0, "random erasing fill: a number or 'random'", "augmentation"),
    "re_max_attempts": _o("int", 10, "random erasing attempts", "augmentation"),
    "mean": _o("floats", _IMAGENET_MEAN, "per-channel mean on the 0..255 scale", "augmentation"),
    "std": _o("floats", _IMAGENET_STD, "per-channel std on the 0..255 scale", "augmentation"),
    "crop_pct": _o("float", 0.875, "evaluation centre-crop fraction", "augmentation"),
    "mixup": _o("float", 0.0, "mixup beta parameter (0: off)", "augmentation"),
    "cutmix": _o("float", 0.0, "cutmix beta parameter (0: off)", "augmentation"),
    "cutmix_prob": _o("float", 1.0, "probability of applying mixup/cutmix to a batch", "augmentation"),
    "mixup_switch_prob": _o("float", 0.5, "probability of cutmix instead of mixup when both are on",
                            "augmentation"),
    "transforms": _o("mapping", None, "explicit pipelines: {train: [{type: name, ...}, ...], eval: [...], "
                     "batch: {type: mixup_cutmix, ...}}", "augmentation"),
    "augmentations": _o("list", None, "explicit training pipeline: [{type: name, ...arguments}, ...]",
                        "augmentation"),
    "eval_augmentations": _o("list", None, "explicit evaluation pipeline: [{type: name, ...}, ...]",
                             "augmentation"),
    # model
    "model": _o("component", "googlenet", "model by registry name or {type: name, ...arguments} "
                "(MindCV's default is a model mindplug does not ship)", "model"),
    "num_classes": _o("int", None, "classes; default: the dataset's", "model"),
    "in_channels": _o("int", 3, "input channels", "model"),
    "drop_rate": _o("float", None, "classifier dropout rate (model default when unset)", "model"),
    "drop_path_rate": _o("float", None, "stochastic depth rate (models that have it)", "model"),
    "pretrained": _o("bool", False, "load the model's registered weights from the local cache", "model"),
    "ckpt_path": _o("str", "", "checkpoint to start from (training) or to evaluate (validate)", "model"),
    "resume_opt": _o("bool", False, "with ckpt_path: also restore optimizer and schedule (= resume)", "model"),
    "resume": _o("resume", "", "continue a run: True = latest state in ckpt_save_dir, or a checkpoint path",
                 "model"),
    "keep_checkpoint_max": _o("int", 10, "checkpoints to keep", "model"),
    "ckpt_save_dir": _o("str", "./ckpt", "where checkpoints, logs and the resolved config go", "model"),
    "ckpt_save_interval": _o("int", 1, "save every this many epochs", "model"),
    "ckpt_save_policy": _o("str", "latest_k", "latest_k keeps the newest, top_k the most accurate", "model",
                           choices=("latest_k", "top_k")),
    "epoch_size": _o("int", 90, "training epochs", "model"),
    "dataset_sink_mode": _o("bool", True, "sink data to the device (Ascend/GPU; a no-op on CPU)", "model"),
    "ema": _o("bool", False, "keep an exponential moving average of the weights", "model"),
    "ema_decay": _o("float", 0.9999, "EMA decay", "model"),
    "clip_grad": _o("bool", False, "clip gradients by global norm", "model"),
    "clip_value": _o("float", 15.0, "global-norm clip value", "model"),
    "gradient_accumulation_steps": _o("int", 1, "accumulate this many batches per update", "model"),
    # optimizer
    "opt": _o("component", "adam", "optimizer by registry name or {type: name, ...}", "optimizer"),
    "momentum": _o("float", 0.9, "momentum", "optimizer"),
    "weight_decay": _o("float", 1e-6, "weight decay", "optimizer"),
    "use_nesterov": _o("bool", False, "Nesterov momentum", "optimizer"),
    "weight_decay_filter": _o("str", "disable", "parameters exempt from weight decay", "optimizer",
                              choices=("disable", "auto", "norm_and_bias")),
    "eps": _o("float", 1e-10, "optimizer epsilon", "optimizer"),
    "filter_bias_and_bn": _o("bool", None, "legacy MindCV key: True = weight_decay_filter norm_and_bias",
                             "optimizer"),
    # scheduler
    "scheduler": _o("component", "cosine_decay", "learning-rate schedule by registry name or {type: name, ...}",
                    "scheduler"),
    "lr": _o("float", 0.001, "base learning rate", "scheduler"),
    "min_lr": _o("float", 1e-6, "minimum learning rate", "scheduler"),
    "warmup_epochs": _o("int", 3, "linear warmup epochs", "scheduler"),
    "warmup_factor": _o("float", 0.0, "warmup start factor", "scheduler"),
    "decay_epochs": _o("int", 100, "decay epochs", "scheduler"),
    "decay_rate": _o("float", 0.9, "decay rate", "scheduler"),
    "multi_step_decay_milestones": _o("ints", [30, 60, 90], "milestone epochs of multi_step_decay", "scheduler"),
    "lr_epoch_stair": _o("bool", False, "change the rate once per epoch", "scheduler"),
    "num_cycles": _o("int", 1, "cosine cycles", "scheduler"),
    "cycle_decay": _o("float", 1.0, "peak decay per cycle", "scheduler"),
    # loss
    "loss": _o("component", "CE", "loss by registry name or {type: name, ...}", "loss"),
    "label_smoothing": _o("float", 0.0, "label smoothing", "loss"),
    "smooth_factor": _o("float", None, "legacy MindCV key for label_smoothing", "loss"),
    "aux_factor": _o("float", 0.0, "weight of auxiliary logits", "loss"),
    "reduction": _o("str", "mean", "loss reduction", "loss", choices=("mean", "sum", "none")),
    # precision
    "amp_level": _o("str", "O0", "mixed precision level", "amp", choices=("O0", "O1", "O2", "O3", "auto")),
    "val_amp_level": _o("str", "O0", "mixed precision level in validation", "amp",
                        choices=("O0", "O1", "O2", "O3", "auto")),
    "amp_cast_list": _o("strs", None, "mindspore.nn cell class names cast by O1 (white) / O2 (black)", "amp"),
    "loss_scale_type": _o("str", "fixed", "fixed, dynamic or auto (= dynamic when amp_level is not O0)", "amp",
                          choices=("fixed", "dynamic", "auto")),
    "loss_scale": _o("float", 1.0, "loss scale (fixed) or initial scale (dynamic)", "amp"),
    "dynamic_loss_scale": _o("bool", None, "legacy MindCV key: True = loss_scale_type dynamic", "amp"),
    "drop_overflow_update": _o("bool", False, "skip the update of a step whose gradients overflow", "amp"),
    # engine
    "progress": _o("str", "auto", "progress bar: auto (on a terminal), bar, log, none", "engine",
                   choices=("auto", "bar", "log", "none")),
}

#: Keys given as a registry name or a {type: ...} mapping, and the component kind of each.
COMPONENT_KINDS = {"model": "model", "opt": "optimizer", "scheduler": "scheduler", "loss": "loss",
                   "dataset": "dataset"}

_SHORT_FLAGS = {"-c": "config"}


class Config(dict):
    """The resolved recipe: a dict with attribute access, so both ``cfg["lr"]`` and ``cfg.lr`` work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'{did_you_mean(name, self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def component(self, key: str) -> Tuple[str, Dict[str, Any]]:
        """(registry name, explicit arguments) of a component key."""
        value = self[key]
        if isinstance(value, Mapping):
            return str(value["type"]), {k: v for k, v in value.items() if k != "type"}
        return str(value), {}

    def to_plain(self) -> Dict[str, Any]:
        """A YAML-safe copy (tuples become lists)."""
        return {k: _plain(v) for k, v in self.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- type conversion

def _split(text: str) -> List[str]:
    text = text.strip()
    if text[:1] in "[(" and text[-1:] in "])":
        text = text[1:-1]
    return [part.strip() for part in text.split(",") if part.strip()]


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected a boolean: True or False")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = float(text)
            if number.is_integer():
                return int(number)
    raise ValueError("expected an integer")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError("expected a number")


def _sequence(value: Any) -> List[Any]:
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise ValueError("expected a list, e.g. 0.5,1.0")


def _to_floats(value: Any) -> List[float]:
    return [_to_float(v) for v in _sequence(value)]


def _to_floats2(value: Any) -> Tuple[float, float]:
    items = _to_floats(value)
    if len(items) != 2:
        raise ValueError(f"expected a pair of numbers like 0.08,1.0, got {len(items)} value(s)")
    return (items[0], items[1])


def _to_floats_or_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    items = _to_floats(value)
    if len(items) == 1:
        return items[0]
    if len(items) not in (3, 4):
        raise ValueError("expected one number or 3-4 numbers (brightness, contrast, saturation[, hue])")
    return items


def _to_ints(value: Any) -> List[int]:
    return [_to_int(v) for v in _sequence(value)]


def _to_strs(value: Any) -> List[str]:
    return [str(v).strip() for v in _sequence(value)]


def _to_str(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        raise ValueError("expected a string")
    return str(value)


def _to_scalar(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return _to_int(value)
        except ValueError:
            try:
                return _to_float(value)
            except ValueError:
                return value.strip()
    if isinstance(value, (int, float, str)):
        return value
    raise ValueError("expected a number or a word")


def _yaml_value(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "{[":
            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"not valid YAML: {exc}") from None
    return value


def _to_component(value: Any) -> Any:
    value = _yaml_value(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping):
        if "type" not in value:
            raise ValueError("a component mapping needs a 'type' key naming the registered component")
        return {str(k): v for k, v in value.items()}
    raise ValueError("expected a registry name or a mapping {type: name, ...arguments}")


def _to_mapping(value: Any) -> Dict[str, Any]:
    value = _yaml_value(value)
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    raise ValueError("expected a mapping")


def _to_list(value: Any) -> List[Any]:
    value = _yaml_value(value)
    if isinstance(value, list):
        return [_to_component(v) for v in value]
    raise ValueError("expected a list of {type: name, ...} entries")


def _to_resume(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, str):
        return value.strip()
    raise ValueError("expected True/False or a checkpoint path")


_CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    "bool": _to_bool, "int": _to_int, "float": _to_float, "str": _to_str, "floats": _to_floats,
    "floats2": _to_floats2, "floats_or_float": _to_floats_or_float, "ints": _to_ints, "strs": _to_strs,
    "scalar": _to_scalar, "component": _to_component, "mapping": _to_mapping, "list": _to_list,
    "resume": _to_resume,
}

_MODE_WORDS = {"graph": 0, "graph_mode": 0, "pynative": 1, "pynative_mode": 1}


def convert(key: str, value: Any, source: str = "") -> Any:
    """``value`` converted to the type of ``key``; a ConfigError names the key, the value and the source."""
    option = _option(key, source)
    if isinstance(value, str) and option.nullable and value.strip().lower() in _NONE:
        return None
    if value is None:
        if option.nullable:
            return None
        raise ConfigError(f"{_where(source)}'{key}' cannot be empty; {_expect(option)}")
    if key == "mode" and isinstance(value, str) and value.strip().lower() in _MODE_WORDS:
        value = _MODE_WORDS[value.strip().lower()]
    try:
        result = _CONVERTERS[option.type](value)
    except ValueError as exc:
        raise ConfigError(f"{_where(source)}'{key}' = {value!r}: {exc}; {_expect(option)}") from None
    if option.choices and result not in option.choices:
        hint = did_you_mean(str(result), [str(c) for c in option.choices])
        raise ConfigError(f"{_where(source)}'{key}' = {result!r} is not one of "
                          f"{', '.join(map(repr, option.choices))}{hint}")
    return result


def _expect(option: Option) -> str:
    return f"expected {option.type} ({option.help})"


def _where(source: str) -> str:
    return f"{source}: " if source else ""


def _option(key: str, source: str = "") -> Option:
    option = SCHEMA.get(key)
    if option is None:
        raise ConfigError(f"{_where(source)}unknown config key '{key}'{did_you_mean(key, SCHEMA)}; "
                          f"`mindplug train --help` lists every key")
    return option


# ---------------------------------------------------------------- loading

def defaults() -> Config:
    """Every key at its default."""
    return Config({k: _plain_default(o.default) for k, o in SCHEMA.items()})


def _plain_default(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def read_yaml(path: str) -> Dict[str, Any]:
    """A recipe file's mapping; missing files and bad YAML are ConfigErrors naming the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML recipe with -c/--config "
                          f"(recipes ship in configs/)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, got {type(data).__name__}")
    return dict(data)


def parse_overrides(argv: Sequence[str], *, extra_flags: Iterable[str] = ()) -> Tuple[Optional[str],
                                                                                          List[Tuple[str, Any]],
                                                                                          Dict[str, Any]]:
    """Split ``argv`` into (config path, [(key, raw value)], {extra flag: value}).

    Accepts ``--key value``, ``--key=value``, a bare ``--flag`` for booleans, and ``--model.aux_logits true``
    for an argument of a component key. ``extra_flags`` are command options that are not recipe keys.
    """
    extras = set(extra_flags)
    config_path: Optional[str] = None
    pairs: List[Tuple[str, Any]] = []
    extra: Dict[str, Any] = {}
    i = 0
    args = list(argv)
    while i < len(args):
        token = args[i]
        if token in _SHORT_FLAGS:
            name, value, has_value = _SHORT_FLAGS[token], None, False
        elif token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            has_value = bool(eq)
            norm = name.replace("-", "_")
            name = norm if norm.partition(".")[0] in SCHEMA or norm in extras else name
        else:
            raise ConfigError(f"unexpected argument '{token}': options are written --key value "
                              f"(e.g. --data_dir /path/to/data)")
        if not has_value:
            nxt = args[i + 1] if i + 1 < len(args) else None
            takes_bare = _bare_flag(name) or name in extras
            if nxt is not None and not (nxt.startswith("--") and len(nxt) > 2) and nxt not in _SHORT_FLAGS:
                value, i = nxt, i + 1
            elif takes_bare:
                value = True
            else:
                raise ConfigError(f"option --{name} needs a value")
        i += 1
        if name == "config":
            config_path = str(value)
        elif name in extras:
            extra[name] = value
        else:
            pairs.append((name, value))
    return config_path, pairs, extra


def _bare_flag(name: str) -> bool:
    option = SCHEMA.get(name)
    return option is not None and option.type in ("bool", "resume")


def apply(cfg: Config, key: str, value: Any, source: str) -> None:
    """Set one key (or a ``component.argument``) on ``cfg``, converted and checked."""
    base, dot, arg = key.partition(".")
    if dot:
        option = _option(base, source)
        if option.type != "component":
            raise ConfigError(f"{_where(source)}'{key}': only component keys "
                              f"({', '.join(COMPONENT_KINDS)}) take .argument overrides")
        current = cfg[base]
        mapping = dict(current) if isinstance(current, Mapping) else {"type": current}
        mapping[arg] = yaml.safe_load(value) if isinstance(value, str) else value
        cfg[base] = mapping
        return
    cfg[key] = convert(key, value, source)


def load_config(path: Optional[str] = None, overrides: Sequence[Tuple[str, Any]] = (),
                data: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults, then the YAML file (or ``data``), then overrides: strict, converted, checked."""
    cfg = defaults()
    given: set = set()
    if path:
        for key, value in read_yaml(path).items():
            apply(cfg, str(key), value, path)
            given.add(str(key).partition(".")[0])
        cfg["config"] = path
    for key, value in (data or {}).items():
        apply(cfg, str(key), value, "config")
        given.add(str(key).partition(".")[0])
    for key, value in overrides:
        apply(cfg, key, value, "command line")
        given.add(key.partition(".")[0])
    _legacy(cfg, given)
    _check(cfg)
    cfg.setdefault("config", path or "")
    return cfg


def _legacy(cfg: Config, given: set) -> None:
    """Older MindCV keys mapped onto their current names (the current name wins when both are given)."""
    if cfg.get("smooth_factor") is not None and "label_smoothing" not in given:
        cfg["label_smoothing"] = cfg["smooth_factor"]
    if cfg.get("filter_bias_and_bn") is not None and "weight_decay_filter" not in given:
        cfg["weight_decay_filter"] = "norm_and_bias" if cfg["filter_bias_and_bn"] else "disable"
    if cfg.get("dynamic_loss_scale") and "loss_scale_type" not in given:
        cfg["loss_scale_type"] = "dynamic"


def _check(cfg: Config) -> None:
    """Relations between keys, reported before any work starts."""
    positive = ("batch_size", "epoch_size", "val_interval", "ckpt_save_interval", "gradient_accumulation_steps",
                "keep_checkpoint_max", "image_resize", "in_channels", "log_interval")
    for key in positive:
        if cfg[key] is not None and cfg[key] < 1:
            raise ConfigError(f"'{key}' = {cfg[key]} must be at least 1")
    if cfg["num_classes"] is not None and cfg["num_classes"] < 1:
        raise ConfigError(f"'num_classes' = {cfg['num_classes']} must be at least 1")
    for key in ("hflip", "vflip", "re_prob", "cutmix_prob"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise ConfigError(f"'{key}' = {cfg[key]} is a probability: 0..1")
    for key in ("label_smoothing",):
        if not 0.0 <= cfg[key] < 1.0:
            raise ConfigError(f"'{key}' = {cfg[key]} must be in [0, 1)")
    if not 0.0 < cfg["ema_decay"] < 1.0:
        raise ConfigError(f"'ema_decay' = {cfg['ema_decay']} must be in (0, 1)")
    if cfg["loss_scale"] <= 0:
        raise ConfigError(f"'loss_scale' = {cfg['loss_scale']} must be positive")
    if len(cfg["mean"]) != len(cfg["std"]):
        raise ConfigError(f"'mean' has {len(cfg['mean'])} values but 'std' has {len(cfg['std'])}; give one per "
                          f"channel")
    plugins = cfg.get("plugins")
    if plugins:
        unknown = set(plugins) - {"allow", "block", "prefer"}
        if unknown:
            name = sorted(unknown)[0]
            hint = did_you_mean(name, ["allow", "block", "prefer"])
            raise ConfigError(f"'plugins.{name}' is not a plugin setting{hint}; use allow, block or prefer")
        if plugins.get("prefer") is not None and not isinstance(plugins["prefer"], Mapping):
            raise ConfigError("'plugins.prefer' must map component names to plugin names, e.g. {googlenet: mine}")


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config (atomically) so a run can be repeated or a checkpoint interpreted."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        yaml.safe_dump({k: v for k, v in cfg.to_plain().items() if k != "config"}, handle, sort_keys=False)
    os.replace(tmp, path)


def help_text() -> str:
    """Every key, its type, default and meaning, grouped as in the schema."""
    lines: List[str] = []
    group = None
    for key, option in SCHEMA.items():
        if option.group != group:
            group = option.group
            lines.append(f"\n{group}:")
        default = option.default
        lines.append(f"  --{key} ({option.type}, default {default!r}): {option.help}")
    return "\n".join(lines)


def warn_legacy(cfg: Config) -> None:
    """One warning per legacy key a recipe used."""
    for key, new in (("smooth_factor", "label_smoothing"), ("filter_bias_and_bn", "weight_decay_filter"),
                     ("dynamic_loss_scale", "loss_scale_type")):
        if cfg.get(key) is not None:
            warnings.warn(f"config key '{key}' is MindCV's older name; use '{new}'", DeprecationWarning,
                          stacklevel=2)
