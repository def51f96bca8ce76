"""A trained network back from its checkpoint, for validate, predict and export.

The recipe is the ``-c`` file when given, else the ``config.yaml`` the training run saved beside its
checkpoints; the class names come from ``class_names.txt`` there, or ImageNet-1k's for 1000 classes. The
engine loads the weights into whatever Cell the model's factory returns, by name and strictly.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._checkpoint import check_checkpoint_file, is_training_state
from .._errors import CheckpointError
from . import build, state as st
from .recipe import Recipe, load_recipe

IMAGENET_NAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")


def run_dir(ckpt_path: str) -> str:
    """The training run's directory of a checkpoint (weights file or ``state/`` file)."""
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    return os.path.dirname(folder) if os.path.basename(folder) == st.STATE_DIR else folder


def recipe_for(ckpt_path: str, config_path: Optional[str], overrides: Sequence[Tuple[str, Any]]) -> Recipe:
    """The recipe a checkpoint was trained with (or ``-c``), with command-line overrides on top."""
    if not config_path and ckpt_path:
        saved = os.path.join(run_dir(ckpt_path), "config.yaml")
        if os.path.isfile(saved):
            config_path = saved
    recipe = load_recipe(config_path or None, overrides)
    if config_path and os.path.basename(config_path) == "config.yaml":
        # a saved run config: its own resume settings must not leak into inference
        recipe = recipe.replace(resume="", resume_opt=False)
    return recipe


def check_checkpoint(path: str) -> None:
    """Missing or empty checkpoints fail here, before MindSpore or any data is touched."""
    if not path:
        raise CheckpointError("no checkpoint given: pass --ckpt_path PATH (a .ckpt from training, or the seed's "
                              "weights file); evaluating random weights would be meaningless")
    check_checkpoint_file(path)


def weights_of(path: str, *, ema: Optional[bool] = None) -> Tuple[Dict[str, Any], Optional[st.LoopState]]:
    """The network weights in a checkpoint, read once: from a train-state file its EMA weights (when it has
    them and ``ema`` is not False) or its raw weights; from a weights file every entry."""
    from mindplug._checkpoint import read_checkpoint, select_ema

    text: Dict[str, str] = {}
    state = read_checkpoint(path, text)
    if st.META_KEY not in text:
        return state, None
    loop = st.LoopState.from_json(text[st.META_KEY], path)
    if ema is not False and any(k.startswith("ema.") for k in state):
        return select_ema(state, path), loop
    return state, loop


def infer_num_classes(recipe: Recipe, ckpt_path: str, state: Optional[dict] = None) -> int:
    """num_classes from the recipe, the run's class_names.txt, or the checkpoint's last 2-D weight."""
    if recipe["num_classes"]:
        return int(recipe["num_classes"])
    names = os.path.join(run_dir(ckpt_path), "class_names.txt") if ckpt_path else ""
    if names and os.path.isfile(names):
        with open(names, encoding="utf-8") as handle:
            return len([line for line in handle if line.strip()])
    if state:
        matrices = [v for v in state.values() if getattr(v, "ndim", 0) == 2]
        if matrices:
            return int(matrices[-1].shape[0])
    raise CheckpointError(f"cannot tell how many classes {ckpt_path!r} has: pass --num_classes N")


def trained_class_names(ckpt_path: str) -> Optional[List[str]]:
    """The training split's class names a checkpoint carries (or its run's class_names.txt), if known."""
    import json

    import mindspore as ms

    try:
        found = ms.load_checkpoint(ckpt_path, choice_func=lambda name: name == st.CLASSES_KEY).get(st.CLASSES_KEY)
    except Exception:  # noqa: BLE001 - older checkpoints carry no names; errors surface when loading weights
        found = None
    if isinstance(found, str):
        return list(json.loads(found))
    names = os.path.join(run_dir(ckpt_path), "class_names.txt")
    if os.path.isfile(names):
        with open(names, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    return None


def class_names(ckpt_path: str, num_classes: int, names_file: Optional[str] = None) -> List[str]:
    """Names for each class index: a given file, the run's class_names.txt, ImageNet-1k's, or indices."""
    candidates = [names_file] if names_file else []
    if ckpt_path:
        candidates.append(os.path.join(run_dir(ckpt_path), "class_names.txt"))
    if num_classes == 1000:
        candidates.append(IMAGENET_NAMES)
    for path in candidates:
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                names = [line.strip() for line in handle if line.strip()]
            if len(names) == num_classes:
                return names
    return [str(i) for i in range(num_classes)]


def load_network(recipe: Recipe, ckpt_path: str, num_classes: Optional[int] = None, *, ema: Optional[bool] = None,
                 kernels: str = "kernels", model: Optional[build.Resolved] = None) -> Tuple[Any, int]:
    """(network in eval mode with the checkpoint's weights, num_classes); strict: every parameter must fit."""
    check_checkpoint(ckpt_path)
    state, loop = weights_of(ckpt_path, ema=ema)
    classes = num_classes or (loop.num_classes if loop else 0) or infer_num_classes(recipe, ckpt_path, state)
    matrices = [v for k, v in state.items() if getattr(v, "ndim", 0) == 2 and not is_training_state(k)]
    if matrices and int(matrices[-1].shape[0]) != classes:
        raise CheckpointError(f"{ckpt_path!r} classifies {int(matrices[-1].shape[0])} classes but the config says "
                              f"num_classes = {classes}; drop --num_classes or use the matching checkpoint")
    model = model or build.resolve(recipe.sections.model.model, "model")
    net, _ = build.build_model(recipe.sections.model, classes, given=recipe.given, resolved=model, kernels=kernels)
    if loop is not None:  # a state file also holds optimizer slots: take the network's entries
        names = set(net.parameters_dict())
        state = {k: v for k, v in state.items() if k in names}
    build.load_model_weights(net, model, state, fine_tune=False, label=ckpt_path)
    net.set_train(False)
    return net, classes
