"""Training checkpoints that never lose work: weights files for users, state files for resuming.

Each save writes two files, each atomically (a temp file in the same directory, fsync, ``os.replace``),
so a crash mid-write leaves the previous checkpoint intact:

- ``<dir>/<model>-<epoch>_<step>.ckpt``: the network's parameters only (the EMA weights when EMA is on),
  loadable by name into the model, as the reference system's checkpoints are;
- ``<dir>/state/<model>-<epoch>_<step>.ckpt``: the raw weights, optimizer slots and step counter,
  EMA weights, loss-scale state, gradient-accumulation buffers and a JSON record of the loop position
  (epoch, step, global step, seed, steps per epoch, history, best metric).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._errors import CheckpointError

META_KEY = "mindplug.train_state"
#: text entries of weights and state files: the training split's class names (JSON), the best's epoch
CLASSES_KEY = "mindplug.class_names"
BEST_EPOCH_KEY = "mindplug.best_epoch"
STATE_DIR = "state"
FORMAT_VERSION = 1
_NAME = re.compile(r"^(?P<model>.+)-(?P<epoch>\d+)_(?P<step>\d+)\.ckpt$")


@dataclass
class LoopState:
    """Where the loop stands: ``epoch`` epochs are complete, plus ``step`` steps of the next one."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    seed: int = 0
    steps_per_epoch: int = 0
    epoch_size: int = 0
    world: int = 1
    batch_size: int = 0
    model: str = ""
    num_classes: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    loss_sum: float = 0.0  # the training loss summed over the steps of the epoch so far, and their count
    loss_steps: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    saved: List[str] = field(default_factory=list)
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str) -> "LoopState":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"train state {source!r} has a damaged loop record: {exc}") from None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def atomic_save(entries: Any, path: str, append: Optional[Dict[str, Any]] = None, point: str = "") -> None:
    """``mindspore.save_checkpoint`` through the one atomic writer (temp file, fsync, rename)."""
    import mindspore as ms

    from .._atomic import atomic_write

    atomic_write(path, lambda tmp: ms.save_checkpoint(entries, tmp, append_dict=append), point=point)


def best_path(folder: str, model: str) -> str:
    return os.path.join(folder, f"{model.replace(':', '_')}-best.ckpt")


def next_best_path(folder: str, model: str) -> str:
    """Where a new best is written before the state that records it commits it."""
    return os.path.join(folder, f".{model.replace(':', '_')}-best.next.ckpt")


def commit_best(folder: str, model: str) -> None:
    from .._atomic import fault_point, fsync_dir

    fault_point("best.commit")
    os.replace(next_best_path(folder, model), best_path(folder, model))
    fsync_dir(folder)


def recover_best(folder: str, model: str, best_epoch: Optional[int]) -> None:
    """After a crash: a next best that the last state committed becomes the best; any other is dropped."""
    pending = next_best_path(folder, model)
    if not os.path.isfile(pending):
        return
    try:
        import mindspore as ms

        epoch = ms.load_checkpoint(pending, choice_func=lambda name: name == BEST_EPOCH_KEY).get(BEST_EPOCH_KEY)
    except Exception:  # noqa: BLE001 - an unreadable pending file was never committed
        epoch = None
    if best_epoch is not None and str(epoch) == str(best_epoch):
        commit_best(folder, model)
    else:
        os.remove(pending)


def entries_of(params: Sequence[Any], prefix: str = "") -> List[Dict[str, Any]]:
    """``[{'name', 'data'}]`` records for ``save_checkpoint``; copies, so training can go on meanwhile."""
    return [{"name": prefix + p.name, "data": p.value().copy() if hasattr(p, "value") else p} for p in params]


def checkpoint_name(model: str, epoch: int, step: int) -> str:
    """The reference system's file name: ``<model>-<epoch>_<step>.ckpt`` (epoch counted from 1)."""
    return f"{model.replace(':', '_')}-{epoch}_{step}.ckpt"


def state_path_for(weights_path: str) -> str:
    """The state file that belongs to a weights file."""
    return os.path.join(os.path.dirname(os.path.abspath(weights_path)), STATE_DIR, os.path.basename(weights_path))


def read_state(path: str) -> Tuple[LoopState, Dict[str, Any]]:
    """(loop record, {name: Parameter}) of a state file; a clear error when it is not one."""
    import mindspore as ms

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint to resume from not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes): it was cut off while being written")
    try:
        params = ms.load_checkpoint(path)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path!r} is unreadable or truncated: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    meta = params.pop(META_KEY, None)
    if not isinstance(meta, str):
        sibling = state_path_for(path)
        hint = f"; its train state would be {sibling!r}" if os.path.isfile(sibling) else ""
        raise CheckpointError(f"{path!r} holds weights only, not a training state, so it cannot be resumed "
                              f"exactly{hint}. Resume with --resume (the newest state in ckpt_save_dir) or a "
                              f"file under '{STATE_DIR}/'; or start from these weights with --ckpt_path")
    return LoopState.from_json(meta, path), params


