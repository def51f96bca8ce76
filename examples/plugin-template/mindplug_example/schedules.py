"""A learning-rate schedule: one float32 rate per optimizer step, for the whole run."""
import numpy as np


def linear_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, warmup_epochs: int = 0,
                 min_lr: float = 0.0) -> np.ndarray:
    """Linear warmup from 0 over warmup_epochs, then a straight line from lr down to min_lr."""
    total, warmup = steps_per_epoch * num_epochs, min(steps_per_epoch * warmup_epochs, steps_per_epoch * num_epochs)
    steps = np.arange(total, dtype=np.float64)
    rates = min_lr + (lr - min_lr) * (1.0 - (steps - warmup) / max(total - warmup, 1))
    if warmup:
        rates[:warmup] = lr * (steps[:warmup] + 1) / warmup
    return rates.astype(np.float32)
