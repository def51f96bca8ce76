"""Cross-entropy losses with label smoothing, soft (mixup/cutmix) labels and auxiliary-head weighting.

A model with auxiliary heads returns ``(main, aux1, aux2, ...)`` while training; the loss is then
``loss(main) + aux_factor * sum(loss(aux_i))``, as MindCV computes it (with ``aux_factor`` 0 the auxiliary
logits are ignored). Both losses run in GRAPH and PYNATIVE mode.
"""
from __future__ import annotations

from typing import Any

from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype

from mindplug import ConfigError
from mindplug._errors import did_you_mean

REDUCTIONS = ("mean", "sum", "none")


def _check(name: str, label_smoothing: Any, aux_factor: Any, reduction: Any) -> None:
    """Reject values the loss would silently mis-handle, naming the argument."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not number(label_smoothing) or not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"{name}: label_smoothing must be a number in [0, 1), got {label_smoothing!r} "
                          "(0.1 is usual).")
    if not number(aux_factor) or aux_factor < 0.0:
        raise ConfigError(f"{name}: aux_factor must be a number >= 0, got {aux_factor!r} "
                          "(0 ignores auxiliary logits; GoogLeNet's paper uses 0.3).")
    if reduction not in REDUCTIONS:
        hint = did_you_mean(reduction, REDUCTIONS) if isinstance(reduction, str) else ""
        raise ConfigError(f"{name}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                          f"got {reduction!r}{hint}.")


class _AuxWeightedLoss(nn.Cell):
    """``single(main) + aux_factor * sum(single(aux))`` for tuple logits, ``single(logits)`` otherwise.

    Subclasses define ``single(logits, labels)``, the loss of one set of logits.
    """

    def __init__(self, label_smoothing: float, aux_factor: float, reduction: str):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.aux_factor = float(aux_factor)
        self.reduction = reduction

    def construct(self, logits: Any, labels: Tensor) -> Tensor:
        if isinstance(logits, (tuple, list)):
            loss = self.single(logits[0], labels)
            if self.aux_factor > 0.0:
                for aux_logits in logits[1:]:
                    loss = loss + self.aux_factor * self.single(aux_logits, labels)
            return loss
        return self.single(logits, labels)


class CrossEntropySmooth(_AuxWeightedLoss):
    """Softmax cross-entropy; labels are class ids ``[N]`` or probabilities ``[N, C]``. Smoothing mixes
    the target with the uniform distribution: ``t * (1 - eps) + eps / C`` (for soft labels too)."""

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        if labels.ndim < logits.ndim and labels.dtype != mstype.int32:
            labels = labels.astype(mstype.int32)
        return ops.cross_entropy(logits, labels, reduction=self.reduction, label_smoothing=self.label_smoothing)


class BinaryCrossEntropySmooth(_AuxWeightedLoss):
    """Per-class sigmoid cross-entropy; class ids become one-hot targets, smoothed to
    ``t * (1 - eps) + eps / 2`` as in MindCV."""

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        if labels.ndim < logits.ndim:
            labels = ops.one_hot(labels.astype(mstype.int32), logits.shape[-1],
                                 Tensor(1.0, logits.dtype), Tensor(0.0, logits.dtype))
        targets = labels.astype(logits.dtype)
        if self.label_smoothing > 0.0:
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / 2.0
        ones = ops.ones_like(logits)
        return ops.binary_cross_entropy_with_logits(logits, targets, ones, ones, self.reduction)


def cross_entropy(*, label_smoothing: float = 0.0, aux_factor: float = 0.0,
                  reduction: str = "mean") -> CrossEntropySmooth:
    """Softmax cross-entropy with label smoothing and auxiliary-logit weighting (MindCV's 'CE')."""
    _check("CE", label_smoothing, aux_factor, reduction)
    return CrossEntropySmooth(label_smoothing, aux_factor, reduction)


def binary_cross_entropy(*, label_smoothing: float = 0.0, aux_factor: float = 0.0,
                         reduction: str = "mean") -> BinaryCrossEntropySmooth:
    """Sigmoid (multi-label) cross-entropy with smoothing and auxiliary-logit weighting (MindCV's 'BCE')."""
    _check("BCE", label_smoothing, aux_factor, reduction)
    return BinaryCrossEntropySmooth(label_smoothing, aux_factor, reduction)
