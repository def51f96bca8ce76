"""Reading MindSpore checkpoints and loading them into a Cell by parameter name, strictly by default.

A checkpoint that is missing, unreadable, or does not fit the network raises ``CheckpointError``
naming the file and the parameters; nothing is ever silently left at random initialisation.
"""
from __future__ import annotations

import fnmatch
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._errors import CheckpointError

if TYPE_CHECKING:
    from ._spec import WeightsSpec

StateDict = Dict[str, np.ndarray]
Source = Union[str, "os.PathLike[str]", Mapping[str, np.ndarray]]

#: Entries a training checkpoint holds beside the network's weights (optimizer slots, loss-scale and
#: step counters as MindSpore's train wrappers and MindCV save them); they are not network parameters.
TRAINING_STATE_PREFIXES: Tuple[str, ...] = (
    "moments.", "moment.", "moment1.", "moment2.", "moment3.", "adam_m.", "adam_v.", "lamb_m.", "lamb_v.",
    "accum.", "accumulation.", "mean_grad.", "mean_square.", "linear.", "vhat.", "exp_avg.", "exp_avg_sq.",
    "prev_gradient.", "ema.", "swa.", "grad_accum.", "accu_grads.", "optimizer.",
)
#: MindCV keeps the EMA copy of each weight as ``ema.<name>`` in the same file.
EMA_PREFIX = "ema."
TRAINING_STATE_NAMES: frozenset = frozenset({
    "learning_rate", "global_step", "momentum", "beta1_power", "beta2_power", "scale_sense",
    "loss_scale", "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num",
    "weight_decay", "lr", "ema_decay", "epoch", "step",
})

_SHOWN = 8  # names listed in an error before "... and N more"


