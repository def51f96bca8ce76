"""Focal loss: cross-entropy down-weighted on well-classified samples (Lin et al. 2017)."""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops


class FocalLoss(nn.Cell):
    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma, self.smoothing, self.reduction = gamma, label_smoothing, reduction

    def construct(self, logits, labels):
        if isinstance(logits, (tuple, list)):  # auxiliary heads: the main output decides
            logits = logits[0]
        classes = logits.shape[-1]
        if labels.ndim == 1:  # hard labels; soft ones (mixup/cutmix) arrive as [N, C]
            labels = ops.one_hot(labels, classes, ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32))
        labels = labels * (1.0 - self.smoothing) + self.smoothing / classes
        log_p = ops.log_softmax(logits.astype(ms.float32), -1)
        per_sample = -(labels * ops.pow(1.0 - ops.exp(log_p), self.gamma) * log_p).sum(-1)
        if self.reduction == "sum":
            return per_sample.sum()
        if self.reduction == "none":
            return per_sample
        return per_sample.mean()


def focal(*, gamma: float = 2.0, label_smoothing: float = 0.0, reduction: str = "mean") -> FocalLoss:
    """Softmax focal loss with focusing parameter gamma."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"focal: reduction must be mean, sum or none, got {reduction!r}")
    return FocalLoss(gamma, label_smoothing, reduction)
