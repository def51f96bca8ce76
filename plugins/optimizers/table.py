"""The optimizer table: one record per optimizer, read both by the plugin hook (no MindSpore import) and
by the factory that builds it, so the arguments a spec advertises are exactly the ones the factory takes."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Tuple, Union

#: Where our argument goes in the optimizer class: a keyword name, or a tuple of names to unpack into
#: (``betas=(0.9, 0.999)`` -> ``beta1``, ``beta2``).
Destination = Union[str, Tuple[str, ...]]


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer as the registry shows it and the factory builds it.

    ``arguments`` are the optimizer-specific keyword arguments with their defaults, under the names a
    config uses; ``rename`` maps them onto the class's own keywords; ``fixed`` are class keywords the
    entry always sets.
    """

    name: str
    target_class: str
    description: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    rename: Mapping[str, Destination] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("arguments", "rename", "fixed"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def tags(self) -> Tuple[str, ...]:
        """``has_momentum`` / ``has_betas`` / ``has_eps`` as timm's OptimInfo records them."""
        return tuple(f"has_{arg}" for arg in ("momentum", "betas", "eps") if arg in self.arguments)

    @property
    def signature(self) -> str:
        """The factory's call signature as text, for ``mindplug info`` (which cannot import the factory)."""
        keywords = ", ".join(f"{k}={v!r}" for k, v in {**COMMON_ARGUMENTS, **self.arguments}.items())
        return f"(params, lr, *, {keywords})"

    @property
    def metadata(self) -> Mapping[str, Any]:
        return {"signature": self.signature, "arguments": dict(self.arguments),
                "optimizer_class": self.target_class, "common_arguments": dict(COMMON_ARGUMENTS),
                "weight_decay_filters": WEIGHT_DECAY_FILTER_NAMES}


#: The arguments every optimizer takes, after ``params`` and ``lr``.
COMMON_ARGUMENTS: Mapping[str, Any] = MappingProxyType(
    {"weight_decay": 0.0, "weight_decay_filter": "disable", "loss_scale": 1.0})

#: What each weight_decay_filter means (the predicates live in ``grouping``).
WEIGHT_DECAY_FILTER_NAMES: Tuple[str, ...] = ("disable", "auto", "norm_and_bias")

_OWN = "mindplug.plugins.optimizers.decoupled"
_ADAM_BETAS = (0.9, 0.999)
_BETAS = {"betas": ("beta1", "beta2")}

OPTIMIZERS: Tuple[OptimizerEntry, ...] = (
    OptimizerEntry("sgd", "mindspore.nn:SGD", "stochastic gradient descent, optional (Nesterov) momentum",
                   {"momentum": 0.0, "dampening": 0.0, "use_nesterov": False}, {"use_nesterov": "nesterov"}),
    # nn.Momentum would be the obvious class, but on CPU it ignores use_nesterov (measured with
    # MindSpore 2.10); nn.SGD without dampening makes the same update and honours Nesterov.
    OptimizerEntry("momentum", "mindspore.nn:SGD", "SGD with momentum 0.9 by default, optional Nesterov",
                   {"momentum": 0.9, "use_nesterov": False}, {"use_nesterov": "nesterov"},
                   fixed={"dampening": 0.0}),
    OptimizerEntry("adam", "mindspore.nn:Adam", "Adam with L2 weight decay added to the gradient",
                   {"betas": _ADAM_BETAS, "eps": 1e-8, "use_nesterov": False}, _BETAS),
    OptimizerEntry("adamw", f"{_OWN}:AdamW",
                   "AdamW: bias-corrected Adam with decoupled weight decay (Loshchilov & Hutter)",
                   {"betas": _ADAM_BETAS, "eps": 1e-8}, _BETAS),
    OptimizerEntry("rmsprop", "mindspore.nn:RMSProp", "RMSProp, optionally centred and with momentum",
                   {"decay": 0.9, "momentum": 0.0, "eps": 1e-10, "centered": False}, {"eps": "epsilon"}),
    OptimizerEntry("adagrad", "mindspore.nn:Adagrad", "Adagrad",
                   {"initial_accumulator": 0.1}, {"initial_accumulator": "accum"}),
    OptimizerEntry("lion", f"{_OWN}:Lion", "Lion: sign of interpolated momentum, decoupled weight decay",
                   {"betas": (0.9, 0.99)}, _BETAS),
    OptimizerEntry("lamb", f"{_OWN}:Lamb", "LAMB: AdamW scaled per tensor by a trust ratio, for large batches",
                   {"betas": _ADAM_BETAS, "eps": 1e-6}, _BETAS),
)
