"""One mindplug factory per MindCV model, made on first access: ``mindplug_mindcv.factories:resnet18``.

Importing this module is light; getting an attribute imports MindCV (and so MindSpore). Each factory
takes exactly the keyword arguments MindCV's factory accepts for that model, minus ``pretrained``: the
engine owns weights (``--ckpt_path``, resume, and ``pretrained`` through mindplug's local cache), and
MindCV's own ``pretrained=True`` would download. The signature is a real ``inspect.Signature``, so
mindplug checks arguments before the call and the engine offers ``drop_rate`` only to models that take it.
"""
from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, Callable, Dict, List, Mapping

from mindplug import ComponentArgumentError, ComponentImportError

from . import PLUGIN_NAME, catalog

#: Arguments the engine owns; MindCV's factories take them, the bridge never forwards them.
OWNED_BY_ENGINE = ("pretrained", "checkpoint_path")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def factory_parameters(item: Mapping[str, Any]) -> List[inspect.Parameter]:
    """The bridge factory's keyword-only parameters for one catalogue entry, defaults read from live MindCV.

    ``tools/generate.py`` writes the same list as text into the catalogue, so what ``mindplug info`` shows
    and what ``create`` enforces cannot drift apart without its check failing.
    """
    from mindcv.models import helpers, registry

    sources = [(registry.model_entrypoint(item["name"]), item["factory_args"])]
    if item["class"]:
        sources.append((_resolve(item["class"]), item["class_args"]))
    sources.append((helpers.build_model_with_cfg, item["builder_args"]))
    params: List[inspect.Parameter] = []
    for obj, names in sources:
        live = inspect.signature(obj).parameters
        for name in names:
            if name not in live:
                raise catalog.CatalogueError(
                    f"the shipped catalogue says '{PLUGIN_NAME}:{item['name']}' takes '{name}', but the installed "
                    f"MindCV's {getattr(obj, '__qualname__', obj)} does not: the catalogue does not fit this "
                    "MindCV; regenerate it with bridges/mindcv/tools/generate.py")
            p = live[name]
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                                            annotation=p.annotation))
    if item["var_kwargs"]:
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return params


def signature_text(params: List[inspect.Parameter]) -> str:
    """The signature as ``mindplug info`` shows it; default objects' memory addresses vary, so they go."""
    return _ADDRESS.sub("", str(inspect.Signature(params)))


def _build(item: Mapping[str, Any], signature: inspect.Signature, kwargs: Dict[str, Any]) -> Any:
    name = item["name"]
    canonical = f"{PLUGIN_NAME}:{name}"
    owned = [k for k in kwargs if k in OWNED_BY_ENGINE]
    if owned:
        raise ComponentArgumentError(
            f"The model '{canonical}' does not take {', '.join(map(repr, owned))}: mindplug's engine loads "
            "weights (a recipe's `pretrained: True` from the local cache, `--ckpt_path`, `--resume`); MindCV's "
            "own pretrained=True would download, which mindplug never does")
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "(none)"
        raise ComponentArgumentError(f"The model '{canonical}': {exc}. Accepted arguments: {accepted}.") from None
    for arg in item.get("ignored_args", ()):
        default = signature.parameters[arg].default
        if arg in kwargs and kwargs[arg] is not None and kwargs[arg] != default:
            raise ComponentArgumentError(
                f"The model '{canonical}' cannot take {arg}={kwargs[arg]!r}: MindCV's factory accepts {arg} but "
                f"ignores it, so the network would still be built for {arg}={default!r}. "
                + ("Use in_channels: 3 (mindplug's data pipeline turns grey images into 3 channels) or another "
                   "model." if arg == "in_channels" else "Choose another model."))
    if item.get("broken"):
        raise ComponentImportError(
            f"The model '{canonical}' is listed by MindCV {catalog.load()['mindcv_version']} but its factory "
            f"cannot build it ({item['broken']}); choose another model")
    from mindcv.models import registry

    # as mindcv.create_model does: an argument given as None means "MindCV's default"
    given = {k: v for k, v in kwargs.items() if v is not None}
    return registry.model_entrypoint(name)(pretrained=False, **given)


def make_factory(name: str) -> Callable[..., Any]:
    """The factory of one MindCV model (``KeyError`` for a name MindCV does not have)."""
    item = catalog.entry(name)
    signature = inspect.Signature(factory_parameters(item))

    def factory(**kwargs: Any) -> Any:
        return _build(item, signature, kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__signature__ = signature  # type: ignore[attr-defined]
    factory.__doc__ = (f"{catalog.description_of(item, catalog.load()['mindcv_version'])}\n\n"
                       f"Builds MindCV's `{name}` with pretrained=False; weights are loaded by mindplug.")
    return factory


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        factory = make_factory(name)
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}: MindCV "
                             f"{catalog.load()['mindcv_version']} has no model '{name}'") from None
    globals()[name] = factory
    return factory
