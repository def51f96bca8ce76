"""``mindplug train|validate|predict|export|bench`` and the seed's ``train.py``/``validate.py``.

``run(command, argv)`` returns the exit code: 0 done, 2 a user error (bad config, data or checkpoint,
reported in one message before any long work), 128+N stopped by signal N after saving.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Sequence

from .._errors import MindplugError
from .config import help_text, load_config, parse_overrides

USAGE = {
    "train": "mindplug train -c CONFIG [--data_dir DIR] [--key value ...]   (also: python train.py ...)",
    "validate": "mindplug validate -c CONFIG --data_dir DIR --ckpt_path CKPT [--key value ...]",
    "bench": "mindplug bench -c CONFIG [--steps N] [--phase train|infer|both] [--json] [--key value ...]",
}


def _wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def _recipe_help(command: str) -> int:
    print(f"usage: {USAGE[command]}\n\nEvery recipe key can be given as --key value (booleans also as a bare "
          f"--flag; lists as 0.08,1.0; component arguments as --model.aux_logits True):{help_text()}")
    return 0


def cmd_train(argv: List[str]) -> int:
    if _wants_help(argv):
        return _recipe_help("train")
    from .trainer import train

    path, pairs, _ = parse_overrides(argv)
    return train(load_config(path, pairs))


def cmd_validate(argv: List[str]) -> int:
    if _wants_help(argv):
        return _recipe_help("validate")
    from .evaluate import validate

    path, pairs, extra = parse_overrides(argv, extra_flags=("json",))
    cfg = load_config(path, pairs)
    result = validate(cfg)
    if extra.get("json"):
        print(json.dumps(result, indent=2))
    else:
        print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
              f"({result['count']} images, {result['seconds']:.1f} s)")
    return 0


def cmd_bench(argv: List[str]) -> int:
    if _wants_help(argv):
        return _recipe_help("bench")
    from .bench import bench, render
    from .components import apply_plugin_selection
    from .runtime import init_runtime, launched_by_msrun

    path, pairs, extra = parse_overrides(argv, extra_flags=("steps", "phase", "json"))
    cfg = load_config(path, pairs)
    apply_plugin_selection(cfg)
    rt = init_runtime(cfg, need_distribution=launched_by_msrun())
    steps = int(extra.get("steps", 5))
    phase = str(extra.get("phase", "both"))
    if phase not in ("train", "infer", "both"):
        raise MindplugError(f"--phase {phase!r}: use train, infer or both")
    rows = bench(cfg, steps=steps, which=phase, workers=rt.world)
    if rt.is_main:  # one table for the group, as training logs once
        print(json.dumps(rows, indent=2) if extra.get("json") else render(rows))
    return 0


def _model_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint from training or the seed's weights")
    parser.add_argument("-c", "--config", default=None,
                        help="recipe (default: the config.yaml saved beside the checkpoint)")
    parser.add_argument("--model", default=None, help="model registry name (overrides the recipe)")
    parser.add_argument("--num_classes", type=int, default=None, help="default: from the run or the checkpoint")
    parser.add_argument("--image_resize", type=int, default=None, help="input size (default: the recipe's)")
    parser.add_argument("--in_channels", type=int, default=None)
    parser.add_argument("--mode", default=None, help="0/graph or 1/pynative")
    return parser


def _overrides(args: argparse.Namespace) -> List[tuple]:
    return [(k, getattr(args, k)) for k in ("model", "num_classes", "image_resize", "in_channels", "mode")
            if getattr(args, k) is not None]


def cmd_predict(argv: List[str]) -> int:
    parser = _model_parser("mindplug predict", "top-k classes of image files")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--class_names", default=None, help="a text file with one class name per line")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    from .components import apply_plugin_selection
    from .inference import check_checkpoint, class_names, load_network, recipe_for
    from .predict import predict, read_image, render
    from .runtime import init_runtime

    check_checkpoint(args.ckpt_path)
    for path in args.images:
        read_image(path)  # a bad image fails before the model is built
    cfg = recipe_for(args.ckpt_path, args.config, _overrides(args))
    apply_plugin_selection(cfg)
    init_runtime(cfg, need_distribution=False)
    net, classes = load_network(cfg, args.ckpt_path, args.num_classes)
    names = class_names(args.ckpt_path, classes, args.class_names)
    print(render(predict(net, cfg, args.images, names, args.topk), args.json))
    return 0


def cmd_export(argv: List[str]) -> int:
    parser = _model_parser("mindplug export", "write a deployable MindIR or ONNX file")
    parser.add_argument("--format", default="MINDIR", help="MINDIR or ONNX")
    parser.add_argument("--output", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--batch_size", type=int, default=1, help="batch dimension of the exported input")
    args = parser.parse_args(argv)
    from .components import apply_plugin_selection
    from .export import FORMATS, default_output, export_network, portable_blocks
    from .inference import check_checkpoint, load_network, recipe_for
    from .runtime import init_runtime

    if args.format.upper() not in FORMATS:
        raise MindplugError(f"--format {args.format!r} is not supported; use one of {', '.join(FORMATS)}")
    check_checkpoint(args.ckpt_path)
    cfg = recipe_for(args.ckpt_path, args.config, _overrides(args))
    apply_plugin_selection(cfg)
    init_runtime(cfg, need_distribution=False)
    with portable_blocks():
        net, _ = load_network(cfg, args.ckpt_path, args.num_classes)
    path = export_network(net, fmt=args.format, output=default_output(args.ckpt_path, args.format, args.output),
                          batch_size=args.batch_size, in_channels=cfg.in_channels, size=cfg.image_resize)
    print(f"exported {args.format.upper()} for input {args.batch_size}x{cfg.in_channels}x{cfg.image_resize}x"
          f"{cfg.image_resize}: {path}")
    return 0


COMMANDS: Dict[str, Callable[[List[str]], int]] = {
    "train": cmd_train, "validate": cmd_validate, "predict": cmd_predict, "export": cmd_export, "bench": cmd_bench,
}


def run(command: str, argv: List[str]) -> int:
    """Run one engine command; user errors print one ``error:`` line and return 2."""
    handler = COMMANDS.get(command)
    if handler is None:
        print(f"error: unknown command {command!r}; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return handler(list(argv))
    except MindplugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: not an error of the command
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main_script(command: str) -> None:
    """Entry of the root ``train.py`` / ``validate.py`` scripts."""
    sys.exit(run(command, sys.argv[1:]))
