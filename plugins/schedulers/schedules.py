"""Per-step learning rates, with the semantics and values of MindCV's ``create_scheduler``.

Every schedule is a linear warmup over ``warmup_epochs`` (from ``lr * warmup_factor`` towards ``lr``)
followed by the named decay over the remaining epochs; a cosine decay shorter than that is padded with
``min_lr``. Epoch counts inside the decay (``decay_epochs``, milestones) start after the warmup, as in
MindCV. With ``lr_epoch_stair`` the rate changes once per epoch, otherwise at every step.
The result is a float32 array with one rate per step: a resumed run indexes it at its global step.
"""
from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Callable, Optional, Sequence

import numpy as np

from mindplug import ConfigError

#: maps main-phase step indices to learning rates
Decay = Callable[[np.ndarray], np.ndarray]


# ---- argument checks -------------------------------------------------------------------------------

def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _real(name: str, value: object, minimum: float = 0.0, *, strict: bool = False,
          maximum: Optional[float] = None) -> float:
    bad = isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
    if not bad:
        bad = value <= minimum if strict else value < minimum
        bad = bad or (maximum is not None and value > maximum)
    if bad:
        bound = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ConfigError(f"{name} must be a number {bound}, got {value!r}.")
    return float(value)


def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}.")
    return str(value)


def _epochs(steps: np.ndarray, steps_per_epoch: int, stair: bool) -> np.ndarray:
    """Position of each step in epochs: fractional, or the whole epoch when the rate changes per epoch."""
    position = steps / steps_per_epoch
    return np.floor(position) if stair else position


def _main_epochs(name: str, num_epochs: object, warmup_epochs: object) -> int:
    """Epochs after the warmup; a warmup longer than the run is an error."""
    epochs = _int(f"{name}: num_epochs", num_epochs, 1)
    warmup = _int(f"{name}: warmup_epochs", warmup_epochs, 0)
    if warmup > epochs:
        raise ConfigError(f"{name}: warmup_epochs={warmup} is more than num_epochs={epochs}; "
                          f"lower warmup_epochs or train longer.")
    return epochs - warmup


# ---- warmup + decay --------------------------------------------------------------------------------

def _schedule(name: str, decay: Callable[[np.ndarray, int], np.ndarray], *, lr: float, steps_per_epoch: int,
              num_epochs: int, warmup_epochs: int, warmup_factor: float, lr_epoch_stair: bool) -> np.ndarray:
    """Warmup steps, then ``decay(main-phase step indices, main-phase epochs)``, as one float32 array."""
    _real(f"{name}: lr", lr, 0.0, strict=True)
    spe = _int(f"{name}: steps_per_epoch", steps_per_epoch, 1)
    main_epochs = _main_epochs(name, num_epochs, warmup_epochs)
    warmup = int(warmup_epochs)
    factor = _real(f"{name}: warmup_factor", warmup_factor, 0.0, maximum=1.0)
    if not isinstance(lr_epoch_stair, bool):
        raise ConfigError(f"{name}: lr_epoch_stair must be true or false, got {lr_epoch_stair!r}.")
    warm_steps = np.arange(warmup * spe)
    warm = lr * (factor + (1.0 - factor) * _epochs(warm_steps, spe, lr_epoch_stair) / max(warmup, 1))
    main = decay(np.arange(main_epochs * spe), main_epochs)
    return np.concatenate([warm, main]).astype(np.float32)


