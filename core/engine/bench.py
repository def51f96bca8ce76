"""The seed's performance columns for this machine, measured on synthetic data.

params, batch size, resolution, graph compile time, ms/step and img/s, for a training step (forward,
backward, optimizer update) and for inference, with the recipe's model, loss and optimizer. Under msrun the
training step averages gradients over the workers as training does, and img/s counts every worker's batch,
as the seed's multi-card rows do.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from . import components
from .config import Config


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


def bench(cfg: Config, *, steps: int = 5, which: str = "both", workers: int = 1) -> List[Dict[str, Any]]:
    """One row per measured phase ('train', 'infer'); ``workers`` > 1 inside an msrun group."""
    import mindspore as ms

    from .steps import StepState, TrainStep, WithLoss, grad_reducer

    num_classes = int(cfg.num_classes or 1000)
    rng = np.random.default_rng(cfg.seed)
    size, batch = cfg.image_resize, cfg.batch_size
    images = ms.Tensor(rng.standard_normal((batch, cfg.in_channels, size, size)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, num_classes, batch).astype(np.int32))
    net = components.build_model(cfg, num_classes, None, pretrained=False)
    params = sum(int(np.prod(p.shape)) for p in net.trainable_params())
    rows = []
    common = {"model": cfg.component("model")[0], "params_M": round(params / 1e6, 2), "batch_size": batch,
              "resolution": f"{size}x{size}", "mode": "GRAPH" if cfg.mode == 0 else "PYNATIVE", "workers": workers}
    if which in ("both", "train"):
        loss_fn = components.build_loss(cfg)
        optimizer = components.build_optimizer(cfg, net.trainable_params(),
                                               np.full(steps + 1, cfg.lr, dtype=np.float32))
        state = StepState(net.trainable_params(), cfg.loss_scale, 1)
        reducer = grad_reducer(optimizer.parameters, workers, ms.get_context("device_target"))
        step = TrainStep(WithLoss(net, loss_fn), optimizer, state, apply=True, reducer=reducer)
        net.set_train(True)
        result = _measure(step, (images, labels), steps)
        rows.append({"phase": "train", **common, **result, "img_per_s": _throughput(batch * workers, result)})
    if which in ("both", "infer"):
        net.set_train(False)
        result = _measure(net, (images,), steps)
        rows.append({"phase": "infer", **common, **result, "img_per_s": _throughput(batch * workers, result)})
    return rows


def render(rows: List[Dict[str, Any]]) -> str:
    header = ["phase", "model", "params(M)", "workers", "batch size", "resolution", "mode", "graph compile",
              "ms/step", "img/s"]
    table = [[r["phase"], r["model"], f"{r['params_M']:.2f}", str(r["workers"]), str(r["batch_size"]),
              r["resolution"], r["mode"],
              f"{r['compile_s']:.1f}s", f"{r['ms_per_step']:.1f}", f"{r['img_per_s']:.2f}"] for r in rows]
    widths = [max(len(row[i]) for row in table + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in table]
    return "\n".join(lines)
