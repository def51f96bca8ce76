"""Built-in optimizers: MindSpore's where they fit, Lion and AdamW written here; all from one table.

This module is what the entry point names; it imports no MindSpore (the factories live in ``factory``).
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

from .table import OPTIMIZERS

MINDPLUG_API_REQUIRES = ">=1,<2"

#: what a recipe without an ``opt`` key gets (MindCV's default)
DEFAULT = "adam"


@hookimpl
def mindplug_optimizers() -> List[ComponentSpec]:
    return [ComponentSpec(entry.name, "optimizer", f"mindplug.plugins.optimizers.factory:{entry.name}",
                          description=entry.description, tags=entry.tags, metadata=entry.metadata,
                          default=entry.name == DEFAULT)
            for entry in OPTIMIZERS]
