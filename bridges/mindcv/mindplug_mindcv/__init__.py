"""mindplug-mindcv: every MindCV model as a mindplug model, under the plugin name ``mindcv``.

This is the module the entry point names, so it stays light: the specs are built from the catalogue
shipped in ``data/`` for the installed MindCV version, and neither MindCV nor MindSpore is imported
until a model is created (through ``mindplug_mindcv.factories``).
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"
PLUGIN_NAME = "mindcv"
__version__ = "0.1.0"


@hookimpl
def mindplug_models() -> List[ComponentSpec]:
    from .catalog import model_specs

    return model_specs()
