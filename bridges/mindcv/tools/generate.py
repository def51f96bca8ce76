"""Regenerate the catalogue the bridge ships for one MindCV version (run by hand after a MindCV upgrade).

    python bridges/mindcv/tools/generate.py           # writes mindplug_mindcv/data/mindcv-<version>.json
    python bridges/mindcv/tools/generate.py --check   # exit 1 and print the differences if it is stale

Listing must not import MindCV, so everything `mindplug list`/`info` shows is read from that file:
the model names (``mindcv.list_models()``), each model's ``default_cfg`` verbatim (weights URL, classes,
input size, mean/std, crop, interpolation, first conv and classifier names), and the keyword arguments
its factory really accepts.

MindCV factories all read ``(pretrained, num_classes, in_channels, **kwargs)`` and forward ``**kwargs``
to a model class after fixing some of its arguments themselves (``block``, ``layers``, ...). Which
arguments remain open is found by *probing*: every ``__init__`` of a MindCV ``Cell`` class is replaced by
one that raises at once with the arguments it got, the factory is called with ``pretrained=False``, and
the first class constructed (the model itself, built before its layers) tells what the factory fixed.
Nothing is built and nothing is downloaded.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's mindplug_mindcv, installed or not

from mindplug_mindcv.catalog import DATA_DIR  # noqa: E402
from mindplug_mindcv.factories import OWNED_BY_ENGINE, factory_parameters, signature_text  # noqa: E402

FORMAT = 1
#: Distinctive values the probe passes for these factory arguments, to see whether they reach the model.
_PROBE_VALUES = {"num_classes": 7907, "in_channels": 7919}
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class _Captured(Exception):
    """Raised by a probed ``__init__``: the class being built and the arguments it was given."""

    def __init__(self, cls: type, args: tuple, kwargs: dict, via_builder: bool) -> None:
        super().__init__(cls.__name__)
        self.cls, self.args, self.kwargs, self.via_builder = cls, args, kwargs, via_builder


def _cell_classes() -> Iterator[type]:
    import mindspore.nn as nn

    seen = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("mindcv.") or module is None:
            continue
        for value in list(vars(module).values()):
            if (isinstance(value, type) and issubclass(value, nn.Cell) and value not in seen
                    and value.__module__.startswith("mindcv.") and "__init__" in value.__dict__):
                seen.add(value)
                yield value


def _probe(factory: Any, builder_code: Any, **probe_args: Any) -> Tuple[Optional[_Captured], str]:
    """The model class the factory builds and the arguments it passes, without building anything;
    or the error the factory raises before it gets there (a model MindCV itself cannot build)."""

    def probe_init(self: Any, *args: Any, **kwargs: Any) -> None:
        frame = sys._getframe(1)
        via_builder = False
        while frame is not None:
            via_builder = via_builder or frame.f_code is builder_code
            frame = frame.f_back
        raise _Captured(type(self), args, kwargs, via_builder)

    originals = {cls: cls.__dict__["__init__"] for cls in _cell_classes()}
    try:
        for cls in originals:
            cls.__init__ = probe_init
        factory(pretrained=False, **probe_args)
    except _Captured as captured:
        return captured, ""
    except Exception as exc:  # recorded in the catalogue: the bridge reports it on create
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        for cls, init in originals.items():
            cls.__init__ = init
    return None, "the factory returned without building a MindCV model class"


def _plain(value: Any) -> Any:
    """JSON-able and deterministic: tuples become lists, mappings are sorted by the dump."""
    return json.loads(json.dumps(value, default=repr))


def _unused_by_class(cls: type, names: List[str]) -> bool:
    """Whether the class never reads the argument under any of ``names`` (none: it went to ``**kwargs``)."""
    init = next((c.__dict__["__init__"] for c in cls.__mro__ if "__init__" in c.__dict__), None)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    read = {n.id for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return not any(name in read for name in names)


def _is(value: Any, probe: int) -> bool:
    return type(value) is int and value == probe


def _entry(name: str, registry: Any, builder_code: Any) -> Dict[str, Any]:
    factory = registry.model_entrypoint(name)
    fparams = inspect.signature(factory).parameters.values()
    factory_args = [p.name for p in fparams if p.kind in _KEYWORD_KINDS and p.name not in OWNED_BY_ENGINE]
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in fparams)
    entry: Dict[str, Any] = {"name": name, "module": registry._model_to_module.get(name, ""),
                             "factory_args": factory_args, "class": "", "class_args": [],
                             "builder_args": [], "var_kwargs": False, "broken": "", "ignored_args": []}
    probe_args = {k: v for k, v in _PROBE_VALUES.items() if k in factory_args}
    captured, entry["broken"] = _probe(factory, builder_code, **probe_args) if forwards else (None, "")
    if captured is not None:
        cls = captured.cls
        sig = inspect.signature(cls)
        bound = sig.bind_partial(*captured.args, **captured.kwargs).arguments
        given = set(bound)
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD and p.name in bound:
                given |= set(bound[p.name])
        entry["class"] = f"{cls.__module__}:{cls.__qualname__}"
        entry["class_args"] = [p.name for p in sig.parameters.values() if p.kind in _KEYWORD_KINDS
                               and p.name not in given and p.name not in factory_args
                               and p.name not in OWNED_BY_ENGINE]
        entry["var_kwargs"] = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        passed = list(captured.args) + list(captured.kwargs.values())
        # a factory that takes in_channels but never hands it on (seresnet, resnest, ...) builds RGB only
        # ... and one whose class only swallows it in **kwargs (CoaT) or never reads it (CMT) does the same
        entry["ignored_args"] = [k for k, v in probe_args.items() if not any(_is(x, v) for x in passed)
                                 or _unused_by_class(cls, [n for n, x in bound.items() if _is(x, v)])]
        if captured.via_builder:
            entry["builder_args"] = ["features_only", "out_indices"]
    elif forwards:
        entry["var_kwargs"] = True  # the probe saw no MindCV class: forward whatever is given
    entry["signature"] = signature_text(factory_parameters(entry))
    entry["default_cfg"] = _plain(registry.get_pretrained_cfg(name))
    return entry


def collect() -> Dict[str, Any]:
    """The catalogue of the installed MindCV, as the bridge ships it."""
    import mindcv
    from mindcv.models import helpers, registry

    builder_code = helpers.build_model_with_cfg.__code__
    models = [_entry(name, registry, builder_code) for name in mindcv.list_models()]
    return {"format": FORMAT, "mindcv_version": mindcv.__version__, "models": models}


def dump(catalogue: Dict[str, Any]) -> str:
    return json.dumps(catalogue, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def data_path(version: str) -> Path:
    return DATA_DIR / f"mindcv-{version}.json"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    args = parser.parse_args(argv)
    catalogue = collect()
    text = dump(catalogue)
    path = data_path(catalogue["mindcv_version"])
    if args.check:
        shipped = path.read_text(encoding="utf-8") if path.is_file() else ""
        if shipped == text:
            print(f"{path.name} is up to date ({len(catalogue['models'])} models)")
            return 0
        diff = difflib.unified_diff(shipped.splitlines(), text.splitlines(), str(path), "installed mindcv",
                                    lineterm="", n=1)
        print("\n".join(list(diff)[:200]))
        print(f"{path} differs from the installed MindCV; rerun {Path(__file__).name} without --check")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(catalogue['models'])} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
