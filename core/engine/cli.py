"""``mindplug train|validate|predict|export|bench`` and the seed's ``train.py``/``validate.py``.

Every command takes the recipe: ``-c CONFIG`` and any key as ``--key value`` (the options are generated
from the key table, so ``--help`` lists them all), plus its own options. ``run(command, argv)`` returns
the exit code: 0 done, 2 a user error (bad config, data or checkpoint, reported in one ``error:`` line
before any long work), 128+N stopped by signal N after saving.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

from .._console import Parser, guarded
from .build import TRACEBACK_ENV
from .._errors import ConfigError, DataError, MindplugError
from .keys import COMPONENT_KEYS, SECTIONS, Resume, all_keys
from .recipe import Recipe, choices_of, load_recipe, type_name, unknown_key

_BARE_TRUE = (bool, Resume)  # types whose option may be given without a value
USAGE_TAIL = {"predict": " --ckpt_path CKPT IMAGE [IMAGE ...]", "export": " --ckpt_path CKPT [--format F]",
              "validate": " --ckpt_path CKPT", "bench": " [--steps N] [--phase P]"}
Overrides = List[Tuple[str, Any]]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _recipe_parser(command: str, description: str) -> Parser:
    parser = Parser(prog=f"mindplug {command}", description=description,
                    usage=f"mindplug {command} [-c CONFIG] [--key value ...]{USAGE_TAIL.get(command, '')}",
                    epilog="Booleans also as a bare --flag; lists as 0.08,1.0; component arguments as "
                           "--model.aux_logits True.")
    parser.add_argument("-c", "--config", default=None, help="the YAML recipe")
    keys = all_keys()
    for section in SECTIONS:
        group = parser.add_argument_group(f"recipe keys: {section}")
        for key in (k for k in keys.values() if k.section == section):
            bare = key.type in _BARE_TRUE
            choices = choices_of(key)
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else type_name(key.type).upper()
            group.add_argument(f"--{key.name}", dest=key.name, default=argparse.SUPPRESS,
                               nargs="?" if bare else None, const=True if bare else None, metavar=metavar,
                               help=f"{key.help} (default: {_default_text(key.name, key.default)})")
    return parser


def _default_text(name: str, default: Any) -> str:
    """A component key's default is whatever an installed plugin declares; help shows which it is now."""
    if name not in COMPONENT_KEYS or default is not None:
        return repr(default)
    from .._registry import default_registry

    try:
        return f"{default_registry().default(COMPONENT_KEYS[name]).spec.name!r}, the installed default"
    except MindplugError:
        return "none installed: set it"


def _prescan(argv: Sequence[str], parser: Parser) -> Tuple[List[str], Overrides]:
    """Normalise ``--a-b`` to ``--a_b``, take out ``--component.argument value`` pairs, and reject an
    unknown ``--key`` with close matches (argparse would only say 'unrecognized')."""
    options = {s for action in parser._actions for s in action.option_strings}
    rest: List[str] = []
    dotted: Overrides = []
    args = list(argv)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("--") or len(token) == 2:
            rest.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        norm = name.replace("-", "_")
        base, dot, arg = norm.partition(".")
        if dot:
            if base not in all_keys():
                raise unknown_key(base, "command line")
            if base not in COMPONENT_KEYS:
                raise ConfigError(f"command line: '{norm}': only component keys ({', '.join(COMPONENT_KEYS)}) "
                                  f"take .argument overrides")
            if not eq:
                if i >= len(args) or args[i].startswith("--"):
                    raise ConfigError(f"command line: option --{norm} needs a value")
                value, i = args[i], i + 1
            dotted.append((norm, value))
            continue
        if f"--{norm}" not in options:
            if f"--{name}" in options:
                norm = name
            else:
                raise unknown_key(norm, "command line")
        rest.append(f"--{norm}" + (f"={value}" if eq else ""))
    return rest, dotted


def parse(parser: Parser, argv: Sequence[str]) -> Tuple[argparse.Namespace, Overrides]:
    """(command options, the recipe overrides given on the command line, in order)."""
    rest, dotted = _prescan(argv, parser)
    args = parser.parse_args(rest)
    keys = all_keys()
    first: Dict[str, int] = {}
    for index, token in enumerate(rest):
        first.setdefault(token[2:].partition("=")[0], index)
    overrides: Overrides = sorted(((k, v) for k, v in vars(args).items() if k in keys),
                                  key=lambda kv: first.get(kv[0], len(rest))) + dotted
    for key in keys:
        if hasattr(args, key):
            delattr(args, key)
    return args, overrides


# ---------------------------------------------------------------- commands

def cmd_train(argv: List[str]) -> int:
    from .trainer import train

    parser = _recipe_parser("train", "train a model from a recipe (also: python train.py ...)")
    args, overrides = parse(parser, argv)
    return train(load_recipe(args.config, overrides))


def cmd_validate(argv: List[str]) -> int:
    from .evaluate import validate
    from .jobs import evaluation_job

    parser = _recipe_parser("validate", "top-1, top-5 and loss of a checkpoint on the validation split")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args, overrides = parse(parser, argv)
    result = validate(evaluation_job(load_recipe(args.config, overrides)))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
              f"({result['count']} images, {result['seconds']:.1f} s)")
    return 0


