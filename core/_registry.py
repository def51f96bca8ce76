"""The registry: loads plugins through pluggy, isolates their failures and resolves component names.

One ``Registry`` instance per process is the default (``default_registry()``); tests build their own
from ``PluginSource`` stand-ins so they never depend on what is installed.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from . import _hookspecs
from ._discovery import PluginSource, entry_point_sources, normalize_distribution
from ._errors import (AmbiguousComponentError, ComponentImportError, ConfigError, MindplugError,
                      PluginLoadError, UnknownComponentError, did_you_mean)
from ._signature import check_arguments, live_signature, static_signature
from ._spec import KINDS, ComponentInfo, ComponentSpec, PluginFailure, PluginRecord

API_VERSION = "1.0"
LOCAL_PLUGIN = "local"
STRICT_ENV = "MINDPLUG_STRICT_PLUGINS"
NO_AUTOLOAD_ENV = "MINDPLUG_DISABLE_PLUGIN_AUTOLOAD"

Patterns = Union[str, Sequence[str], None]


class PluginLoadWarning(UserWarning):
    """Some plugins failed to load; the others are in use."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def name_key(name: str) -> str:
    """Names match case-insensitively and with '-' equal to '_' (``CE`` is ``ce``)."""
    return name.casefold().replace("-", "_")


@dataclass(frozen=True)
class Entry:
    """A spec together with the plugin that provided it."""

    spec: ComponentSpec
    plugin: str
    distribution: str
    version: str

    @property
    def canonical_id(self) -> str:
        return f"{self.plugin}:{self.spec.name}"

    def provider(self) -> str:
        return f"'{self.canonical_id}' from {self.distribution} {self.version}"


def _as_list(patterns: Patterns) -> List[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"Unknown component kind '{kind}'{did_you_mean(kind, KINDS)}. "
                          f"Kinds: {', '.join(KINDS)}.")
    return kind


