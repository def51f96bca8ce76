"""Built-in learning-rate schedules: per-step rate arrays with MindCV's semantics and values.

This module is what the entry point names; the schedules themselves live in ``schedules``.
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"

_TARGET = "mindplug.plugins.schedulers.schedules:"
#: what a recipe without a ``scheduler`` key gets (MindCV's default)
DEFAULT = "cosine_decay"

#: name, function in ``schedules``, description, tags
_SCHEDULES = (
    ("constant", "constant", "the same rate after an optional linear warmup", ("warmup",)),
    ("cosine_decay", "cosine_decay", "linear warmup, then cosine to min_lr over decay_epochs, with restarts "
     "(num_cycles, cycle_decay); padded with min_lr", ("warmup", "cosine")),
    ("warmup_cosine_decay", "cosine_decay", "the same schedule as cosine_decay (MindCV's older name)",
     ("warmup", "cosine", "alias")),
    ("exponential_decay", "exponential_decay", "lr * decay_rate ** epoch after the warmup", ("warmup",)),
    ("polynomial_decay", "polynomial_decay", "lr * (1 - epoch / epochs) ** decay_rate after the warmup",
     ("warmup",)),
    ("step_decay", "step_decay", "lr * decay_rate every decay_epochs epochs", ("warmup", "stair")),
    ("multi_step_decay", "multi_step_decay", "lr * decay_rate at each milestone epoch", ("warmup", "stair")),
    ("one_cycle", "one_cycle", "1cycle: up from lr / div_factor to lr, then down to min_lr", ("cyclical",)),
    ("cyclic", "cyclic", "triangles between min_lr and lr, num_cycles of them over the run", ("cyclical",)),
)


@hookimpl
def mindplug_schedulers() -> List[ComponentSpec]:
    return [ComponentSpec(name, "scheduler", _TARGET + function, description=description, tags=tags,
                          metadata={"returns": "float32 array, one learning rate per step"},
                          default=name == DEFAULT)
            for name, function, description, tags in _SCHEDULES]