def cmd_bench(argv: List[str]) -> int:
    from .bench import measure, measure_data, render
    from .jobs import bench_job, data_bench_job

    parser = _recipe_parser("bench", "the seed's performance columns for this machine, on synthetic data; "
                                     "--phase data: the recipe's training pipeline alone, on its dataset")
    parser.add_argument("--steps", type=_positive_int, default=5, help="timed steps (batches) per phase")
    parser.add_argument("--phase", choices=("train", "infer", "both", "data"), default="both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, overrides = parse(parser, argv)
    if args.phase == "data":
        job = data_bench_job(load_recipe(args.config, overrides))
        rows = measure_data(job, steps=args.steps)
    else:
        job = bench_job(load_recipe(args.config, overrides), steps=args.steps, train=args.phase != "infer")
        rows = measure(job, steps=args.steps, which=args.phase)
    if job.runtime.is_main:  # one table for an msrun group, as training logs once
        print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 0


def _trained_recipe(args: argparse.Namespace, overrides: Overrides) -> Recipe:
    from .inference import recipe_for

    ckpt = dict(overrides).get("ckpt_path")
    if not ckpt:
        raise ConfigError("no checkpoint given: pass --ckpt_path PATH (a .ckpt from training, or the seed's "
                          "weights file)")
    return recipe_for(str(ckpt), args.config, overrides)


def cmd_predict(argv: List[str]) -> int:
    from .inference import check_checkpoint
    from .jobs import inference_job
    from .predict import predict_files, read_image

    parser = _recipe_parser("predict", "top-k classes of image files (the recipe defaults to the config.yaml "
                                       "saved beside the checkpoint)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--topk", type=_positive_int, default=5)
    parser.add_argument("--class_names", default=None, help="a text file with one class name per line")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args, overrides = parse(parser, argv)
    check_checkpoint(str(dict(overrides).get("ckpt_path") or ""))
    for image in args.images:
        read_image(image)  # a bad image fails before the model is built
    job = inference_job(_trained_recipe(args, overrides), names_file=args.class_names)
    print(predict_files(job, args.images, topk=args.topk, as_json=args.json))
    return 0


def cmd_export(argv: List[str]) -> int:
    from .export import FORMATS, export_job
    from .inference import check_checkpoint
    from .jobs import inference_job

    parser = _recipe_parser("export", "write a deployable MindIR or ONNX file; --batch_size is the exported "
                                      "input's batch dimension (default 1)")
    parser.add_argument("--format", default="MINDIR", type=str.upper, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", default=None, help="output file (default: beside the checkpoint)")
    args, overrides = parse(parser, argv)
    if args.format not in FORMATS:
        raise ConfigError(f"--format {args.format!r} is not supported; use one of {', '.join(FORMATS)}")
    check_checkpoint(str(dict(overrides).get("ckpt_path") or ""))
    recipe = _trained_recipe(args, overrides)
    batch = recipe["batch_size"] if "batch_size" in dict(overrides) else 1
    job = inference_job(recipe, portable=True)
    print(export_job(job, fmt=args.format, output=args.output, batch_size=batch))
    return 0


def cmd_check_data(argv: List[str]) -> int:
    from .jobs import check_data

    parser = _recipe_parser("check-data", "decode every image of the recipe's training and validation splits "
                                          "and list the unreadable ones, before a long run")
    parser.add_argument("--split", choices=("train", "val", "both"), default="both")
    args, overrides = parse(parser, argv)
    bad = check_data(load_recipe(args.config, overrides), splits=args.split)
    if bad:
        raise DataError(f"{bad} unreadable image(s), listed above: fix or delete them, or skip them with "
                        f"--dataset.on_error skip")
    return 0


COMMANDS: Dict[str, Callable[[List[str]], int]] = {
    "train": cmd_train, "validate": cmd_validate, "predict": cmd_predict, "export": cmd_export, "bench": cmd_bench,
    "check-data": cmd_check_data,
}


def run(command: str, argv: List[str]) -> int:
    """Run one engine command; user errors print one ``error:`` line and return 2. An error raised inside
    MindSpore or a kernel is one line too (its traceback with ``MINDPLUG_TRACEBACK=1``)."""
    handler = COMMANDS.get(command)
    if handler is None:
        print(f"error: unknown command {command!r}; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("MINDPLUG_KERNELS_QUIET", "1")  # a kernel's refusal becomes this command's error line
    try:
        with _warnings_as_lines():
            return guarded(handler, list(argv))
    except MindplugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence of the one-line promise
        if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        kernel = _kernel_message(exc)
        text = kernel or f"{type(exc).__name__}: {_first_line(exc)}"
        print(f"error: {text} (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        return 2 if kernel else 1


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not set(line.strip()) <= set("-=")]
    return lines[0] if lines else "(no message)"


def _kernel_message(exc: BaseException) -> str:
    """The message a mindplug kernel gave when it refused its inputs (MindSpore's own error hides it)."""
    for line in str(exc).splitlines():
        if "mindplug kernel" in line:
            return line.strip()
    if "AOT kernel" not in str(exc):  # MindSpore's words for a Custom op that returned an error
        return ""
    try:
        from mindplug.ops import _library

        return _library.last_error(any_thread=True) if _library.available() else ""
    except Exception:  # noqa: BLE001 - no kernel message is as good as none
        return ""


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Python warnings as ``warning: message`` lines, without file and line."""
    previous = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show  # type: ignore[assignment]
    try:
        yield
    finally:
        warnings.showwarning = previous


def main_script(command: str) -> None:
    """Entry of the root ``train.py`` / ``validate.py`` scripts."""
    sys.exit(run(command, sys.argv[1:]))

