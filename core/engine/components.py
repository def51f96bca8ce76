"""Components of a run, created by registry name from the recipe (never imported by name here).

A recipe key such as ``momentum`` is passed to the optimizer only when its factory takes it, read from
the factory's signature; arguments written explicitly in a ``{type: name, ...}`` mapping are always
passed, so a wrong one is the registry's clear error.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import mindplug
from mindplug._registry import configure_plugins, default_registry

from .._errors import ComponentArgumentError, ConfigError
from .config import Config

#: recipe keys offered to each kind's factory when its signature takes them
RECIPE_KEYS = {
    "model": ("in_channels", "drop_rate", "drop_path_rate", "pretrained"),
    "optimizer": ("weight_decay", "weight_decay_filter", "momentum", "use_nesterov", "eps"),
    "scheduler": ("min_lr", "warmup_epochs", "warmup_factor", "decay_epochs", "decay_rate",
                  "multi_step_decay_milestones", "lr_epoch_stair", "num_cycles", "cycle_decay"),
    "loss": ("label_smoothing", "aux_factor", "reduction"),
}


def apply_plugin_selection(cfg: Config) -> None:
    """The recipe's ``plugins:`` section (allow, block, prefer) goes to the registry before any lookup."""
    section = cfg.get("plugins") or {}
    if section:
        configure_plugins(allow=section.get("allow"), block=section.get("block"), prefer=section.get("prefer"))


def factory_parameters(name: str, kind: str) -> Tuple[set, bool]:
    """(names of the factory's keyword parameters, whether it takes ``**kwargs``)."""
    registry = default_registry()
    factory = registry.load_target(registry.resolve(name, kind))
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def offered(cfg: Config, key: str, kind: str, base: Mapping[str, Any], keys: Iterable[str]) -> Dict[str, Any]:
    """Arguments for the component at ``key``: ``base`` + recipe keys it takes + explicit mapping args."""
    name, explicit = cfg.component(key)
    accepted, var_kw = factory_parameters(name, kind)
    kwargs = dict(base)
    for recipe_key in keys:
        value = cfg.get(recipe_key)
        if value is None:
            continue
        if recipe_key in accepted:
            kwargs[recipe_key] = list(value) if isinstance(value, tuple) else value
    kwargs.update(explicit)
    return kwargs


def create(cfg: Config, key: str, kind: str, base: Mapping[str, Any], keys: Iterable[str] = ()) -> Any:
    name, _ = cfg.component(key)
    kwargs = offered(cfg, key, kind, base, keys)
    try:
        return mindplug.create(name, kind=kind, **kwargs)
    except ComponentArgumentError as exc:
        raise ComponentArgumentError(f"config '{key}': {exc}") from exc


def build_model(cfg: Config, num_classes: int, checkpoint_path: Optional[str] = None, *,
                strict: bool = True, pretrained: Optional[bool] = None) -> Any:
    """The network; a checkpoint goes through the model's own loader when it has one (it knows how to
    drop a classifier for other classes), otherwise through the strict name-by-name loader."""
    from mindplug._checkpoint import load_into

    base: Dict[str, Any] = {"num_classes": num_classes}
    keys = list(RECIPE_KEYS["model"])
    if pretrained is not None:
        keys.remove("pretrained")
        base["pretrained"] = pretrained
    name, _ = cfg.component("model")
    accepted, var_kw = factory_parameters(name, "model")
    if checkpoint_path and ("checkpoint_path" in accepted or var_kw):
        base.update(checkpoint_path=checkpoint_path, strict=strict)
        return create(cfg, "model", "model", base, keys)
    net = create(cfg, "model", "model", base, keys)
    if checkpoint_path:
        load_into(net, checkpoint_path, strict=strict)
    return net


def build_loss(cfg: Config) -> Any:
    return create(cfg, "loss", "loss", {}, RECIPE_KEYS["loss"])


def build_schedule(cfg: Config, steps_per_epoch: int, num_epochs: int) -> Any:
    import numpy as np

    lrs = create(cfg, "scheduler", "scheduler",
                 {"lr": cfg.lr, "steps_per_epoch": steps_per_epoch, "num_epochs": num_epochs},
                 RECIPE_KEYS["scheduler"])
    lrs = np.asarray(lrs, dtype=np.float32).reshape(-1)
    if lrs.shape[0] != steps_per_epoch * num_epochs:
        raise ConfigError(f"scheduler '{cfg.component('scheduler')[0]}' returned {lrs.shape[0]} rates for "
                          f"{steps_per_epoch} steps x {num_epochs} epochs; a scheduler returns one per step")
    return lrs


def build_optimizer(cfg: Config, params: list, lrs: Any) -> Any:
    return create(cfg, "opt", "optimizer", {"params": params, "lr": lrs, "loss_scale": 1.0},
                  RECIPE_KEYS["optimizer"])


def build_source(cfg: Config, split: str) -> Any:
    """A random-access dataset source for one split (the dataset plugin reports bad dirs and splits)."""
    base: Dict[str, Any] = {"split": split}
    if cfg.data_dir:
        base["data_dir"] = cfg.data_dir
    return create(cfg, "dataset", "dataset", base, ())
