"""Finding plugin modules through entry points, in a deterministic order, without importing them."""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, List, Optional

from ._hookspecs import ENTRY_POINT_GROUP

#: The distribution whose entry points are the built-in plugins.
BUILTIN_DISTRIBUTION = "mindplug"


def normalize_distribution(name: str) -> str:
    """PEP 503 normalisation, so 'My_Plugin' and 'my-plugin' are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PluginSource:
    """One plugin module to load: an entry point, or a stand-in built by a test."""

    name: str
    module: str
    distribution: str
    version: str
    loader: Optional[Callable[[], ModuleType]] = field(default=None, compare=False)

    def load(self) -> ModuleType:
        if self.loader is not None:
            return self.loader()
        return importlib.import_module(self.module)

    @property
    def builtin(self) -> bool:
        return normalize_distribution(self.distribution) == BUILTIN_DISTRIBUTION


def entry_point_sources(group: str = ENTRY_POINT_GROUP) -> List[PluginSource]:
    """Every installed plugin, once per (distribution, entry-point name), sorted by both."""
    seen: set[tuple[str, str]] = set()
    sources: List[PluginSource] = []
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        dist_name = (dist.metadata["Name"] if dist is not None else None) or "unknown"
        version = (dist.version if dist is not None else None) or "unknown"
        key = (normalize_distribution(dist_name), ep.name)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        sources.append(PluginSource(ep.name, ep.value, dist_name, version, loader=ep.load))
    return sort_sources(sources)


def sort_sources(sources: List[PluginSource]) -> List[PluginSource]:
    """Install order never decides anything: sort by distribution, then plugin name."""
    return sorted(sources, key=lambda s: (normalize_distribution(s.distribution), s.name))
