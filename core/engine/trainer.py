"""The training loop: epochs of compiled steps, validation, checkpoints, logs, and exact resumption.

Exactness: data order, augmentation and dropout of epoch ``e`` are drawn from ``epoch_seed(seed, e)``
alone, and the optimizer's step counter (which indexes the learning-rate schedule) is part of the saved
state, so a run resumed at an epoch boundary reproduces the uninterrupted run's weights. Limits, measured
on MindSpore 2.10 CPU: its ``Dropout`` kernel draws differently from run to run under one seed (a
``UniformReal`` mask does not), several data workers keep the order but not every augmentation draw, and
a mid-epoch (SIGINT/SIGTERM) resume continues the data exactly but restarts dropout streams at the epoch
seed.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from .._atomic import atomic_write_text, clean_stale
from .._errors import CheckpointError, DataError
from . import state as st
from .jobs import TrainingJob, training_job
from .recipe import Recipe, save_recipe
from .runtime import LOG, apply_precision, epoch_seed, is_tty


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived: finish the current step, save, exit."""


@contextmanager
def _stop_signals() -> Iterator[Dict[str, int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step; a second SIGINT stops at once."""
    flag: Dict[str, int] = {}
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and flag:
            raise KeyboardInterrupt
        flag["signal"] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Progress:
    """A tqdm bar on a terminal; plain log lines every ``log_interval`` steps otherwise."""

    def __init__(self, mode: str, total: int, initial: int, desc: str, log_interval: int, enabled: bool):
        self.bar = None
        self.log_interval = log_interval
        self.desc = desc
        self.total = total
        self.enabled = enabled and mode != "none"
        use_bar = mode == "bar" or (mode == "auto" and is_tty())
        if self.enabled and use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)

    def step(self, index: int, loss: float, lr: float, ips: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{ips:.1f}", refresh=False)
            self.bar.update(1)
        elif (index + 1) % self.log_interval == 0 or index + 1 == self.total:
            LOG.info(f"{self.desc} step {index + 1}/{self.total} loss {loss:.4f} lr {lr:.6g} img/s {ips:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Runs a built training job; ``run()`` returns the process exit code."""

    def __init__(self, job: TrainingJob):
        from .steps import EMA, StepState, grad_reducer, stochastic_primitives

        self.job = job
        self.cfg = job.train
        self.rt = job.runtime
        self.net, self.loss_fn, self.optimizer, self.lrs = job.net, job.loss_fn, job.optimizer, job.lrs
        self.steps = job.steps
        self.accumulate = job.train.gradient_accumulation_steps
        self.model_name = job.model_name
        self.num_classes = job.num_classes
        self.weights = self.net.trainable_params()
        self.dynamic = job.dynamic_loss_scale
        self.step_state = StepState(self.weights, self.cfg.loss_scale, self.accumulate)
        self.reducer = grad_reducer(self.optimizer.parameters, self.rt.world, self.rt.device)
        self.ema = EMA(self.weights, self.cfg.ema_decay) if self.cfg.ema else None
        self.random_ops = stochastic_primitives(self.net)
        self._steps_cache: Optional[tuple] = None
        self._eval_step: Optional[Any] = None
        self.loop = st.LoopState(seed=self.rt.seed, steps_per_epoch=self.steps, epoch_size=self.cfg.epoch_size,
                                 world=self.rt.world, batch_size=job.batches.batch_size, model=self.model_name,
                                 num_classes=self.num_classes)
        if job.resume is not None:
            self._restore(job.resume)

    # ---------------------------------------------------------------- construction
    def _step_cells(self, seed: int, size: Optional[int]) -> tuple:
        """(apply, accumulate) cells for training images of ``size`` (progressive resizing; None = as the
        pipeline gives them); rebuilt each epoch when the net has kernel-state random ops, so their streams
        restart from the epoch's seed (a fresh compile resets kernel state)."""
        from .steps import TrainStep, WithLoss, reseed

        if self._steps_cache is not None and self._steps_cache[0] == size and not self.random_ops:
            return self._steps_cache[1]
        reseed(self.random_ops, seed)
        with_loss = WithLoss(self.net, self.loss_fn, size)
        common = dict(accumulate=self.accumulate, clip_value=self.cfg.clip_value if self.cfg.clip_grad else None,
                      dynamic=self.dynamic, skip_overflow=self.cfg.drop_overflow_update, reducer=self.reducer,
                      kernels=self.rt.kernels == "kernels")
        apply = TrainStep(with_loss, self.optimizer, self.step_state, apply=True, **common)
        accumulate = (TrainStep(with_loss, self.optimizer, self.step_state, apply=False, **common)
                      if self.accumulate > 1 else None)
        self._steps_cache = (size, (apply, accumulate))
        return apply, accumulate

    # ---------------------------------------------------------------- state
    def _state_entries(self) -> List[Dict[str, Any]]:
        ids = {id(p) for p in self.weights}
        others = [p for p in self.net.get_parameters() if id(p) not in ids]
        opt_state = [p for p in self.optimizer.get_parameters() if id(p) not in ids]
        entries = st.entries_of(self.weights) + st.entries_of(others) + st.entries_of(opt_state)
        entries += st.entries_of(self.step_state.parameters())
        if self.ema is not None:
            entries += st.entries_of(list(self.ema.shadow))
        return entries

    def _restore(self, resume: st.ResumePoint) -> None:
        from mindplug._checkpoint import load_into

        loop, params, path = resume.loop, resume.params, resume.path
        expected = {"steps_per_epoch": self.steps, "world": self.rt.world, "batch_size": self.loop.batch_size,
                    "num_classes": self.num_classes, "epoch_size": self.cfg.epoch_size}
        for key, value in expected.items():
            if getattr(loop, key) != value:
                raise CheckpointError(f"{path!r} was saved by a run with {key} = {getattr(loop, key)}, this run has "
                                      f"{value}: resuming would not continue the same schedule. Use the same "
                                      f"batch_size, epoch_size, data and worker count, or start from its "
                                      f"weights with --ckpt_path")
        net_params = {p.name for p in self.net.get_parameters()}
        load_into(self.net, {k: v for k, v in params.items() if k in net_params}, strict=True, label=path)
        own = list(self.optimizer.get_parameters()) + self.step_state.parameters()
        if self.ema is not None:
            own += list(self.ema.shadow)
        missing = []
        for param in own:
            if id(param) in {id(w) for w in self.weights} or param.name in net_params:
                continue
            value = params.get(param.name)
            if value is None:
                missing.append(param.name)
                continue
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{path!r}: '{param.name}' has shape {tuple(value.shape)}, the run "
                                      f"expects {tuple(param.shape)}; the optimizer or model differs")
            param.set_data(value.astype(param.dtype))
        missing = [m for m in missing if not m.startswith("ema.") or self.ema is not None]
        if missing:
            raise CheckpointError(f"{path!r} lacks training state this run needs: {', '.join(missing[:6])}; it "
                                  f"was saved with another optimizer, EMA or accumulation setting")
        self.loop = loop
        LOG.info(f"resuming from {path}: {loop.epoch} epochs and {loop.step} steps done, "
                 f"{self.cfg.epoch_size - loop.epoch} epochs to go")

    def _save(self, epoch_number: int, step: int, *, best: bool = False) -> str:
        """Write the weights of the current position, then (if ``best``) the next best weights, then the
        state, which commits both; only then does the next best replace the best (rank 0 only). A crash at any
        point leaves the last committed state, and its best checkpoint, whole (``st.recover_best``)."""
        name = st.checkpoint_name(self.model_name, epoch_number, step)
        if not self.rt.is_main:
            return name
        folder = self.cfg.ckpt_save_dir
        if name not in self.loop.saved:
            self.loop.saved.append(name)
        meta = {st.CLASSES_KEY: json.dumps(self.job.class_names)}
        weights = self._deploy_entries()
        st.atomic_save(weights, os.path.join(folder, name), append=meta, point="weights")
        if best:
            st.atomic_save(weights, st.next_best_path(folder, self.model_name), point="best",
                           append={**meta, st.BEST_EPOCH_KEY: str(self.loop.best_epoch)})
        st.atomic_save(self._state_entries(), os.path.join(folder, st.STATE_DIR, name), point="state",
                       append={st.META_KEY: self.loop.to_json(), **meta})
        if best:
            st.commit_best(folder, self.model_name)
        return name

    def _deploy_entries(self) -> List[Dict[str, Any]]:
        """What a weights file holds: the network's parameters, the EMA weights when EMA is on."""
        if self.ema is not None:
            shadow = {p.name[len("ema."):]: p for p in self.ema.shadow}
            return [{"name": p.name, "data": (shadow.get(p.name, p)).value().copy()}
                    for p in self.net.get_parameters()]
        return st.entries_of(list(self.net.get_parameters()))

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        cfg, loop, job = self.cfg, self.loop, self.job
        if loop.epoch >= cfg.epoch_size:
            LOG.info(f"nothing to do: the run already completed {loop.epoch} of {cfg.epoch_size} epochs")
            return 0
        if self.rt.is_main:
            self._write_run_files()
        from .bench import kernel_layers

        LOG.info(f"training {self.model_name} ({sum(int(np.prod(p.shape)) for p in self.weights):,} parameters) "
                 f"on {len(job.train_source)} images, {self.num_classes} classes: {self.steps} steps x "
                 f"{job.batches.batch_size} x {self.rt.world} worker(s) per epoch, epochs {loop.epoch + 1}.."
                 f"{cfg.epoch_size}, {self.rt.mode_name} mode on {self.rt.device}, "
                 f"{kernel_layers(self.net, self.rt.kernels)} layers on the C++ kernels")
        with _stop_signals() as stop:
            for epoch in range(loop.epoch, cfg.epoch_size):
                try:
                    code = self._epoch(epoch, stop)
                except DataError as exc:  # an unreadable image mid-run: keep what was trained, then one line
                    raise DataError(f"{exc}; {self._stopped_on_data(epoch)}") from None
                if code:
                    return code
        if loop.best_metric is not None:
            LOG.info(f"best validation top-1 {loop.best_metric:.2f}% at epoch {loop.best_epoch}")
        LOG.info(f"checkpoints in {os.path.abspath(cfg.ckpt_save_dir)}")
        return 0

    def _write_run_files(self) -> None:
        """The resolved recipe (with the components it ran), the runtime record and the class names."""
        import yaml

        folder = self.cfg.ckpt_save_dir
        os.makedirs(folder, exist_ok=True)
        clean_stale(folder)
        clean_stale(os.path.join(folder, st.STATE_DIR))
        st.recover_best(folder, self.model_name, self.loop.best_epoch)
        save_recipe(self.job.recipe, os.path.join(folder, "config.yaml"))
        atomic_write_text(os.path.join(folder, "runtime.yaml"), yaml.safe_dump(self.rt.to_dict(), sort_keys=False),
                          point="runtime")
        atomic_write_text(os.path.join(folder, "class_names.txt"), "\n".join(self.job.class_names) + "\n",
                          point="classes")

    def _epoch(self, epoch: int, stop: Dict[str, int]) -> int:
        import mindspore as ms

        from .steps import progressive_size

        cfg, loop = self.cfg, self.loop
        seed = epoch_seed(self.rt.seed, epoch)
        size = progressive_size(cfg.progressive_sizes, cfg.progressive_epochs, epoch)
        apply, accumulate = self._step_cells(seed, size)
        pipeline = self.job.batches.pipeline(self.job.train_source, training=True, seed=seed, rank=self.rt.rank,
                                             world=self.rt.world, steps=self.steps)
        skip = loop.step
        apply_precision(self.rt, self.rt.precision)
        self.net.set_train(True)
        progress = Progress(cfg.progress, self.steps, skip, f"epoch {epoch + 1}/{cfg.epoch_size}",
                            cfg.log_interval, self.rt.is_main)
        if not skip:
            loop.loss_sum, loop.loss_steps = 0.0, 0  # a resumed epoch keeps the sum of its first steps
        overflows = 0
        start = time.perf_counter()
        seen = 0
        for index, (images, labels) in enumerate(pipeline.batches()):
            if index < skip:
                continue  # resuming inside an epoch: the same batches, already trained on
            last = index + 1 == self.steps
            cell = apply if accumulate is None or (index + 1) % self.accumulate == 0 or last else accumulate
            loss, finite = cell(ms.Tensor(images), ms.Tensor(labels))
            if cell is apply and self.ema is not None:
                self.ema()
            loss_value = float(loss.asnumpy())
            loop.loss_sum, loop.loss_steps = loop.loss_sum + loss_value, loop.loss_steps + 1
            overflows += 0 if bool(finite.asnumpy()) else 1
            seen += images.shape[0]
            loop.step = index + 1
            loop.global_step += 1
            ips = seen * self.rt.world / max(time.perf_counter() - start, 1e-9)
            progress.step(index, loss_value, self._current_lr(), ips)
            if stop and not last:
                progress.close()
                return self._interrupted(epoch, stop["signal"])
        progress.close()
        elapsed = time.perf_counter() - start
        loop.epoch, loop.step = epoch + 1, 0
        record: Dict[str, Any] = {"epoch": epoch + 1, "lr": self._current_lr(),
                                  "train_loss": loop.loss_sum / loop.loss_steps if loop.loss_steps else None,
                                  "epoch_seconds": round(elapsed, 3), "img_per_s": round(seen * self.rt.world
                                                                                       / max(elapsed, 1e-9), 2)}
        loop.loss_sum, loop.loss_steps = 0.0, 0
        if size is not None:
            record["train_size"] = size
        if overflows:
            record["overflow_steps"] = overflows
        validate = self.job.val_source is not None and (
            (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epoch_size)
        if validate:
            metrics = self._validate()
            record.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"],
                          val_images=metrics["count"])
        loop.history.append(record)
        self._log_epoch(record)
        save = (epoch + 1) % cfg.ckpt_save_interval == 0 or epoch + 1 == cfg.epoch_size or bool(stop)
        if save:
            self._checkpoint(epoch + 1, record)
        if stop:
            return self._interrupted(epoch + 1, stop["signal"], saved=True)
        return 0

    def _current_lr(self) -> float:
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        return float(self.lrs[min(max(step - 1, 0), len(self.lrs) - 1)])

    def _validate(self) -> Dict[str, float]:
        from .evaluate import eval_step, evaluate

        pipeline = self.job.batches.pipeline(self.job.val_source, training=False, seed=self.rt.seed,
                                             rank=self.rt.rank, world=self.rt.world)
        apply_precision(self.rt, self.rt.val_precision)
        if self._eval_step is None:  # one cell for the run: its graph is compiled once, not every epoch
            self._eval_step = eval_step(self.net, self.num_classes, self.job.train.val_tta)
        run = functools.partial(evaluate, self.net, pipeline, self.num_classes, distributed=self.rt.distributed,
                                step=self._eval_step)
        if self.ema is None:
            return run()
        backup = [p.value().copy() for p in self.weights]
        shadow = {p.name[len("ema."):]: p for p in self.ema.shadow}
        for p in self.weights:
            p.set_data(shadow[p.name].value().copy())
        try:
            return run()
        finally:
            for p, value in zip(self.weights, backup):
                p.set_data(value)

    def _log_epoch(self, record: Dict[str, Any]) -> None:
        size = f" at {record['train_size']} px" if "train_size" in record else ""
        text = (f"epoch {record['epoch']}/{self.cfg.epoch_size}{size}: train loss {record['train_loss']:.4f}, "
                f"lr {record['lr']:.6g}, {record['img_per_s']:.1f} img/s, {record['epoch_seconds']:.1f} s")
        if "val_top1" in record:
            text += (f"; validation top-1 {record['val_top1']:.2f}%, top-5 {record['val_top5']:.2f}%, "
                     f"loss {record['val_loss']:.4f}")
        LOG.info(text)
        if self.rt.is_main:
            from .records import write_history

            write_history(self.cfg.ckpt_save_dir, self.loop.history)

    def _checkpoint(self, epoch_number: int, record: Dict[str, Any]) -> None:
        cfg, loop = self.cfg, self.loop
        metric = record.get("val_top1")
        better = metric is not None and (loop.best_metric is None or metric > loop.best_metric)
        if better:
            loop.best_metric, loop.best_epoch = metric, epoch_number
        name = self._save(epoch_number, self.steps, best=better)
        if not self.rt.is_main:
            return
        scores = {r_name: r.get("val_top1") for r_name, r in self._scores().items()}
        loop.saved = st.prune(cfg.ckpt_save_dir, cfg.keep_checkpoint_max, loop.saved,
                              {k: v for k, v in scores.items() if v is not None}, cfg.ckpt_save_policy)
        LOG.info(f"saved {os.path.join(cfg.ckpt_save_dir, name)}" + (" (best so far)" if better else ""))

    def _scores(self) -> Dict[str, Dict[str, Any]]:
        return {st.checkpoint_name(self.model_name, r["epoch"], self.steps): r for r in self.loop.history}

    def _stopped_on_data(self, epoch: int) -> str:
        """Save the position a data error stopped the run at; the second line of its message."""
        if self.loop.epoch > epoch:  # in validation: the epoch's training is complete, keep it
            name = self._save(epoch + 1, self.steps)
            where = f"while validating epoch {epoch + 1}"
        else:
            name = self._save(epoch + 1, self.loop.step)
            where = f"at epoch {epoch + 1} step {self.loop.step}"
        state = os.path.join(self.cfg.ckpt_save_dir, st.STATE_DIR, name)
        return f"the run stopped {where}: state saved to {state}; continue with --resume once the data is fixed"

    def _interrupted(self, epoch_number_or_index: int, signum: int, saved: bool = False) -> int:
        sig = signal.Signals(signum).name
        if saved:
            name = st.checkpoint_name(self.model_name, epoch_number_or_index, self.steps)
        else:
            name = self._save(epoch_number_or_index + 1, self.loop.step)
        where = os.path.join(self.cfg.ckpt_save_dir, st.STATE_DIR, name)
        LOG.warning(f"stopped by {sig}: state saved to {where}; continue with --resume (or --resume {where})")
        return 128 + int(signum)


def train(recipe: Recipe) -> int:
    """Build and run a training job from a recipe; the exit code of the process."""
    return Trainer(training_job(recipe)).run()