def newest_state(save_dir: str) -> Optional[str]:
    """The newest complete state file in ``save_dir/state`` by its loop position, or None."""
    best: Optional[Tuple[Tuple[int, int, float], str]] = None
    for path in glob.glob(os.path.join(save_dir, STATE_DIR, "*.ckpt")):
        if os.path.basename(path).startswith("."):
            continue  # an unfinished temp file
        match = _NAME.match(os.path.basename(path))
        position = (int(match["epoch"]), int(match["step"])) if match else (-1, -1)
        key = (position[0], position[1], os.path.getmtime(path))
        if best is None or key > best[0]:
            best = (key, path)
    return best[1] if best else None


@dataclass(frozen=True)
class ResumePoint:
    """A train-state file read once: its path, loop record and entries."""

    path: str
    loop: LoopState
    params: Dict[str, Any]


def resolve_resume(resume: Any, ckpt_path: str, resume_opt: bool, save_dir: str) -> Optional[ResumePoint]:
    """The state a run continues from, or None for a fresh run. Errors are raised before any work."""
    if isinstance(resume, str) and resume:
        path = resume
    elif resume is True:
        path = newest_state(save_dir) or ""
        if not path:
            raise CheckpointError(f"--resume: no train state found in {os.path.join(save_dir, STATE_DIR)!r}; "
                                  f"check ckpt_save_dir, or give the checkpoint path: --resume PATH")
    elif ckpt_path and resume_opt:
        path = ckpt_path
    else:
        return None
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint to resume from not found: {path!r}")
    sibling = state_path_for(path)
    if os.path.abspath(sibling) != os.path.abspath(path) and os.path.isfile(sibling):
        path = sibling  # a weights file: continue from the state saved with it
    try:
        loop, params = read_state(path)
    except CheckpointError as exc:
        older = _older_readable(save_dir, path) if resume is True else None
        if older is None:
            raise
        raise CheckpointError(f"{exc}; an older train state is readable: continue from it with --resume {older}, "
                              f"or delete the damaged file") from None
    return ResumePoint(path, loop, params)


def _older_readable(save_dir: str, damaged: str) -> Optional[str]:
    """The newest readable state in ``save_dir/state`` other than ``damaged``."""
    candidates = []
    for path in glob.glob(os.path.join(save_dir, STATE_DIR, "*.ckpt")):
        match = _NAME.match(os.path.basename(path))
        if match and os.path.abspath(path) != os.path.abspath(damaged):
            candidates.append(((int(match["epoch"]), int(match["step"])), path))
    for _, path in sorted(candidates, reverse=True):
        try:
            read_state(path)
            return path
        except CheckpointError:
            continue
    return None


def prune(save_dir: str, keep: int, saved: List[str], scores: Dict[str, float], policy: str) -> List[str]:
    """Delete weights+state files beyond ``keep``: the oldest (latest_k) or the least accurate (top_k)."""
    if len(saved) <= keep:
        return saved
    if policy == "top_k" and scores:
        ranked = sorted(saved, key=lambda n: (scores.get(n, float("-inf")), saved.index(n)), reverse=True)
        kept = [n for n in saved if n in ranked[:keep]]
    else:
        kept = saved[-keep:]
    for name in saved:
        if name in kept:
            continue
        for path in (os.path.join(save_dir, name), os.path.join(save_dir, STATE_DIR, name)):
            if os.path.exists(path):
                os.remove(path)
    return kept


#: the files a run writes into its ckpt_save_dir (besides checkpoints)
RUN_FILES = ("config.yaml", "runtime.yaml", "class_names.txt", "log.csv", "log.json", "curves.png")


def run_files(folder: str) -> List[str]:
    """The files of an earlier run in ``folder``: its records, weights files and train states."""
    found = [os.path.join(folder, n) for n in RUN_FILES if os.path.isfile(os.path.join(folder, n))]
    found += sorted(glob.glob(os.path.join(glob.escape(folder), "*.ckpt")))
    found += sorted(glob.glob(os.path.join(glob.escape(folder), STATE_DIR, "*.ckpt")))
    found += sorted(glob.glob(os.path.join(glob.escape(folder), ".*-best.next.ckpt")))
    return found


def claim_run_dir(folder: str, overwrite: bool) -> None:
    """A fresh run never replaces another run's files silently: refused, or (``overwrite``) removed first."""
    found = run_files(folder)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(os.path.relpath(p, folder) for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise CheckpointError(f"ckpt_save_dir {folder!r} already holds a run ({shown}): continue it with --resume "
                              f"True, write the new run elsewhere with --ckpt_save_dir DIR, or replace the old one "
                              f"with --overwrite True")
    for path in found:
        os.remove(path)