def constant(*, lr: float, steps_per_epoch: int, num_epochs: int, warmup_epochs: int = 0,
             warmup_factor: float = 0.0, lr_epoch_stair: bool = False) -> np.ndarray:
    """``lr`` at every step after the warmup."""
    return _schedule("constant", lambda steps, _: np.full(steps.shape, lr, np.float64), lr=lr,
                     steps_per_epoch=steps_per_epoch, num_epochs=num_epochs, warmup_epochs=warmup_epochs,
                     warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def cosine_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, min_lr: float = 1e-6,
                 warmup_epochs: int = 0, warmup_factor: float = 0.0, decay_epochs: Optional[int] = None,
                 num_cycles: int = 1, cycle_decay: float = 1.0, lr_epoch_stair: bool = False) -> np.ndarray:
    """Cosine from ``lr`` to ``min_lr`` over ``decay_epochs`` (default: all epochs after the warmup),
    repeated ``num_cycles`` times with the peak multiplied by ``cycle_decay`` each cycle, then ``min_lr``."""
    min_lr = _real("cosine_decay: min_lr", min_lr)
    rest = _main_epochs("cosine_decay", num_epochs, warmup_epochs)
    if decay_epochs is None and rest == 0:
        raise ConfigError(f"cosine_decay: warmup_epochs={warmup_epochs} leaves no epoch of num_epochs={num_epochs} "
                          "to decay in; lower warmup_epochs or train longer.")
    span = _int("cosine_decay: decay_epochs", rest if decay_epochs is None else decay_epochs, 1)
    cycles = _int("cosine_decay: num_cycles", num_cycles, 1)
    shrink = _real("cosine_decay: cycle_decay", cycle_decay, 0.0, strict=True)
    if warmup_epochs + span * cycles > num_epochs:
        warnings.warn(f"cosine_decay: warmup_epochs + decay_epochs * num_cycles = "
                      f"{warmup_epochs + span * cycles} > num_epochs = {num_epochs}: the schedule is cut off "
                      f"before it reaches min_lr={min_lr}; lower decay_epochs to end at min_lr.", stacklevel=2)

    def decay(steps: np.ndarray, _: int) -> np.ndarray:
        cycle_steps = span * steps_per_epoch
        cycle = steps // cycle_steps
        t = _epochs(steps % cycle_steps, steps_per_epoch, lr_epoch_stair)
        peak = lr * shrink ** cycle
        rates = min_lr + 0.5 * (peak - min_lr) * (1.0 + np.cos(np.pi * t / span))
        return np.where(cycle < cycles, rates, min_lr)

    return _schedule("cosine_decay", decay, lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
                     warmup_epochs=warmup_epochs, warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def exponential_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, decay_rate: float = 0.9,
                      warmup_epochs: int = 0, warmup_factor: float = 0.0,
                      lr_epoch_stair: bool = False) -> np.ndarray:
    """``lr * decay_rate ** epoch`` (epochs counted after the warmup, fractional unless stair)."""
    rate = _real("exponential_decay: decay_rate", decay_rate, 0.0, strict=True)
    return _schedule(
        "exponential_decay", lambda steps, _: lr * rate ** _epochs(steps, steps_per_epoch, lr_epoch_stair),
        lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs, warmup_epochs=warmup_epochs,
        warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def polynomial_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, decay_rate: float = 0.9,
                     warmup_epochs: int = 0, warmup_factor: float = 0.0,
                     lr_epoch_stair: bool = False) -> np.ndarray:
    """``lr * (1 - epoch / E) ** decay_rate`` towards 0 over the E epochs after the warmup (MindCV uses
    decay_rate as the power and ignores min_lr here)."""
    power = _real("polynomial_decay: decay_rate", decay_rate, 0.0, strict=True)

    def decay(steps: np.ndarray, main_epochs: int) -> np.ndarray:
        done = np.minimum(_epochs(steps, steps_per_epoch, lr_epoch_stair), main_epochs) / max(main_epochs, 1)
        return lr * (1.0 - done) ** power

    return _schedule("polynomial_decay", decay, lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
                     warmup_epochs=warmup_epochs, warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def step_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, decay_epochs: int = 10,
               decay_rate: float = 0.9, warmup_epochs: int = 0, warmup_factor: float = 0.0,
               lr_epoch_stair: bool = False) -> np.ndarray:
    """``lr`` multiplied by ``decay_rate`` every ``decay_epochs`` epochs (changes at epoch boundaries)."""
    every = _int("step_decay: decay_epochs", decay_epochs, 1)
    rate = _real("step_decay: decay_rate", decay_rate, 0.0, strict=True)
    return _schedule(
        "step_decay", lambda steps, _: lr * rate ** (_epochs(steps, steps_per_epoch, True) // every),
        lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs, warmup_epochs=warmup_epochs,
        warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def multi_step_decay(*, lr: float, steps_per_epoch: int, num_epochs: int,
                     multi_step_decay_milestones: Sequence[int], decay_rate: float = 0.1, warmup_epochs: int = 0,
                     warmup_factor: float = 0.0, lr_epoch_stair: bool = False) -> np.ndarray:
    """``lr`` multiplied by ``decay_rate`` at each milestone epoch (counted after the warmup). The argument
    has the recipe key's name, ``multi_step_decay_milestones``, so a MindCV recipe's value reaches it."""
    milestones = multi_step_decay_milestones
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise ConfigError(f"multi_step_decay: multi_step_decay_milestones must be a list of epochs, "
                          f"got {milestones!r}.")
    marks = np.array(sorted(_int("multi_step_decay: milestone", m, 0) for m in milestones), dtype=np.float64)
    rate = _real("multi_step_decay: decay_rate", decay_rate, 0.0, strict=True)
    return _schedule(
        "multi_step_decay",
        lambda steps, _: lr * rate ** np.searchsorted(marks, _epochs(steps, steps_per_epoch, True), side="right"),
        lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs, warmup_epochs=warmup_epochs,
        warmup_factor=warmup_factor, lr_epoch_stair=lr_epoch_stair)


def _no_warmup(name: str, warmup_epochs: int, lr_epoch_stair: bool) -> None:
    """one_cycle and cyclic shape the whole run themselves, as in MindCV."""
    if warmup_epochs or lr_epoch_stair:
        raise ConfigError(f"{name} has its own rise and fall over the whole run: set warmup_epochs: 0 and "
                          f"lr_epoch_stair: false (got {warmup_epochs!r} and {lr_epoch_stair!r}).")


def one_cycle(*, lr: float, steps_per_epoch: int, num_epochs: int, min_lr: float = 1e-6, pct_start: float = 0.3,
              div_factor: float = 25.0, anneal_strategy: str = "cos", three_phase: bool = False,
              warmup_epochs: int = 0, lr_epoch_stair: bool = False) -> np.ndarray:
    """1cycle (Smith & Topin): from ``lr / div_factor`` up to ``lr`` over ``pct_start`` of the run, then
    down to ``min_lr`` (three_phase: back to ``lr / div_factor`` first, then to ``min_lr``)."""
    _no_warmup("one_cycle", warmup_epochs, lr_epoch_stair)
    min_lr = _real("one_cycle: min_lr", min_lr)
    pct = _real("one_cycle: pct_start", pct_start, 0.0, strict=True, maximum=1.0)
    initial = lr / _real("one_cycle: div_factor", div_factor, 0.0, strict=True)
    anneal = _ANNEALING[_choice("one_cycle: anneal_strategy", anneal_strategy, tuple(_ANNEALING))]
    if not isinstance(three_phase, bool):
        raise ConfigError(f"one_cycle: three_phase must be true or false, got {three_phase!r}.")
    total = _int("one_cycle: steps_per_epoch", steps_per_epoch, 1) * _int("one_cycle: num_epochs", num_epochs, 1)
    up, down, end = pct * total - 1, 2 * pct * total - 2, total - 1.0
    if up <= 0 or end <= (down if three_phase else up) or (three_phase and down <= up):
        raise ConfigError(f"one_cycle: pct_start={pct} of {total} steps leaves no step to rise or to fall in "
                          "(pct_start * steps must be > 1 and the rise must end before the last step); "
                          "change pct_start or train for more steps.")

    def decay(steps: np.ndarray, _: int) -> np.ndarray:
        rising = anneal(initial, lr, steps / up)
        if three_phase:
            back = anneal(lr, initial, (steps - up) / (down - up))
            final = anneal(initial, min_lr, (steps - down) / (end - down))
            return np.where(steps <= up, rising, np.where(steps <= down, back, final))
        return np.where(steps <= up, rising, anneal(lr, min_lr, (steps - up) / (end - up)))

    return _schedule("one_cycle", decay, lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
                     warmup_epochs=0, warmup_factor=0.0, lr_epoch_stair=False)


def cyclic(*, lr: float, steps_per_epoch: int, num_epochs: int, min_lr: float = 1e-6, num_cycles: int = 1,
           mode: str = "triangular", gamma: float = 1.0, warmup_epochs: int = 0,
           lr_epoch_stair: bool = False) -> np.ndarray:
    """Cyclical rates (Smith): ``num_cycles`` triangles between ``min_lr`` and ``lr`` over the run;
    'triangular2' halves the height every cycle, 'exp_range' scales it by ``gamma ** step``."""
    _no_warmup("cyclic", warmup_epochs, lr_epoch_stair)
    min_lr = _real("cyclic: min_lr", min_lr)
    cycles = _int("cyclic: num_cycles", num_cycles, 1)
    scale = _CYCLIC_SCALES[_choice("cyclic: mode", mode, tuple(_CYCLIC_SCALES))]
    gamma = _real("cyclic: gamma", gamma, 0.0, strict=True)
    total = _int("cyclic: steps_per_epoch", steps_per_epoch, 1) * _int("cyclic: num_epochs", num_epochs, 1)
    half = int(total / cycles / 2)
    if half < 1:
        raise ConfigError(f"cyclic: {cycles} cycles do not fit in {total} steps; lower num_cycles.")

    def decay(steps: np.ndarray, _: int) -> np.ndarray:
        cycle = np.floor(1 + steps / (2 * half))
        x = np.abs(steps / half - 2 * cycle + 1)
        return min_lr + (lr - min_lr) * np.maximum(0.0, 1.0 - x) * scale(cycle, steps, gamma)

    return _schedule("cyclic", decay, lr=lr, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
                     warmup_epochs=0, warmup_factor=0.0, lr_epoch_stair=False)


def _cos(start: float, end: float, pct: np.ndarray) -> np.ndarray:
    return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1.0)


def _linear(start: float, end: float, pct: np.ndarray) -> np.ndarray:
    return start + (end - start) * pct


_ANNEALING = {"cos": _cos, "linear": _linear}
_CYCLIC_SCALES = {
    "triangular": lambda cycle, steps, gamma: 1.0,
    "triangular2": lambda cycle, steps, gamma: 1.0 / 2.0 ** (cycle - 1),
    "exp_range": lambda cycle, steps, gamma: gamma ** steps,
}
