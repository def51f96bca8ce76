"""The seed's performance columns for this machine, measured on synthetic data; and the data pipeline's.

params, batch size, resolution, graph compile time, ms/step and img/s, for a training step (forward,
backward, optimizer update) and for inference, with the recipe's model, loss and optimizer. Under msrun the
training step averages gradients over the workers as training does, and img/s counts every worker's batch,
as the seed's multi-card rows do.

The 'data' row runs the recipe's training pipeline alone, over its real training split, so that its img/s
set against the 'train' row's says whether data or compute limits a run. Its "graph compile" column is the
pipeline's start-up (the time to its first batch), and the kernel-layers column says how the source is read.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from .._console import render_table


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    out = fn(*args)
    first = out[0] if isinstance(out, (tuple, list)) else out
    first.asnumpy()  # wait for the device
    return time.perf_counter() - start


def _measure(fn: Any, args: tuple, steps: int) -> Dict[str, float]:
    first = _timed(fn, *args)
    times = [_timed(fn, *args) for _ in range(steps)]
    step = float(np.median(times))
    return {"compile_s": max(first - step, 0.0), "ms_per_step": 1000.0 * step}


def _throughput(images_per_step: int, result: Dict[str, float]) -> float:
    return 1000.0 * images_per_step / result["ms_per_step"]


def measure(job: Any, *, steps: int = 5, which: str = "both") -> List[Dict[str, Any]]:
    """One row per measured phase ('train', 'infer'); inside an msrun group the training step averages
    gradients over the workers, and img/s counts every worker's batch."""
    from .runtime import apply_precision
    from .steps import StepState, TrainStep, WithLoss, grad_reducer

    rt, net = job.runtime, job.net
    batch, size = job.images.shape[0], job.images.shape[-1]
    params = sum(int(np.prod(p.shape)) for p in net.trainable_params())
    rows = []
    common = {"model": job.model.name, "params_M": round(params / 1e6, 2), "batch_size": batch,
              "resolution": f"{size}x{size}", "mode": rt.mode_name, "workers": rt.world,
              "kernel_layers": kernel_layers(net, rt.kernels)}
    if which in ("both", "train"):
        state = StepState(net.trainable_params(), job.loss_scale, 1)
        reducer = grad_reducer(job.optimizer.parameters, rt.world, rt.device)
        step = TrainStep(WithLoss(net, job.loss_fn), job.optimizer, state, apply=True, reducer=reducer,
                         clip_value=job.clip_value, kernels=rt.kernels == "kernels")
        net.set_train(True)
        apply_precision(rt, rt.precision)
        result = _measure(step, (job.images, job.labels), steps)
        rows.append({"phase": "train", **common, "precision": rt.precision, **result,
                     "img_per_s": _throughput(batch * rt.world, result)})
    if which in ("both", "infer"):
        net.set_train(False)
        apply_precision(rt, rt.val_precision)
        result = _measure(net, (job.images,), steps)
        rows.append({"phase": "infer", **common, "precision": rt.val_precision, **result,
                     "img_per_s": _throughput(batch * rt.world, result)})
    return rows


def measure_data(job: Any, *, steps: int = 5, warmup: int = 2) -> List[Dict[str, Any]]:
    """The 'data' row: ``warmup`` batches of the training pipeline (start-up, queues filling), then
    ``steps`` timed ones, each epoch's pipeline built as training builds it (``epoch_seed``)."""
    from .runtime import epoch_seed

    rt, warmup = job.runtime, max(1, int(warmup))
    start = time.perf_counter()
    seen = images = epoch = 0
    first = began = ended = 0.0
    shape: tuple = ()
    path = decoder = ""
    while seen < warmup + steps:
        pipeline = job.batches.pipeline(job.source, training=True, seed=epoch_seed(rt.seed, epoch), rank=rt.rank,
                                        world=rt.world)
        path, decoder = pipeline.path, pipeline.decoder
        for batch, labels in pipeline.batches():
            seen += 1
            now = time.perf_counter()
            if seen == 1:
                first = now - start
            if seen == warmup:
                began = now
            elif seen > warmup:
                images += int(labels.shape[0])
            shape = batch.shape
            if seen == warmup + steps:
                ended = now
                break
        epoch += 1
    elapsed = max(ended - began, 1e-9)
    workers = job.batches.workers
    return [{"phase": "data", "model": job.model_name, "params_M": None, "batch_size": job.batches.batch_size,
             "resolution": f"{shape[-2]}x{shape[-1]}", "mode": "-", "workers": rt.world, "path": path,
             "pipeline_workers": workers, "decoder": decoder,
             "kernel_layers": f"data: {path}{f' ({decoder})' if decoder else ''}, {workers} worker(s)", "precision": "-",
             "compile_s": first, "ms_per_step": 1000.0 * elapsed / steps,
             "img_per_s": images * rt.world / elapsed}]


def kernel_layers(net: Any, kernels: str) -> str:
    """'12/14': the network's layers on mindplug's C++ kernels, of all its layers ('0/N' on native ops)."""
    from mindplug.ops import summary

    found = summary(net)
    return f"{found.kernel_layers if kernels == 'kernels' else 0}/{found.total}"


def render(rows: List[Dict[str, Any]]) -> str:
    header = ["phase", "model", "params(M)", "workers", "batch size", "resolution", "mode", "precision",
              "kernel layers", "graph compile", "ms/step", "img/s"]
    table = [[r["phase"], r["model"], "-" if r["params_M"] is None else f"{r['params_M']:.2f}", r["workers"],
              r["batch_size"], r["resolution"],
              r["mode"], r.get("precision", "-"), r["kernel_layers"], f"{r['compile_s']:.1f}s", f"{r['ms_per_step']:.1f}",
              f"{r['img_per_s']:.2f}"] for r in rows]
    return render_table(table, header, markdown=True)
