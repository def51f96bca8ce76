"""The ``mindplug`` command: registry commands here, engine commands handed to ``mindplug.engine``.

Only the registry is imported to answer ``list``/``info``/``plugins``/``doctor``, so they stay fast.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from . import __version__
from ._console import Parser, guarded, render_table
from ._errors import MindplugError, did_you_mean
from ._registry import API_VERSION, Entry, Registry, default_registry, name_key
from ._spec import KINDS

ENGINE_COMMANDS = ("train", "validate", "predict", "export", "bench", "check-data")
_PLURALS = {kind + ("es" if kind.endswith("s") else "s"): kind for kind in KINDS}


def _kind_arg(word: Optional[str]) -> Optional[str]:
    if word is None:
        return None
    return _PLURALS.get(word, word if word in KINDS else None)


def _kind_typo(word: str) -> Optional[str]:
    """The error for a word that is neither a kind nor a pattern but a misspelt kind (``modles``)."""
    if any(c in word for c in "*?[:") or _kind_arg(word) is not None:
        return None
    hint = did_you_mean(word, list(KINDS) + list(_PLURALS))
    return f"'{word}' is not a kind{hint}; kinds: {', '.join(KINDS)}" if hint else None


def cmd_list(args: argparse.Namespace, registry: Registry) -> int:
    kind = _kind_arg(args.kind)
    pattern = args.pattern
    if args.kind is not None and kind is None:  # `mindplug list googlenet*`: the word is a pattern
        typo = _kind_typo(args.kind)
        if pattern is not None or (typo and not registry.list(args.kind, kind=None)):
            print(f"error: {typo or repr(args.kind) + ' is not a kind; kinds: ' + ', '.join(KINDS)}",
                  file=sys.stderr)
            return 2
        pattern = args.kind
    kinds = KINDS if kind is None else (kind,)
    rows = []
    for k in kinds:
        shown = set(registry.list(pattern or "*", kind=k, exclude=args.exclude))
        for entry in registry.entries(k):
            if entry.spec.name in shown or entry.canonical_id in shown:
                rows.append([k, entry.spec.name, entry.plugin, entry.spec.description])
    if args.json:
        print(json.dumps([dict(zip(("kind", "name", "plugin", "description"), r)) for r in rows], indent=2))
    elif rows:
        print(render_table(rows, ["kind", "name", "plugin", "description"]))
    else:
        print("no components match")
    return 0


def cmd_info(args: argparse.Namespace, registry: Registry) -> int:
    kind = _kind_arg(args.kind)
    entry = registry.find(args.name) if kind is None else registry.resolve(args.name, kind)
    info = registry.info(entry.canonical_id, entry.spec.kind)
    data: Dict[str, Any] = {
        "name": info.name, "id": info.canonical_id, "kind": info.kind, "plugin": info.plugin,
        "provider": f"{info.distribution} {info.version}", "target": info.target,
        "signature": info.name + info.signature, "description": info.description,
        "tags": list(info.tags), "metadata": dict(info.metadata),
        "weights": [{**w.__dict__, "metrics": dict(w.metrics)} for w in info.weights],
    }
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for key, value in data.items():
        if value in ([], {}, ""):
            continue
        if key == "weights":
            for weights in value:
                print(f"{'weights':<12}{weights['tag']}: {weights['file_name']} "
                      f"({weights['num_classes']} classes, input {weights['input_size']}, "
                      f"eval '{weights['eval_transform']}', {weights['metrics']})")
                if weights["source"]:
                    print(f"{'':<12}source {weights['source']}")
            continue
        print(f"{key:<12}{value}")
    return 0


def cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    rows = [[p.name, p.distribution, p.version, str(p.n_specs), f"{p.import_seconds * 1000:.1f}"]
            for p in registry.plugins]
    if args.json:
        print(json.dumps({"loaded": [p.__dict__ for p in registry.plugins],
                          "failed": [f.__dict__ for f in registry.failures]}, indent=2))
        return 0
    if rows:
        print(render_table(rows, ["plugin", "distribution", "version", "components", "import ms"]))
    for failure in registry.failures:
        print(f"FAILED {failure.describe()}")
        if args.verbose and failure.traceback:
            print(failure.traceback)
    return 0


def cmd_doctor(args: argparse.Namespace, registry: Registry) -> int:
    """Checks for plugin authors: import time, valid specs, names, API version."""
    problems = 0
    print(f"mindplug {__version__}, plugin API {API_VERSION}")
    from .ops import _library  # light: reads no MindSpore

    kernels = os.environ.get("MINDPLUG_KERNELS", "auto")
    if _library.available():
        print(f"ok    C++ kernels built: {_library.library_path()} (MINDPLUG_KERNELS={kernels})")
    else:
        print(f"warn  C++ kernels not built ({_library.library_path()} missing): GoogLeNet falls back to "
              f"MindSpore's slow CPU convolutions; reinstall with `pip install -e .` to build them")
    for record in registry.plugins:
        slow = "  <- slow: keep heavy imports out of the plugin module" if record.import_seconds > 0.1 else ""
        requires = record.api_requires or "(any; set MINDPLUG_API_REQUIRES)"
        print(f"ok    {record.name} ({record.distribution} {record.version}): {record.n_specs} components, "
              f"import {record.import_seconds * 1000:.1f} ms, API {requires}{slow}")
        if record.imported_mindspore:
            problems += 1
            print(f"FAIL  {record.name} imports mindspore at import time; move that import into the target "
                  f"module so listing stays fast")
    for failure in registry.failures:
        problems += 1
        print(f"FAIL  {failure.describe()}")
    by_name: Dict[tuple, List[Entry]] = {}
    for entry in registry.entries():
        by_name.setdefault((entry.spec.kind, name_key(entry.spec.name)), []).append(entry)
        module = entry.spec.target.partition(":")[0] if isinstance(entry.spec.target, str) else None
        if module is not None:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                problems += 1
                print(f"FAIL  {entry.spec.kind} '{entry.canonical_id}': target module '{module}' not found")
        if not entry.spec.description:
            print(f"warn  {entry.spec.kind} '{entry.canonical_id}' has no description")
        if args.import_targets:
            start = time.perf_counter()
            try:
                registry.load_target(entry)
                print(f"ok    {entry.spec.kind} '{entry.canonical_id}' imports "
                      f"({(time.perf_counter() - start) * 1000:.0f} ms)")
            except MindplugError as exc:
                problems += 1
                print(f"FAIL  {exc}")
    for (kind, _), entries in sorted(by_name.items()):
        if len(entries) < 2:
            continue
        owners = [e for e in entries if not e.spec.fallback]
        providers = ", ".join(e.provider() for e in entries)
        if len(owners) > 1:
            problems += 1
            print(f"FAIL  {kind} '{entries[0].spec.name}' is provided by {providers}: a recipe naming it fails "
                  f"as ambiguous; use a canonical id or `plugins: prefer:`, or mark all but one provider's "
                  f"spec fallback=True")
        else:
            print(f"ok    {kind} '{entries[0].spec.name}' is provided by {providers}; the bare name means "
                  f"'{(owners or entries)[0].canonical_id}' (the others are fallback components)")
    if args.check is not None:
        problems += _check_components(registry, args.check, args.data_dir)
    print("no problems found" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1


def _check_components(registry: Registry, plugins: List[str], data_dir: Optional[str]) -> int:
    """``doctor --check``: every component of the named plugins (all loaded ones when none is named)
    created and held to its kind's contract; the number of defects."""
    from .testing import check_plugin

    names = plugins or [p.name for p in registry.plugins]
    defects = 0
    for name in names:
        for finding in check_plugin(name, data_dir=data_dir, registry=registry, raise_on_failure=False):
            print(str(finding))
            defects += finding.status == "fail"
    return defects


