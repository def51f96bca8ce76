"""A recipe: YAML and command-line values, converted to the type of their key, checked, translated into
typed sections. This is the one place a recipe key is read by name.

``load_recipe`` gives a ``Recipe``: the user's resolved keys (defaults, then the file, then overrides; what
``config.yaml`` of a run holds) and ``recipe.sections``, the typed per-component sections the engine builds
from. MindCV's older key names are translated here with a notice, and keys mindplug takes no action on are
reported, never dropped silently.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import os
import types
from dataclasses import dataclass
from typing import (Annotated, Any, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple,
                    Union, get_args, get_origin)

import yaml

from .._atomic import atomic_write_text
from .._errors import ConfigError, did_you_mean
from .keys import (COMPONENT_KEYS, LEGACY_KEYS, SECTIONS, ComponentMarker, DataSection, Key, LossSection,
                   ModelSection, ModeMarker, OptimizerSection, ResumeMarker, RuntimeSection, ScalarMarker,
                   SchedulerSection, TrainSection, TransformsSection, all_keys)

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}
_MODE_WORDS = {"graph": 0, "graph_mode": 0, "pynative": 1, "pynative_mode": 1}


# ---------------------------------------------------------------- conversion by type

def _split(text: str) -> List[str]:
    text = text.strip()
    if text[:1] in "[(" and text[-1:] in "])":
        text = text[1:-1]
    return [part.strip() for part in text.split(",") if part.strip()]


def _yaml_text(value: Any) -> Any:
    """A command-line ``{...}`` or ``[...]`` is YAML."""
    if isinstance(value, str) and value.strip()[:1] in "{[":
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML: {exc}") from None
    return value


def _items(value: Any) -> List[Any]:
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise ValueError("expected a list, e.g. 0.5,1.0")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected a boolean: True or False")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                number = 0.5
            if number.is_integer():
                return int(number)
    raise ValueError("expected an integer")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError("expected a number")


def _str(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        raise ValueError("expected a string")
    return str(value)


def _component(value: Any) -> Any:
    value = _yaml_text(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping):
        if not value.get("type"):
            raise ValueError("a component mapping needs a 'type' key naming the registered component")
        return {str(k): v for k, v in value.items()}
    raise ValueError("expected a registry name or a mapping {type: name, ...arguments}")


def _resume(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, str):
        return value.strip()
    raise ValueError("expected True/False or a checkpoint path")


def _mode(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() in _MODE_WORDS:
        return _MODE_WORDS[value.strip().lower()]
    mode = _int(value)
    if mode not in (0, 1):
        raise ValueError("expected 0 (GRAPH) or 1 (PYNATIVE)")
    return mode


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        for number in (_int, _float):
            try:
                return number(value)
            except ValueError:
                pass
        return value.strip()
    if isinstance(value, (int, float, str)):
        return value
    raise ValueError("expected a number or a word")


_SIMPLE = {bool: _bool, int: _int, float: _float, str: _str}
_MARKED = {ComponentMarker: _component, ResumeMarker: _resume, ModeMarker: _mode, ScalarMarker: _scalar}
_MARKER_NAMES = {ComponentMarker: "component", ResumeMarker: "resume", ModeMarker: "mode", ScalarMarker: "scalar"}


def coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to the type annotation ``tp``; ValueError says what was expected."""
    if tp in _SIMPLE:
        return _SIMPLE[tp](value)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _MARKED[args[1]](value)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args:
            return value
        text = _str(value)
        folded = {str(a).casefold(): a for a in args}
        return folded.get(text.strip().casefold(), text)  # MindCV recipes write BICUBIC too
    if origin is tuple:
        items = [coerce(v, args[0]) for v in _items(_yaml_text(value))]
        if len(items) != len(args):
            raise ValueError(f"expected a pair of numbers like 0.08,1.0, got {len(items)} value(s)")
        return tuple(items)
    if origin is list:
        return [coerce(v, args[0]) for v in _items(_yaml_text(value))]
    if origin in (collections.abc.Mapping, dict) or tp is Mapping:
        value = _yaml_text(value)
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        raise ValueError("expected a mapping")
    raise TypeError(f"no conversion for the annotation {tp!r}")  # a schema bug, not user input


