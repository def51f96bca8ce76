"""Error types a user can act on: each names the input at fault and the fix."""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence


class MindplugError(Exception):
    """Base class of every error mindplug raises on purpose."""


class UnknownComponentError(MindplugError, LookupError):
    """A name that no loaded plugin provides."""


class AmbiguousComponentError(MindplugError, LookupError):
    """A bare name that two or more plugins provide."""


class ComponentArgumentError(MindplugError, TypeError):
    """Keyword arguments a component's factory does not accept."""


class ComponentImportError(MindplugError, ImportError):
    """A registered component whose target module could not be imported on ``create``."""


class PluginLoadError(MindplugError, RuntimeError):
    """A plugin failed to load while strict plugin loading is on."""


class ConfigError(MindplugError, ValueError):
    """A config key, value or type that is wrong."""


class CheckpointError(MindplugError, OSError):
    """A checkpoint that is missing, unreadable or does not fit the network."""


class DataError(MindplugError, OSError):
    """A data directory, split, file or image that is missing or unreadable."""


class ComponentBuildError(MindplugError, RuntimeError):
    """A component's factory raised while building it; the message names the component and the cause."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches by difflib, compared case-insensitively."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def did_you_mean(word: str, candidates: Sequence[str] | Iterable[str]) -> str:
    """' (did you mean 'a' or 'b'?)' or ''."""
    hits = close_matches(word, candidates)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(repr(h) for h in hits) + "?)"
