"""Built-in losses: 'CE' and 'BCE' as MindCV configs name them (names match case-insensitively).

This module is what the entry point names; the losses live in ``cross_entropy``.
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"

_MODULE = "mindplug.plugins.losses.cross_entropy"
_CE = "softmax cross-entropy with label smoothing, soft (mixup) labels and aux_factor for auxiliary logits"
_BCE = "sigmoid cross-entropy per class with label smoothing, soft labels and aux_factor"


@hookimpl
def mindplug_losses() -> List[ComponentSpec]:
    return [
        ComponentSpec("CE", "loss", f"{_MODULE}:cross_entropy", description=_CE, tags=("classification",),
                      default=True),  # MindCV's default loss
        ComponentSpec("cross_entropy", "loss", f"{_MODULE}:cross_entropy", description=_CE,
                      tags=("classification", "alias")),
        ComponentSpec("BCE", "loss", f"{_MODULE}:binary_cross_entropy", description=_BCE,
                      tags=("multi-label",)),
        ComponentSpec("binary_cross_entropy", "loss", f"{_MODULE}:binary_cross_entropy", description=_BCE,
                      tags=("multi-label", "alias")),
    ]