class Registry:
    """Plugins and their components, loaded once on first use."""

    def __init__(self, sources: Optional[Callable[[], List[PluginSource]]] = None,
                 env: Optional[Mapping[str, str]] = None) -> None:
        self._sources = sources or entry_point_sources
        self._env = env
        self._lock = threading.RLock()
        self._allow: List[str] = []
        self._block: List[str] = []
        self._prefer: Dict[str, str] = {}
        self._local: Dict[Tuple[str, str], ComponentSpec] = {}
        self._reset()

    # ----------------------------------------------------------------- loading
    def _reset(self) -> None:
        self._loaded = False
        self._entries: Dict[str, List[Entry]] = {kind: [] for kind in KINDS}
        self._plugins: List[PluginRecord] = []
        self._failures: List[PluginFailure] = []
        self._failed_modules: Dict[str, str] = {}
        self._strict_error: Optional[PluginLoadError] = None
        self._seen_sources: List[PluginSource] = []

    def configure(self, allow: Patterns = None, block: Patterns = None,
                  prefer: Optional[Mapping[str, str]] = None) -> None:
        """Choose plugins by plugin or distribution name (fnmatch), and providers for shared names."""
        with self._lock:
            self._allow = _as_list(allow)
            self._block = _as_list(block)
            self._prefer = {name_key(k): v for k, v in (prefer or {}).items()}
            self._reset()

    def _environ(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def _selected(self, source: PluginSource) -> bool:
        names = (source.name, source.distribution, normalize_distribution(source.distribution))
        if _flag(self._environ(), NO_AUTOLOAD_ENV) and not source.builtin:
            return False
        if self._allow and not source.builtin and not any(
                fnmatch.fnmatchcase(n, p) for p in self._allow for n in names):
            return False
        return not any(fnmatch.fnmatchcase(n, p) for p in self._block for n in names)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            if self._strict_error is not None:  # strict mode: every access fails, not only the first
                raise self._strict_error
            return
        with self._lock:
            if self._loaded:
                return
            manager = pluggy.PluginManager(_hookspecs.PROJECT)
            manager.add_hookspecs(_hookspecs)
            self._seen_sources = list(self._sources())
            for source in self._seen_sources:
                if self._selected(source):
                    self._load_one(manager, source)
            for (kind, _), spec in sorted(self._local.items()):
                self._entries[kind].append(Entry(spec, LOCAL_PLUGIN, "(in-process)", "-"))
            self._loaded = True
            self._check_selection()
            self._report_failures()

    def _check_selection(self) -> None:
        """allow/block patterns that match no installed plugin are typos or missing plugins: say so."""
        names = [n for s in self._seen_sources
                 for n in (s.name, s.distribution, normalize_distribution(s.distribution))]
        for setting, patterns in (("allow", self._allow), ("block", self._block)):
            for pattern in patterns:
                if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                    message = (f"plugins.{setting}: no installed plugin or distribution matches {pattern!r}"
                               f"{did_you_mean(pattern, names)}; `mindplug plugins` lists them")
                    if _flag(self._environ(), STRICT_ENV):
                        self._strict_error = PluginLoadError(message + f" ({STRICT_ENV} is set)")
                        raise self._strict_error
                    warnings.warn(message, PluginLoadWarning, stacklevel=_caller_stacklevel())

    def _fail(self, source: PluginSource, stage: str, exc: BaseException | str) -> None:
        if isinstance(exc, BaseException):
            error = f"{type(exc).__name__}: {exc}"
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            error, trace = exc, ""
        self._failures.append(PluginFailure(source.name, source.distribution, source.version, source.module,
                                            stage, error, trace))

    def _load_one(self, manager: pluggy.PluginManager, source: PluginSource) -> None:
        if manager.has_plugin(source.name):
            other = next(p for p in self._plugins if p.name == source.name)
            self._fail(source, "register", f"plugin name '{source.name}' is already used by "
                       f"{other.distribution} {other.version}; rename the entry point")
            return
        had_mindspore = "mindspore" in sys.modules
        start = time.perf_counter()
        try:
            module = source.load()
        except Exception as exc:  # a broken plugin must not take the host down
            self._fail(source, "import", exc)
            return
        seconds = time.perf_counter() - start
        requires = str(getattr(module, "MINDPLUG_API_REQUIRES", "") or "")
        if requires:
            try:
                compatible = SpecifierSet(requires).contains(API_VERSION, prereleases=True)
            except InvalidSpecifier as exc:
                self._fail(source, "check its API version", exc)
                return
            if not compatible:
                self._fail(source, "check its API version",
                           f"it requires mindplug API {requires}, this mindplug provides {API_VERSION}")
                return
        try:
            entries = self._collect(manager, source, module)
        except Exception as exc:
            if manager.is_registered(module):
                manager.unregister(module)
            self._fail(source, "register", exc)
            return
        for entry in entries:
            self._entries[entry.spec.kind].append(entry)
        self._plugins.append(PluginRecord(source.name, source.distribution, source.version, source.module,
                                          seconds, len(entries), requires,
                                          not had_mindspore and "mindspore" in sys.modules))

    def _collect(self, manager: pluggy.PluginManager, source: PluginSource, module: ModuleType) -> List[Entry]:
        known = set(_hookspecs.HOOK_FOR_KIND.values())
        for attr in dir(module):
            if attr.startswith("mindplug_") and attr not in known and callable(getattr(module, attr)):
                raise TypeError(f"unknown hook '{attr}'{did_you_mean(attr, known)}")
        manager.register(module, name=source.name)
        entries: List[Entry] = []
        for kind, hook_name in _hookspecs.HOOK_FOR_KIND.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                if impl.plugin_name != source.name:
                    continue
                for spec in impl.function() or ():
                    entries.append(Entry(_validated(spec, kind, hook_name), source.name,
                                         source.distribution, source.version))
        seen: Dict[Tuple[str, str], ComponentSpec] = {}
        for entry in entries:
            key = (entry.spec.kind, name_key(entry.spec.name))
            if key in seen:
                raise ValueError(f"it declares the {entry.spec.kind} '{entry.spec.name}' twice")
            seen[key] = entry.spec
        return entries

    def _report_failures(self) -> None:
        if not self._failures:
            return
        lines = "\n".join("  - " + f.describe() for f in self._failures)
        if _flag(self._environ(), STRICT_ENV):
            self._strict_error = PluginLoadError(f"{len(self._failures)} plugin(s) failed to load ({STRICT_ENV} is "
                                                 f"set):\n{lines}")
            raise self._strict_error
        warnings.warn(f"{len(self._failures)} mindplug plugin(s) failed to load and were skipped "
                      f"(`mindplug plugins` shows why):\n{lines}", PluginLoadWarning,
                      stacklevel=_caller_stacklevel())

    # -------------------------------------------------------------- in-process
    def register_spec(self, spec: ComponentSpec) -> None:
        """Add an in-process component under the plugin name ``local``; re-registering replaces it."""
        spec = _validated(spec, _check_kind(spec.kind), "register")
        with self._lock:
            self._local[(spec.kind, name_key(spec.name))] = spec
            if self._loaded:
                entries = self._entries[spec.kind]
                entries[:] = [e for e in entries
                              if not (e.plugin == LOCAL_PLUGIN and name_key(e.spec.name) == name_key(spec.name))]
                entries.append(Entry(spec, LOCAL_PLUGIN, "(in-process)", "-"))

    def unregister_local(self, name: str, kind: str) -> None:
        with self._lock:
            self._local.pop((kind, name_key(name)), None)
            self._reset()

    # --------------------------------------------------------------- queries
    @property
    def plugins(self) -> List[PluginRecord]:
        self._ensure_loaded()
        return list(self._plugins)

    @property
    def failures(self) -> List[PluginFailure]:
        self._ensure_loaded()
        return list(self._failures)

    def entries(self, kind: Optional[str] = None) -> List[Entry]:
        self._ensure_loaded()
        kinds = KINDS if kind is None else (_check_kind(kind),)
        return [e for k in kinds for e in self._entries[k]]

    def list(self, pattern: Patterns = "*", kind: Optional[str] = "model", exclude: Patterns = None) -> List[str]:
        """Sorted names matching any include pattern and no exclude pattern (fnmatch, case-insensitive).

        A name two plugins share is listed once per provider, by canonical id; when all providers but one
        are ``fallback`` components, that one keeps its bare name.
        """
        entries = self.entries(kind)
        sharing: Dict[Tuple[str, str], List[Entry]] = {}
        for e in entries:
            sharing.setdefault((e.spec.kind, name_key(e.spec.name)), []).append(e)
        include = [p.casefold() for p in _as_list(pattern) or ["*"]]
        excluded = [p.casefold() for p in _as_list(exclude)]
        names = set()
        for e in entries:
            owners = _without_fallbacks(sharing[(e.spec.kind, name_key(e.spec.name))])
            shown = e.spec.name if owners == [e] else e.canonical_id
            if _matches(e, include) and not _matches(e, excluded):
                names.add(shown)
        return sorted(names, key=lambda n: (n.casefold(), n))

    def resolve(self, name: str, kind: str = "model") -> Entry:
        """The one entry a name means, or an error that says what to do."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"A {kind} name must be a non-empty string, got {name!r}.")
        entries = self.entries(kind)
        plugin, sep, bare = name.rpartition(":")
        if sep:
            pool = [e for e in entries if e.plugin == plugin]
        else:
            pool, bare = entries, name
        exact = [e for e in pool if e.spec.name == bare]
        found = exact or [e for e in pool if name_key(e.spec.name) == name_key(bare)]
        if len(found) > 1:
            found = self._preferred(bare, found)
        if len(found) > 1 and not sep:
            found = _without_fallbacks(found)
        if len(found) == 1:
            return found[0]
        if found:
            providers = "\n".join(f"  - {e.provider()}" for e in found)
            raise AmbiguousComponentError(
                f"The {kind} '{name}' is provided by {len(found)} plugins:\n{providers}\n"
                f"Choose one by its canonical id (e.g. '{found[0].canonical_id}'), or add to the config:\n"
                f"  plugins:\n    prefer:\n      {bare}: {found[0].plugin}")
        raise UnknownComponentError(self._unknown_message(name, bare, kind, entries))

    def default(self, kind: str) -> Entry:
        """The component a recipe gets when it names none of ``kind``: the one a plugin declares ``default``."""
        found = [e for e in self.entries(kind) if e.spec.default]
        if len(found) == 1:
            return found[0]
        key = {"optimizer": "opt"}.get(kind, kind)
        if not found:
            raise ConfigError(f"no {kind} given (recipe key '{key}') and no loaded plugin declares a default "
                              f"{kind}: set '{key}' (`mindplug list {kind}` shows the choices)")
        providers = ", ".join(e.provider() for e in found)
        raise AmbiguousComponentError(f"no {kind} given (recipe key '{key}') and {len(found)} plugins declare a "
                                      f"default {kind} ({providers}): set '{key}' to one of them")

    def _preferred(self, bare: str, found: List[Entry]) -> List[Entry]:
        choice = self._prefer.get(name_key(bare))
        if choice is None:
            return found
        chosen = [e for e in found if choice in (e.plugin, e.distribution)
                  or normalize_distribution(choice) == normalize_distribution(e.distribution)]
        if not chosen:
            providers = [e.plugin for e in found] + [e.distribution for e in found]
            raise ConfigError(f"plugins.prefer: {bare}: {choice!r} is not one of its providers"
                              f"{did_you_mean(choice, providers)}; providers: "
                              + ", ".join(e.provider() for e in found))
        return chosen

    def _unknown_message(self, name: str, bare: str, kind: str, entries: List[Entry]) -> str:
        known = [e.spec.name for e in entries] + [e.canonical_id for e in entries]
        message = f"Unknown {kind} '{name}'{did_you_mean(name, known)}."
        elsewhere = [e for e in self.entries() if e.spec.kind != kind and name_key(e.spec.name) == name_key(bare)]
        if elsewhere:
            other = elsewhere[0].spec.kind
            message += (f" '{bare}' is {'an' if other[0] in 'aeiou' else 'a'} {other} "
                        f"(from plugin '{elsewhere[0].plugin}'); "
                        f"ask for kind='{elsewhere[0].spec.kind}'.")
        suspects = [f for f in self._failures if self._failure_mentions(f, bare)]
        for failure in suspects:
            message += f"\nIt is probably provided by a plugin that did not load: {failure.describe()}"
        others = [f for f in self._failures if f not in suspects]
        if others:
            message += (f"\nNote: {len(others)} plugin(s) failed to load and may provide it: "
                        + "; ".join(f"'{f.name}' ({f.distribution} {f.version})" for f in others)
                        + ". Run `mindplug plugins` for the reasons.")
        if not suspects:
            sample = sorted({e.spec.name for e in entries})
            shown = ", ".join(sample[:15]) + (", ..." if len(sample) > 15 else "")
            message += f"\nAvailable {kind}s: {shown or '(none)'}. `mindplug list {kind}` lists them all."
        if _flag(self._environ(), NO_AUTOLOAD_ENV):
            message += (f"\n{NO_AUTOLOAD_ENV} is set: only the built-in plugins are loaded; unset it to use "
                        f"installed plugins.")
        return message

    def _failure_mentions(self, failure: PluginFailure, bare: str) -> bool:
        """Whether a failed plugin's own source names the component, read as text (it cannot be imported)."""
        if name_key(failure.name) == name_key(bare):
            return True
        if failure.module not in self._failed_modules:
            text = ""
            try:
                spec = importlib.util.find_spec(failure.module.partition(":")[0])
                if spec is not None and spec.origin and spec.origin.endswith(".py"):
                    with open(spec.origin, encoding="utf-8") as handle:
                        text = handle.read()
            except Exception:  # the module is broken; its text may still be unreadable
                text = ""
            self._failed_modules[failure.module] = text
        text = self._failed_modules[failure.module]
        return f'"{bare}"' in text or f"'{bare}'" in text

    def find(self, name: str) -> Entry:
        """A component of whatever kind provides ``name`` (models first when several kinds do)."""
        bare = name.rpartition(":")[2]
        kinds = [k for k in KINDS if any(name_key(e.spec.name) == name_key(bare) for e in self.entries(k))]
        return self.resolve(name, kinds[0] if len(kinds) == 1 else "model")

    def info(self, name: str, kind: Optional[str] = None) -> ComponentInfo:
        """Everything known about one component, without importing its target; ``kind=None`` looks in
        every kind."""
        entry = self.find(name) if kind is None else self.resolve(name, kind)
        spec = entry.spec
        if isinstance(spec.target, str):
            signature, doc = static_signature(spec.target)
        else:
            signature, doc = live_signature(spec.target)
        if signature == "(...)" and isinstance(spec.metadata.get("signature"), str):
            signature = spec.metadata["signature"]  # a generated factory states its own signature
        description = spec.description or (doc.strip().splitlines()[0] if doc.strip() else "")
        return ComponentInfo(spec.name, entry.canonical_id, spec.kind, entry.plugin, entry.distribution,
                             entry.version, spec.target_path, signature, description, spec.tags,
                             spec.metadata, spec.weights)

    def load_target(self, entry: Entry) -> Callable[..., Any]:
        """Import the target of an entry; a failure names the plugin, its distribution and the cause."""
        target = entry.spec.target
        if not isinstance(target, str):
            return target
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise ComponentImportError(
                f"The {entry.spec.kind} {entry.provider()} could not be loaded from '{target}': "
                f"{type(exc).__name__}: {exc}. Reinstall or fix that plugin, or choose another provider.") from exc
        return obj

    def create(self, name: str, kind: str = "model", **kwargs: Any) -> Any:
        entry = self.resolve(name, kind)
        factory = self.load_target(entry)
        check_arguments(factory, kwargs, f"The {kind} '{entry.canonical_id}'")
        return factory(**kwargs)

    def build(self, cfg: Mapping[str, Any], kind: str = "model", *, path: str = "", **overrides: Any) -> Any:
        """Create from a mapping whose ``type`` key names the component; other keys are its arguments."""
        where = f" at '{path}'" if path else ""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"The {kind} config{where} must be a mapping with a 'type' key, got {cfg!r}.")
        if "type" not in cfg:
            raise ConfigError(f"The {kind} config{where} has no 'type' key naming the {kind}; "
                              f"keys given: {', '.join(map(str, cfg)) or '(none)'}.")
        args = {k: v for k, v in cfg.items() if k != "type"}
        args.update(overrides)
        try:
            return self.create(cfg["type"], kind, **args)
        except MindplugError as exc:
            if not path:
                raise
            raise type(exc)(f"{path}: {exc}") from exc


