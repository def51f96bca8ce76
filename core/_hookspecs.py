"""The pluggy hook specifications: one hook per component kind, each returning spec records.

A plugin is a module named by an entry point in the group ``mindplug.plugins``; it implements any
of these hooks with ``@mindplug.hookimpl`` and must not import MindSpore at import time.
A module may set ``MINDPLUG_API_REQUIRES = ">=1,<2"`` (a PEP 440 specifier on ``MINDPLUG_API``).
"""
from __future__ import annotations

from typing import Iterable

import pluggy

from ._spec import ComponentSpec

PROJECT = "mindplug"
ENTRY_POINT_GROUP = "mindplug.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: hook name for each kind
HOOK_FOR_KIND = {
    "model": "mindplug_models",
    "optimizer": "mindplug_optimizers",
    "scheduler": "mindplug_schedulers",
    "loss": "mindplug_losses",
    "augmentation": "mindplug_augmentations",
    "dataset": "mindplug_datasets",
}


@hookspec
def mindplug_models() -> Iterable[ComponentSpec]:
    """Return the model specs this plugin provides."""
    raise NotImplementedError


@hookspec
def mindplug_optimizers() -> Iterable[ComponentSpec]:
    """Return the optimizer specs this plugin provides."""
    raise NotImplementedError


@hookspec
def mindplug_schedulers() -> Iterable[ComponentSpec]:
    """Return the learning-rate schedule specs this plugin provides."""
    raise NotImplementedError


@hookspec
def mindplug_losses() -> Iterable[ComponentSpec]:
    """Return the loss specs this plugin provides."""
    raise NotImplementedError


@hookspec
def mindplug_augmentations() -> Iterable[ComponentSpec]:
    """Return the augmentation (transform) specs this plugin provides."""
    raise NotImplementedError


@hookspec
def mindplug_datasets() -> Iterable[ComponentSpec]:
    """Return the dataset specs this plugin provides."""
    raise NotImplementedError