def type_name(tp: Any) -> str:
    """A short name of a key's type for help and errors."""
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    if tp in names:
        return names[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _MARKER_NAMES[args[1]]
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin is Literal:
        return "choice"
    if origin is tuple:
        return "floats2"
    if origin is list:
        return type_name(args[0]) + "s"
    return "mapping"


def convert(key: Key, value: Any, source: str = "") -> Any:
    """One key's value converted and checked against its choices; errors name key, value and source."""
    where = f"{source}: " if source else ""
    nullable = get_origin(key.type) in (Union, types.UnionType) and type(None) in get_args(key.type)
    if value is None and not nullable:
        raise ConfigError(f"{where}'{key.name}' cannot be empty; expected {type_name(key.type)} ({key.help})")
    try:
        result = coerce(value, key.type)
    except ValueError as exc:
        raise ConfigError(f"{where}'{key.name}' = {value!r}: {exc} ({key.help})") from None
    choices = _choices(key.type)
    if choices and result is not None and result not in choices:
        raise ConfigError(f"{where}'{key.name}' = {result!r} is not one of {', '.join(map(repr, choices))}"
                          f"{did_you_mean(str(result), [str(c) for c in choices])}")
    return result


def _choices(tp: Any) -> Tuple[Any, ...]:
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return next((_choices(a) for a in get_args(tp) if get_origin(a) is Literal), ())
    return ()


def choices_of(key: Key) -> Tuple[Any, ...]:
    return _choices(key.type)


# ---------------------------------------------------------------- the recipe

@dataclass(frozen=True)
class Sections:
    """The recipe as typed per-component sections: what the engine builds from."""

    runtime: RuntimeSection
    data: DataSection
    transforms: TransformsSection
    model: ModelSection
    optimizer: OptimizerSection
    scheduler: SchedulerSection
    loss: LossSection
    train: TrainSection


class Recipe(Mapping[str, Any]):
    """The resolved keys of a run (read-only mapping) with the sections built from them.

    ``given`` holds the keys the file or the command line set (the others are defaults); ``notices`` the
    translations and no-effect keys to report once.
    """

    def __init__(self, values: Dict[str, Any], given: Iterable[str], path: str = "",
                 notices: Sequence[str] = ()) -> None:
        self._values = dict(values)
        self.given = frozenset(given)
        self.path = path
        self.notices = tuple(notices)
        fields = {name: {f.name: self._values[f.name] for f in dataclasses.fields(cls)}
                  for name, cls in SECTIONS.items()}
        self.sections = Sections(**{name: SECTIONS[name](**fields[name]) for name in SECTIONS})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def component(self, key: str) -> Tuple[str, Dict[str, Any]]:
        """(registry name, explicit arguments) of a component key; an unset one is its kind's default."""
        return component_choice(self._values[key], COMPONENT_KEYS[key])

    def replace(self, **values: Any) -> "Recipe":
        """A copy with some keys set (already typed), e.g. the component names a run resolved."""
        return Recipe({**self._values, **values}, self.given | set(values), self.path, self.notices)

    def to_plain(self) -> Dict[str, Any]:
        """A YAML-safe copy (tuples become lists)."""
        return {k: _plain(v) for k, v in self._values.items()}


def component_choice(value: Any, kind: str) -> Tuple[str, Dict[str, Any]]:
    """(name, arguments) of a component value; no name means the default a plugin declares for ``kind``."""
    if isinstance(value, Mapping):
        name, args = value.get("type"), {k: v for k, v in value.items() if k != "type"}
    else:
        name, args = value, {}
    if not name:
        from .._registry import default_registry

        name = default_registry().default(kind).spec.name
    return str(name), args


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


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


def unknown_key(name: str, source: str = "") -> ConfigError:
    where = f"{source}: " if source else ""
    known = list(all_keys()) + list(LEGACY_KEYS)
    return ConfigError(f"{where}unknown config key '{name}'{did_you_mean(name, known)}; "
                       f"`mindplug train --help` lists every key")


class _Loader:
    """Applies sources in order onto the defaults, remembering what was given and what to report."""

    def __init__(self) -> None:
        self.keys = all_keys()
        self.values: Dict[str, Any] = {k.name: k.default for k in self.keys.values()}
        self.given: List[str] = []
        self.legacy: Dict[str, Tuple[Any, str]] = {}

    def set(self, name: str, value: Any, source: str) -> None:
        base, dot, arg = name.partition(".")
        if base in LEGACY_KEYS and not dot:
            key = self.keys[LEGACY_KEYS[base][0]]
            self.legacy[base] = (convert(_legacy_key(base, key), value, source), source)
            return
        if base not in self.keys:
            raise unknown_key(base, source)
        if dot:
            self._set_argument(base, arg, value, source)
        else:
            self.values[base] = convert(self.keys[base], value, source)
        self.given.append(base)

    def _set_argument(self, base: str, arg: str, value: Any, source: str) -> None:
        if base not in COMPONENT_KEYS:
            raise ConfigError(f"{source}: '{base}.{arg}': only component keys ({', '.join(COMPONENT_KEYS)}) take "
                              f".argument overrides")
        current = self.values[base]
        mapping = dict(current) if isinstance(current, Mapping) else {"type": current}
        mapping[arg] = yaml.safe_load(value) if isinstance(value, str) else value
        self.values[base] = mapping

    def translate_legacy(self) -> List[str]:
        """Older MindCV names onto current ones (the current name wins when both are given)."""
        notices = []
        for old, (value, _source) in self.legacy.items():
            new, translate = LEGACY_KEYS[old]
            if value is None:
                continue
            if new in self.given:
                notices.append(f"'{old}' is MindCV's older name of '{new}', which the recipe also sets: "
                               f"'{new}' is used")
                continue
            self.values[new] = convert(self.keys[new], translate(value))
            notices.append(f"'{old}' is MindCV's older name: read as {new} = {self.values[new]!r}")
        return notices

    def no_effect(self) -> List[str]:
        """Keys the recipe sets that mindplug takes no action on."""
        return [f"'{k.name}' = {self.values[k.name]!r} has no effect ({k.effect})" for k in self.keys.values()
                if k.effect and k.name in self.given and self.values[k.name] != k.default]


def _legacy_key(name: str, current: Key) -> Key:
    tp = bool if name in ("filter_bias_and_bn", "dynamic_loss_scale") else current.type
    return Key(name, current.section, Optional[tp], None, f"MindCV's older name of '{current.name}'", False, "")


def load_recipe(path: Optional[str] = None, overrides: Sequence[Tuple[str, Any]] = (),
                data: Optional[Mapping[str, Any]] = None) -> Recipe:
    """Defaults, then the YAML file (or ``data``), then overrides: strict, converted, checked."""
    loader = _Loader()
    if path:
        for name, value in read_yaml(path).items():
            loader.set(str(name), value, path)
    for name, value in (data or {}).items():
        loader.set(str(name), value, "config")
    for name, value in overrides:
        loader.set(name, value, "command line")
    notices = loader.translate_legacy() + loader.no_effect()
    _check(loader.values)
    return Recipe(loader.values, loader.given, path or "", notices)


def _check(values: Dict[str, Any]) -> None:
    """Relations between keys, reported before any work starts."""
    positive = ("batch_size", "epoch_size", "val_interval", "ckpt_save_interval", "gradient_accumulation_steps",
                "keep_checkpoint_max", "image_resize", "in_channels", "log_interval", "num_parallel_workers")
    for name in positive:
        if values[name] < 1:
            raise ConfigError(f"'{name}' = {values[name]} must be at least 1")
    if values["num_classes"] is not None and values["num_classes"] < 1:
        raise ConfigError(f"'num_classes' = {values['num_classes']} must be at least 1")
    for name in ("hflip", "vflip", "re_prob", "cutmix_prob", "mixup_switch_prob"):
        if not 0.0 <= values[name] <= 1.0:
            raise ConfigError(f"'{name}' = {values[name]} is a probability: 0..1")
    if not 0.0 <= values["label_smoothing"] < 1.0:
        raise ConfigError(f"'label_smoothing' = {values['label_smoothing']} must be in [0, 1)")
    if not 0.0 < values["ema_decay"] < 1.0:
        raise ConfigError(f"'ema_decay' = {values['ema_decay']} must be in (0, 1)")
    if values["loss_scale"] <= 0:
        raise ConfigError(f"'loss_scale' = {values['loss_scale']} must be positive")
    if len(values["mean"]) != len(values["std"]):
        raise ConfigError(f"'mean' has {len(values['mean'])} values but 'std' has {len(values['std'])}; give one "
                          f"per channel")
    _check_progressive(values["progressive_sizes"], values["progressive_epochs"], values["epoch_size"])
    jitter = values["color_jitter"]
    if isinstance(jitter, list):
        if len(jitter) == 1:
            values["color_jitter"] = jitter[0]
        elif len(jitter) not in (3, 4):
            raise ConfigError(f"'color_jitter' = {jitter!r}: expected one number or 3-4 numbers (brightness, "
                              f"contrast, saturation[, hue])")
    plugins = values["plugins"]
    if plugins:
        unknown = sorted(set(plugins) - {"allow", "block", "prefer"})
        if unknown:
            raise ConfigError(f"'plugins.{unknown[0]}' is not a plugin setting"
                              f"{did_you_mean(unknown[0], ['allow', 'block', 'prefer'])}; use allow, block or prefer")
        if plugins.get("prefer") is not None and not isinstance(plugins["prefer"], Mapping):
            raise ConfigError("'plugins.prefer' must map component names to plugin names, e.g. {googlenet: mine}")


def _check_progressive(sizes: List[int], epochs: List[int], epoch_size: int) -> None:
    if len(sizes) != len(epochs):
        raise ConfigError(f"'progressive_sizes' has {len(sizes)} value(s) but 'progressive_epochs' has {len(epochs)}; "
                          f"give the epoch at which each size begins, e.g. progressive_sizes: [32, 48] with "
                          f"progressive_epochs: [1, 15]")
    if not sizes:
        return
    if any(size < 1 for size in sizes):
        raise ConfigError(f"'progressive_sizes' = {sizes}: image sizes must be at least 1 px")
    if epochs[0] != 1:
        raise ConfigError(f"'progressive_epochs' = {epochs}: the first size must begin at epoch 1")
    if any(later <= earlier for earlier, later in zip(epochs, epochs[1:])):
        raise ConfigError(f"'progressive_epochs' = {epochs}: each size must begin after the one before it")
    if epochs[-1] > epoch_size:
        raise ConfigError(f"'progressive_epochs' = {epochs}: epoch {epochs[-1]} is after the last epoch "
                          f"('epoch_size' = {epoch_size})")


def save_recipe(recipe: Recipe, path: str) -> None:
    """Write the resolved keys (atomically) so a run can be repeated or a checkpoint interpreted."""
    atomic_write_text(path, yaml.safe_dump(recipe.to_plain(), sort_keys=False), point="config")