def _without_fallbacks(found: List[Entry]) -> List[Entry]:
    """A bare name two plugins share goes to the providers that are not ``fallback`` ones (if any)."""
    primary = [e for e in found if not e.spec.fallback]
    return primary or found


def _matches(entry: Entry, patterns: List[str]) -> bool:
    """A pattern with ':' matches canonical ids (``example:*``), any other pattern the bare name."""
    return any(fnmatch.fnmatchcase((entry.canonical_id if ":" in p else entry.spec.name).casefold(), p)
               for p in patterns)


def _caller_stacklevel() -> int:
    """How many frames up the first caller outside mindplug's core is, so a warning points at user code."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame = frame.f_back
        level += 1
    return level


def _validated(spec: Any, kind: str, hook: str) -> ComponentSpec:
    if not isinstance(spec, ComponentSpec):
        raise TypeError(f"{hook} returned {spec!r}; hooks return mindplug.ComponentSpec records")
    if not spec.kind:
        spec = replace(spec, kind=kind)
    if spec.kind != kind:
        raise ValueError(f"{hook} returned '{spec.name}' of kind '{spec.kind}'; it must be '{kind}'")
    if not isinstance(spec.name, str) or not spec.name or ":" in spec.name or spec.name != spec.name.strip():
        raise ValueError(f"invalid component name {spec.name!r}: a non-empty string without ':' or spaces")
    target = spec.target
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if not (sep and module and attr):
            raise ValueError(f"'{spec.name}' has target {target!r}; write it as 'package.module:attr'")
    elif not callable(target):
        raise TypeError(f"'{spec.name}' has target {target!r}: neither a 'module:attr' string nor callable")
    return spec


_DEFAULT = Registry()


def default_registry() -> Registry:
    return _DEFAULT


def configure_plugins(allow: Patterns = None, block: Patterns = None,
                      prefer: Optional[Mapping[str, str]] = None) -> None:
    """What a config's ``plugins:`` section does: allow/block lists and preferred providers."""
    _DEFAULT.configure(allow=allow, block=block, prefer=prefer)
