"""mindplug: a MindSpore vision toolbox whose every component arrives through a plugin.

The public API is small: ``create``, ``list``, ``info``, ``build``, ``register``, ``hookimpl`` and the
spec records. Nothing here imports MindSpore; a component's module is imported when it is created.
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union, overload

from ._checkpoint import LoadReport, load_weights
from ._errors import (AmbiguousComponentError, CheckpointError, ComponentArgumentError, ComponentBuildError,
                      ComponentImportError, ConfigError, DataError, MindplugError, PluginLoadError,
                      UnknownComponentError)
from ._hookspecs import hookimpl
from ._registry import API_VERSION as MINDPLUG_API
from ._registry import default_registry as _default_registry
from ._spec import (IMAGENET_MEAN, IMAGENET_STD, KINDS, ComponentInfo, ComponentSpec, PluginFailure, PluginRecord,
                    WeightsSpec)

__version__ = "0.1.0"

__all__ = [
    "create", "list", "info", "build", "register", "hookimpl", "load_weights", "LoadReport", "KINDS", "MINDPLUG_API",
    "IMAGENET_MEAN", "IMAGENET_STD",
    "ComponentSpec", "WeightsSpec", "ComponentInfo", "PluginRecord", "PluginFailure",
    "MindplugError", "UnknownComponentError", "AmbiguousComponentError", "ComponentArgumentError",
    "ComponentImportError", "ComponentBuildError", "PluginLoadError", "ConfigError", "CheckpointError", "DataError",
]

F = TypeVar("F", bound=Callable[..., Any])


def create(name: str, kind: str = "model", **kwargs: Any) -> Any:
    """Create a component by name (``"googlenet"``) or canonical id (``"googlenet:googlenet"``).

    Keyword arguments are checked against the factory's signature before it is called.
    """
    return _default_registry().create(name, kind, **kwargs)


def list(pattern: Union[str, Sequence[str]] = "*", kind: Optional[str] = "model",
         exclude: Union[str, Sequence[str], None] = None) -> builtins.list[str]:
    """Names of the components of one kind (``kind=None``: all kinds) matching fnmatch patterns."""
    return _default_registry().list(pattern, kind=kind, exclude=exclude)


def info(name: str, kind: Optional[str] = None) -> ComponentInfo:
    """Provider, version, target, signature and description of a component, without importing it
    (``kind=None``: whichever kind provides the name)."""
    return _default_registry().info(name, kind)


def build(cfg: Mapping[str, Any], kind: str = "model", **overrides: Any) -> Any:
    """Create a component from a mapping whose ``type`` key names it; the other keys are its arguments."""
    return _default_registry().build(cfg, kind, **overrides)


@overload
def register(obj: F) -> F: ...
@overload
def register(obj: None = None, *, name: Optional[str] = None, kind: str = "model", description: str = "",
             tags: Sequence[str] = (), metadata: Optional[Mapping[str, Any]] = None) -> Callable[[F], F]: ...


def register(obj: Any = None, *, name: Optional[str] = None, kind: str = "model", description: str = "",
             tags: Sequence[str] = (), metadata: Optional[Mapping[str, Any]] = None) -> Any:
    """Register an in-process component (a notebook's model, a test's optimizer) under plugin ``local``.

    Use as ``@register`` or ``@register(kind="optimizer", name="my_sgd")``. Registering a name again in
    the same process replaces the earlier one, so re-running a notebook cell works.
    """
    def decorate(target: F) -> F:
        doc = (target.__doc__ or "").strip().splitlines()
        spec = ComponentSpec(name or target.__name__, kind, target,
                             description or (doc[0] if doc else ""), tuple(tags), metadata or {})
        _default_registry().register_spec(spec)
        return target

    return decorate(obj) if obj is not None else decorate
