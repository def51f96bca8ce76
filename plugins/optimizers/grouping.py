"""Parameter groups for weight decay: which parameters decay, decided by a named filter.

Groups are always built, even for 'disable': given a plain list, MindSpore's Optimizer silently exempts
parameters whose names contain 'beta' or 'gamma', so 'decay everything' needs an explicit group.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Sequence

from mindplug import ConfigError
from mindplug._errors import did_you_mean

from .table import WEIGHT_DECAY_FILTER_NAMES

_NORM_AND_BIAS_KEYS = ("beta", "gamma", "bias")


def _decays_all(param: Any) -> bool:
    return True


def _decays_matrices(param: Any) -> bool:
    """'auto': weights of rank >= 2 decay; biases and norm scales/shifts (rank <= 1) do not."""
    return len(param.shape) > 1


def _decays_unless_norm_or_bias(param: Any) -> bool:
    """'norm_and_bias' as MindCV names it: no decay for names containing beta, gamma or bias."""
    return not any(key in param.name for key in _NORM_AND_BIAS_KEYS)


#: weight_decay_filter -> "does this parameter decay?"
WEIGHT_DECAY_FILTERS: Mapping[str, Callable[[Any], bool]] = MappingProxyType({
    "disable": _decays_all,
    "auto": _decays_matrices,
    "norm_and_bias": _decays_unless_norm_or_bias,
})
assert tuple(WEIGHT_DECAY_FILTERS) == WEIGHT_DECAY_FILTER_NAMES


def decay_filter(name: Any) -> Callable[[Any], bool]:
    """The predicate for a weight_decay_filter value; anything else is an error, never a silent default."""
    if not isinstance(name, str) or name not in WEIGHT_DECAY_FILTERS:
        hint = did_you_mean(name, WEIGHT_DECAY_FILTERS) if isinstance(name, str) else ""
        raise ConfigError(f"weight_decay_filter={name!r} is not one of "
                          f"{', '.join(repr(k) for k in WEIGHT_DECAY_FILTERS)}{hint}. 'disable' decays every "
                          "parameter, 'auto' exempts 1-D parameters (biases, norm scales), 'norm_and_bias' "
                          "exempts names containing beta, gamma or bias.")
    return WEIGHT_DECAY_FILTERS[name]


def group_params(params: Sequence[Any], weight_decay: float,
                 weight_decay_filter: str = "disable") -> List[Dict[str, Any]]:
    """MindSpore group params: a decaying group, a non-decaying group, and the original order."""
    decays = decay_filter(weight_decay_filter)
    params = list(params)
    if not params:
        raise ConfigError("The optimizer got no parameters to train: pass net.trainable_params() "
                          "(an empty list means every parameter is frozen).")
    decaying = [p for p in params if decays(p)]
    exempt = [p for p in params if not decays(p)]
    groups: List[Dict[str, Any]] = []
    if decaying:
        groups.append({"params": decaying, "weight_decay": float(weight_decay)})
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    groups.append({"order_params": params})
    return groups
