"""Optimizer factories, generated from the table: every optimizer goes through the same code path.

A factory takes ``(params, lr, *, weight_decay, weight_decay_filter, loss_scale, <its own arguments>)``,
builds weight-decay groups, turns a per-step lr sequence into a Tensor and constructs the optimizer class.
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Callable, Dict, Mapping

import numpy as np
from mindspore import Tensor, nn

from mindplug import ComponentArgumentError, ConfigError
from mindplug._errors import did_you_mean

from .grouping import group_params
from .table import COMMON_ARGUMENTS, OPTIMIZERS, OptimizerEntry

OptimizerFactory = Callable[..., nn.Optimizer]


def as_learning_rate(lr: Any) -> Any:
    """A float stays a float; a 1-D sequence of per-step rates becomes a float32 Tensor (indexed by step)."""
    if isinstance(lr, Tensor):
        return lr
    if isinstance(lr, bool):
        raise ConfigError(f"lr must be a number or a 1-D sequence of per-step rates, got {lr!r}.")
    try:
        rates = np.asarray(lr, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"lr must be a number or a 1-D sequence of per-step rates, got {lr!r}.") from None
    if rates.ndim > 1 or rates.size == 0:
        raise ConfigError(f"lr must be a number or a non-empty 1-D sequence of per-step rates, "
                          f"got an array of shape {rates.shape}.")
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        bad = rates[~(np.isfinite(rates) & (rates >= 0))].ravel()[0]
        raise ConfigError(f"lr must be finite and >= 0, got {float(bad)!r}.")
    return float(rates) if rates.ndim == 0 else Tensor(rates)


def _coerce(entry: OptimizerEntry, key: str, value: Any) -> Any:
    """Check a value against the type of its default: config files give ints for floats, lists for tuples."""
    default = entry.arguments.get(key, COMMON_ARGUMENTS.get(key))
    where = f"optimizer '{entry.name}': {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}.")
        return float(value)
    if isinstance(default, tuple):
        if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != len(default)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ConfigError(f"{where} must be {len(default)} numbers like {list(default)}, got {value!r}.")
        return tuple(float(v) for v in value)
    return value


def _class_kwargs(entry: OptimizerEntry, arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """Our argument names -> the optimizer class's keywords (``betas`` unpacks into beta1/beta2)."""
    out: Dict[str, Any] = dict(entry.fixed)
    for key, value in arguments.items():
        destination = entry.rename.get(key, key)
        if isinstance(destination, tuple):
            out.update(zip(destination, value))
        else:
            out[destination] = value
    return out


def _load_class(entry: OptimizerEntry) -> type:
    module, _, attr = entry.target_class.partition(":")
    return getattr(importlib.import_module(module), attr)


def _signature(entry: OptimizerEntry) -> inspect.Signature:
    positional = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("params", "lr")]
    keywords = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                for name, default in {**COMMON_ARGUMENTS, **entry.arguments}.items()]
    return inspect.Signature(positional + keywords)


def make_factory(entry: OptimizerEntry) -> OptimizerFactory:
    """The factory of one table entry, with a real signature so the registry can check arguments."""
    signature = _signature(entry)

    def factory(*args: Any, **kwargs: Any) -> nn.Optimizer:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            accepted = list(signature.parameters)
            unknown = [key for key in kwargs if key not in accepted]
            hint = "".join(f" '{key}'{did_you_mean(key, accepted)}" for key in unknown)
            raise ComponentArgumentError(f"optimizer '{entry.name}': {exc}.{hint} "
                                         f"Signature: {entry.name}{signature}") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        params, lr = values.pop("params"), values.pop("lr")
        values = {key: _coerce(entry, key, value) for key, value in values.items()}
        weight_decay, loss_scale = values.pop("weight_decay"), values.pop("loss_scale")
        if weight_decay < 0:
            raise ConfigError(f"optimizer '{entry.name}': weight_decay must be >= 0, got {weight_decay!r}.")
        if loss_scale <= 0:
            raise ConfigError(f"optimizer '{entry.name}': loss_scale must be > 0, got {loss_scale!r}.")
        if hasattr(params, "trainable_params"):
            params = params.trainable_params()
        groups = group_params(params, weight_decay, values.pop("weight_decay_filter"))
        cls = _load_class(entry)
        try:
            return cls(groups, learning_rate=as_learning_rate(lr), weight_decay=weight_decay,
                       loss_scale=loss_scale, **_class_kwargs(entry, values))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"optimizer '{entry.name}' ({entry.target_class}) rejected its arguments: "
                              f"{exc}") from exc

    factory.__signature__ = signature  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = entry.name
    factory.__doc__ = f"{entry.description}. Builds {entry.target_class} from params and lr."
    return factory


_ENTRIES = {entry.name: entry for entry in OPTIMIZERS}

sgd = make_factory(_ENTRIES["sgd"])
momentum = make_factory(_ENTRIES["momentum"])
adam = make_factory(_ENTRIES["adam"])
adamw = make_factory(_ENTRIES["adamw"])
rmsprop = make_factory(_ENTRIES["rmsprop"])
adagrad = make_factory(_ENTRIES["adagrad"])
lion = make_factory(_ENTRIES["lion"])
lamb = make_factory(_ENTRIES["lamb"])