def is_training_state(name: str) -> bool:
    """True for optimizer / train-loop entries (``moments.*``, ``learning_rate``, ``global_step`` ...)."""
    return name in TRAINING_STATE_NAMES or name.startswith(TRAINING_STATE_PREFIXES)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class LoadReport:
    """What a load did; ``str(report)`` is a one-paragraph summary."""

    source: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    kept_init: List[str] = field(default_factory=list)
    training_state: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every network parameter came from the checkpoint, except those left at init on purpose."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{self.source}: loaded {len(self.loaded)} parameters"]
        if self.missing:
            parts.append(f"missing from the checkpoint ({len(self.missing)}): {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"not in the network ({len(self.unexpected)}): {_listing(self.unexpected)}")
        if self.mismatched:
            shown = [f"{n} checkpoint {tuple(a)} vs network {tuple(b)}" for n, a, b in self.mismatched]
            parts.append(f"shape mismatch ({len(shown)}): {_listing(shown)}")
        if self.dropped:
            parts.append(f"dropped on purpose ({len(self.dropped)}): {_listing(self.dropped)}")
        if self.kept_init:
            parts.append(f"left at initial values ({len(self.kept_init)}): {_listing(self.kept_init)}")
        if self.training_state:
            parts.append(f"ignored {len(self.training_state)} optimizer/training-state entries")
        return "; ".join(parts)


def check_checkpoint_file(path: Union[str, "os.PathLike[str]"]) -> str:
    """A missing, directory or empty path fails here, before MindSpore is imported or any work starts."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path!r}; check the path (relative paths are "
                              f"resolved from {os.getcwd()!r})")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path!r} is a directory; give the .ckpt file inside it")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file {path!r} is empty (0 bytes); the save or copy was "
                              "interrupted: save or copy it again")
    return path


def read_checkpoint(path: Union[str, "os.PathLike[str]"], text: Optional[Dict[str, str]] = None) -> StateDict:
    """All entries of a ``.ckpt`` (or ``.safetensors``) file as numpy arrays, keyed by name; text entries
    (metadata saved with ``append_dict``, such as a train state's loop record) go into ``text`` if given."""
    path = check_checkpoint_file(path)
    import mindspore as ms

    fmt = "safetensors" if path.endswith(".safetensors") else "ckpt"
    try:
        params = ms.load_checkpoint(path, format=fmt)
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError/TypeError for bad files
        raise CheckpointError(f"checkpoint file {path!r} is unreadable or truncated "
                              f"({os.path.getsize(path)} bytes): {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; "
                              "re-save or re-download the file") from exc
    if not params:
        raise CheckpointError(f"checkpoint file {path!r} holds no parameters; it is not a MindSpore "
                              "checkpoint or was saved from an empty network")
    state: StateDict = {}
    for name, value in params.items():
        if isinstance(value, str):  # text metadata saved with append_dict, not a tensor
            if text is not None:
                text[name] = value
            continue
        if value.dtype == ms.bfloat16:
            value = value.astype(ms.float32)
        state[name] = value.asnumpy()
    return state


def _as_state(source: Source, ema: bool = False) -> Tuple[StateDict, str]:
    if isinstance(source, Mapping):
        state = {k: np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v) for k, v in source.items()}
        label = "<state dict>"
    else:
        state, label = read_checkpoint(source), os.fspath(source)
    return (select_ema(state, label) if ema else state), label


def select_ema(state: StateDict, label: str = "<state dict>") -> StateDict:
    """The EMA weights (``ema.<name>``) of a checkpoint under the network's names."""
    averaged = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    if not averaged:
        raise CheckpointError(f"checkpoint {label!r} has no EMA weights ('{EMA_PREFIX}*' entries); it was "
                              "trained without ema: load it with ema=False")
    return averaged


def load_into(net, source: Source, *, strict: bool = True, drop: Iterable[str] = (),
              allow_missing: Iterable[str] = (), ema: bool = False, label: Optional[str] = None) -> LoadReport:
    """Copy checkpoint entries into ``net``'s parameters by name.

    ``drop``: fnmatch patterns of checkpoint entries to discard on purpose (e.g. a classifier for
    other classes); ``allow_missing``: patterns of network parameters that may stay at init.
    Optimizer/training-state entries are never counted as unexpected; ``ema`` loads the EMA copies
    (``ema.<name>``) instead of the raw weights. With ``strict`` any missing,
    unexpected or mis-shaped parameter raises ``CheckpointError`` before anything is written.
    """
    state, default_label = _as_state(source, ema)
    drop, allow_missing = tuple(drop), tuple(allow_missing)
    report = LoadReport(source=label or default_label)
    params = net.parameters_dict()
    usable: StateDict = {}
    for name, value in state.items():
        if name in params:
            if _matches(name, drop):
                report.dropped.append(name)
            elif tuple(value.shape) != tuple(params[name].shape):
                report.mismatched.append((name, tuple(value.shape), tuple(params[name].shape)))
            else:
                usable[name] = value
        elif is_training_state(name):
            report.training_state.append(name)
        elif _matches(name, drop):
            report.dropped.append(name)
        else:
            report.unexpected.append(name)
    for name in params:
        if name in usable or any(m[0] == name for m in report.mismatched):
            continue
        (report.kept_init if _matches(name, allow_missing) else report.missing).append(name)
    if strict and not report.complete:
        raise CheckpointError(_strict_message(report, net))
    import mindspore as ms

    for name, value in usable.items():
        param = params[name]
        param.set_data(ms.Tensor(value, dtype=param.dtype))
        report.loaded.append(name)
    return report


def _strict_message(report: LoadReport, net) -> str:
    lines = [f"checkpoint {report.source!r} does not fit {type(net).__name__}:"]
    if report.missing:
        lines.append(f"  {len(report.missing)} network parameters missing from the checkpoint: "
                     f"{_listing(report.missing)}")
    if report.unexpected:
        lines.append(f"  {len(report.unexpected)} checkpoint parameters the network does not have: "
                     f"{_listing(report.unexpected)}")
    if report.mismatched:
        shown = [f"{n} checkpoint {a} vs network {b}" for n, a, b in report.mismatched]
        lines.append(f"  {len(shown)} shape mismatches: {_listing(shown)}")
    lines.append("  fix: use the checkpoint of this model and configuration (num_classes, in_channels, "
                 "aux_logits), or pass strict=False to load only what matches")
    return "\n".join(lines)


def fold_input_channels(state: StateDict, name: str, in_channels: int) -> StateDict:
    """Adapt an RGB first-conv weight to ``in_channels``: 1 sums the colour filters (grey = R+G+B)."""
    weight = state.get(name)
    if weight is None or weight.ndim != 4 or weight.shape[1] == in_channels:
        return state
    if in_channels != 1 or weight.shape[1] != 3:
        raise CheckpointError(f"{name} has {weight.shape[1]} input channels in the checkpoint and the model "
                              f"{in_channels}; only 3 -> 1 can be folded: use in_channels=3 or 1")
    adapted = dict(state)
    adapted[name] = weight.sum(axis=1, keepdims=True)
    return adapted


def load_model_checkpoint(net, source: Source, *, strict: bool = True, first_conv: Optional[str] = None,
                          classifiers: Sequence[str] = (), optional: Sequence[str] = (),
                          ema: bool = False, label: Optional[str] = None) -> LoadReport:
    """Load a classification checkpoint into a (possibly reconfigured) model.

    ``first_conv``: the first conv's weight name, folded from RGB when the model takes one channel;
    ``classifiers``: prefixes of class-count layers (``classifier``, ``aux1.fc2``), dropped with a
    warning when the checkpoint was trained for another number of classes; ``optional``: fnmatch
    patterns of parts either side may lack (aux heads, a removed head): dropped from the checkpoint
    when the network lacks them, left at init with a warning when the checkpoint lacks them;
    ``ema``: load the checkpoint's EMA weights.
    """
    state, default_label = _as_state(source, ema)
    label = label or default_label
    params = net.parameters_dict()
    if first_conv is not None and first_conv in params:
        state = fold_input_channels(state, first_conv, int(params[first_conv].shape[1]))
    drop: List[str] = [p for p in optional if not _in_net(p, params)]  # parts the network lacks
    allow_missing: List[str] = []
    other_classes = []
    for prefix in classifiers:
        weight, net_weight = state.get(prefix + ".weight"), params.get(prefix + ".weight")
        if weight is not None and net_weight is not None and weight.shape[0] != net_weight.shape[0]:
            other_classes.append((prefix, weight.shape[0], net_weight.shape[0]))
            drop += [prefix + ".weight", prefix + ".bias"]
            allow_missing += [prefix + ".weight", prefix + ".bias"]
    if other_classes:
        names = ", ".join(p for p, _, _ in other_classes)
        warnings.warn(f"checkpoint {label!r} was trained for {other_classes[0][1]} classes, the model has "
                      f"{other_classes[0][2]}: {names} keep their initial weights (fine-tuning)",
                      UserWarning, stacklevel=3)
    absent = sorted(n for n in params if _matches(n, optional) and n not in state)
    if absent:
        allow_missing += absent
        warnings.warn(f"checkpoint {label!r} has no {_listing(absent)}: they keep their initial weights",
                      UserWarning, stacklevel=3)
    return load_into(net, state, strict=strict, drop=drop, allow_missing=allow_missing, label=label)


def _in_net(pattern: str, params: Mapping[str, object]) -> bool:
    return any(fnmatch.fnmatchcase(n, pattern) for n in params)


def load_weights(net, source: Union[Source, "WeightsSpec"], *, model: Optional[str] = None,
                 metadata: Optional[Mapping[str, object]] = None, strict: bool = True, fine_tune: bool = False,
                 ema: bool = False, label: Optional[str] = None) -> LoadReport:
    """Load weights into any Cell by parameter name: a checkpoint file, a state dict, or a ``WeightsSpec``
    (found in the local cache and checked against its sha256 first).

    ``model`` (a registry name) or ``metadata`` gives the spec metadata that adapts the load: ``optional``
    (fnmatch patterns of parts either side may lack, e.g. auxiliary heads), and with ``fine_tune`` also
    ``classifiers``/``classifier`` (layers whose size is the class count: left at init when the checkpoint
    has another count) and ``first_conv`` (folded from RGB for a 1-channel network).
    """
    from ._hub import cached_weights
    from ._spec import WeightsSpec

    if metadata is None and model is not None:
        from ._registry import default_registry

        metadata = default_registry().resolve(model, "model").spec.metadata
    meta = dict(metadata or {})
    if isinstance(source, WeightsSpec):
        source = str(cached_weights(source))
    classifiers = list(meta.get("classifiers") or ([meta["classifier"]] if meta.get("classifier") else []))
    first_conv = meta.get("first_conv") if fine_tune else None
    if first_conv and not str(first_conv).endswith(".weight"):
        first_conv = f"{first_conv}.weight"
    return load_model_checkpoint(net, source, strict=strict, first_conv=first_conv,
                                 classifiers=classifiers if fine_tune else (),
                                 optional=tuple(meta.get("optional") or ()), ema=ema, label=label)
