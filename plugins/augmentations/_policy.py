"""Parse the usual automatic-augmentation policy strings into typed configs.

The grammar is timm's (``rand-m9-n2-mstd0.5``) and MindCV's (``randaug-...``): dash-separated tokens,
the first naming the family, the rest ``<key><number>`` (or a bare policy name for AutoAugment).
Unlike both, every token is checked: an unknown or malformed token is an error that names it, and
``inc0`` means *not* increasing (timm and MindCV test ``bool("0")``, which is true).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Dict, Mapping, Tuple

from mindplug._errors import ConfigError, did_you_mean

_TOKEN = re.compile(r"^([a-z]+)(\d[\d.]*|inf)$")


@dataclass(frozen=True)
class RandAugmentConfig:
    """RandAugment: ``num_layers`` ops drawn per image, each applied with ``prob`` at ``magnitude`` (0..10)."""

    magnitude: float = 10.0
    num_layers: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False
    prob: float = 0.5
    weight_idx: int | None = None


@dataclass(frozen=True)
class AutoAugmentConfig:
    """AutoAugment: one learned ImageNet sub-policy drawn per image (``original``, ``originalr``, ``v0``, ``v0r``)."""

    policy: str = "original"
    magnitude_std: float = 0.0


@dataclass(frozen=True)
class TrivialAugmentConfig:
    """TrivialAugmentWide: one op per image at a magnitude drawn uniformly from ``num_magnitude_bins`` bins."""

    num_magnitude_bins: int = 31


@dataclass(frozen=True)
class AugMixConfig:
    """AugMix: ``width`` chains of ``depth`` ops (-1: 1..3 at random) at ``severity``, mixed by Dirichlet(alpha)."""

    severity: float = 3.0
    width: int = 3
    depth: int = -1
    alpha: float = 1.0
    blended: bool = False
    magnitude_std: float = math.inf


def _std(text: str) -> float:
    """Magnitude std; above 100 (or ``inf``) means uniform sampling in [0, magnitude], as in timm."""
    value = float(text)
    return math.inf if value > 100 else value


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _int(text: str) -> int:
    return int(text)


# token key -> (config field, converter); one table per family
_RAND_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "m": ("magnitude", float), "n": ("num_layers", _int), "mstd": ("magnitude_std", _std),
    "mmax": ("magnitude_max", float), "inc": ("increasing", _flag), "p": ("prob", float),
    "w": ("weight_idx", _int),
}
_AUTO_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {"mstd": ("magnitude_std", _std)}
_TRIVIAL_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {"bins": ("num_magnitude_bins", _int)}
_AUGMIX_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "m": ("severity", float), "w": ("width", _int), "d": ("depth", _int), "a": ("alpha", float),
    "b": ("blended", _flag), "mstd": ("magnitude_std", _std),
}

#: AutoAugment policy tables that a bare token may name
AUTO_POLICIES: Tuple[str, ...] = ("original", "originalr", "v0", "v0r")

# family head -> defaults it implies (MindCV's 'autoaugr' is the 'originalr' table)
_HEADS: Mapping[str, Mapping[str, Tuple[Any, Mapping[str, Any]]]] = {
    "rand_augment": {"randaug": (RandAugmentConfig(), {}), "rand": (RandAugmentConfig(), {})},
    "auto_augment": {"autoaug": (AutoAugmentConfig(), {}),
                     "autoaugr": (AutoAugmentConfig(), {"policy": "originalr"})},
    "trivial_augment_wide": {"trivialaugwide": (TrivialAugmentConfig(), {}), "trivialaug": (TrivialAugmentConfig(), {})},
    "augmix": {"augmix": (AugMixConfig(), {})},
}
_KEYS = {"rand_augment": _RAND_KEYS, "auto_augment": _AUTO_KEYS, "trivial_augment_wide": _TRIVIAL_KEYS,
         "augmix": _AUGMIX_KEYS}
_BARE = {"auto_augment": ("policy", AUTO_POLICIES)}


def family_of(policy: str) -> str:
    """The component family (``rand_augment``, ``auto_augment``, ...) a policy string belongs to."""
    head = str(policy).strip().lower().split("-")[0]
    for family, heads in _HEADS.items():
        if head in heads:
            return family
    known = [h for heads in _HEADS.values() for h in heads]
    raise ConfigError(f"auto_augment policy {policy!r}: unknown family {head!r}{did_you_mean(head, known)}; "
                      f"expected one of {', '.join(known)} (e.g. 'randaug-m9-n2-mstd0.5', 'autoaug', "
                      f"'trivialaugwide', 'augmix-m3-w3')")


def parse_policy(policy: str, family: str | None = None) -> Any:
    """Parse ``policy`` into the config dataclass of its family; every token must be understood."""
    text = str(policy).strip().lower()
    found = family_of(text)
    if family is not None and found != family:
        raise ConfigError(f"policy {policy!r} is a {found} policy, but was given to {family}; "
                          f"use the {found} augmentation or a {family} policy string")
    head, *tokens = text.split("-")
    config, implied = _HEADS[found][head]
    values: Dict[str, Any] = dict(implied)
    keys = _KEYS[found]
    bare_field, bare_choices = _BARE.get(found, ("", ()))
    for token in tokens:
        if token in bare_choices:
            values[bare_field] = token
            continue
        match = _TOKEN.match(token)
        if not match or match.group(1) not in keys:
            key = match.group(1) if match else token
            options = sorted(keys) + list(bare_choices)
            raise ConfigError(f"{found} policy {policy!r}: unknown token {token!r}{did_you_mean(key, options)}; "
                              f"valid tokens: <{'|'.join(sorted(keys))}><number>"
                              + (f" or one of {', '.join(bare_choices)}" if bare_choices else ""))
        key, raw = match.groups()
        name, convert = keys[key]
        try:
            values[name] = convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{found} policy {policy!r}: token {token!r} has a bad value {raw!r} ({exc})") from None
    parsed = replace(config, **values)
    _check(parsed, policy)
    return parsed


def _check(config: Any, policy: str) -> None:
    """Range checks that would otherwise surface as odd behaviour deep inside a worker."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in ("num_layers", "width", "num_magnitude_bins") and value < 1:
            raise ConfigError(f"policy {policy!r}: {f.name} must be >= 1, got {value}")
        if f.name in ("magnitude", "severity", "magnitude_std", "magnitude_max") and value < 0:
            raise ConfigError(f"policy {policy!r}: {f.name} must be >= 0, got {value}")
        if f.name == "prob" and not 0.0 <= value <= 1.0:
            raise ConfigError(f"policy {policy!r}: prob must be in [0, 1], got {value}")
        if f.name == "weight_idx" and value not in (None, 0):
            raise ConfigError(f"policy {policy!r}: only weight set w0 exists, got w{value}")
        if f.name == "depth" and (value == 0 or value < -1):
            raise ConfigError(f"policy {policy!r}: depth must be -1 (random 1..3) or >= 1, got {value}")
