"""Mixup and CutMix on whole batches (timm's ``Mixup`` in batch mode), in numpy.

``fn(images NCHW float32, labels int [N]) -> (images, soft labels float32 [N, num_classes])``: one mixing
coefficient per batch, each image paired with the batch reversed.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from mindplug._errors import ConfigError


def one_hot_soft(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """Smoothed one-hot rows: ``1 - smoothing + smoothing/C`` on the label, ``smoothing/C`` elsewhere."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"mixup_cutmix: label {int(labels.max())} is outside 0..{num_classes - 1}; "
                          f"set num_classes to the dataset's class count")
    off = smoothing / num_classes
    out = np.full((labels.size, num_classes), off, dtype=np.float32)
    out[np.arange(labels.size), labels] = 1.0 - smoothing + off
    return out


class MixupCutmix:
    """Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019), switching between them like timm.

    With probability ``prob`` a batch is mixed; when both alphas are > 0, CutMix is chosen with
    probability ``switch_prob``. ``cutmix_minmax`` bounds the box side as a fraction of the image;
    ``correct_lam`` recomputes the coefficient from the clipped box area.
    """

    def __init__(self, *, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, cutmix_minmax: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, correct_lam: bool = True) -> None:
        if num_classes < 1:
            raise ConfigError(f"mixup_cutmix: num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup_cutmix: alphas must be >= 0, got mixup_alpha={mixup_alpha}, "
                              f"cutmix_alpha={cutmix_alpha}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mixup_cutmix: {name} must be in [0, 1], got {value}")
        if cutmix_minmax is not None and (len(cutmix_minmax) != 2 or not 0 < cutmix_minmax[0] <= cutmix_minmax[1] <= 1):
            raise ConfigError(f"mixup_cutmix: cutmix_minmax must be (lo, hi) with 0 < lo <= hi <= 1, "
                              f"got {cutmix_minmax}")
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.cutmix_minmax = tuple(cutmix_minmax) if cutmix_minmax is not None else None
        self.label_smoothing, self.correct_lam = float(label_smoothing), bool(correct_lam)

    def _draw(self) -> Tuple[float, bool]:
        """(lambda, use_cutmix) for one batch."""
        if np.random.rand() >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or np.random.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), use_cutmix

    def _box(self, height: int, width: int, lam: float) -> Tuple[int, int, int, int]:
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            cut_h = np.random.randint(int(height * lo), int(height * hi) + 1)
            cut_w = np.random.randint(int(width * lo), int(width * hi) + 1)
        else:
            side = np.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * side), int(width * side)
        cy, cx = np.random.randint(0, height), np.random.randint(0, width)
        y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
        x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
        return int(y0), int(y1), int(x0), int(x1)

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise ConfigError(f"mixup_cutmix works on NCHW batches, got shape {images.shape}; "
                              f"apply it after batching")
        soft = one_hot_soft(labels, self.num_classes, self.label_smoothing)
        lam, use_cutmix = self._draw()
        if lam == 1.0:
            return images, soft
        flipped = images[::-1]
        if use_cutmix:
            height, width = images.shape[2:]
            y0, y1, x0, x1 = self._box(height, width, lam)
            images = images.copy()
            images[:, :, y0:y1, x0:x1] = flipped[:, :, y0:y1, x0:x1]
            if self.correct_lam or self.cutmix_minmax is not None:
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        else:
            images = images * np.float32(lam) + flipped * np.float32(1.0 - lam)
        soft = soft * np.float32(lam) + soft[::-1] * np.float32(1.0 - lam)
        return images.astype(np.float32, copy=False), soft.astype(np.float32, copy=False)