def cmd_new_plugin(args: argparse.Namespace, registry: Registry) -> int:
    from ._scaffold import write

    folder = args.dir or f"mindplug-{args.name.replace('_', '-')}"
    for path in write(args.name, folder):
        print(f"wrote {path}")
    print(f"next: pip install -e {folder} && mindplug doctor --check {args.name}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mindplug", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mindplug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list components: mindplug list [KIND] [PATTERN]")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)} (plural works too); default all")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'google*'")
    p.add_argument("--exclude", action="append", help="fnmatch pattern to leave out (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="provider, signature and metadata of a component")
    p.add_argument("name")
    p.add_argument("--kind", help="the kind, when the name exists in several")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("plugins", help="loaded plugins with versions, and failures with their reasons")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("doctor", help="self-check for plugin authors")
    p.add_argument("--import-targets", action="store_true", help="also import every component's target")
    p.add_argument("--check", nargs="*", metavar="PLUGIN", default=None,
                   help="create every component of these plugins (default: all) and check its kind's contract")
    p.add_argument("--data_dir", default=None, help="data for checking dataset components")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("new-plugin", help="write a new plugin package with one component of every kind")
    p.add_argument("name", help="the plugin name (entry point); the package is mindplug_NAME")
    p.add_argument("--dir", default=None, help="where to write it (default: ./mindplug-NAME)")
    p.set_defaults(func=cmd_new_plugin)
    for command in ENGINE_COMMANDS:
        sub.add_parser(command, help=f"{command} (see `mindplug {command} --help`)", add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return guarded(_main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: List[str]) -> int:
    if argv and argv[0] in ENGINE_COMMANDS:
        from .engine.cli import run  # heavy: only for engine commands

        return run(argv[0], argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args, default_registry()))
    except MindplugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
