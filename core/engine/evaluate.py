"""Validation: top-1, top-5 and loss over a whole split, summed as counts across data-parallel ranks."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

import numpy as np

from .data import Pipeline


def evaluate(net: Any, pipeline: Pipeline, num_classes: int, *, distributed: bool = False,
             progress: Optional[Any] = None, step: Optional[Any] = None) -> Dict[str, float]:
    """{'top1', 'top5' (percent), 'loss' (mean cross-entropy), 'count', 'seconds'} of ``net`` on ``pipeline``.

    Each rank counts hits on its shard; the counts (not per-rank accuracies) are summed over ranks, so
    shards of different sizes are weighted correctly. ``step`` (``eval_step(net, num_classes)``) is reused
    by a caller that evaluates every epoch: a new one would compile its graph again each time.
    """
    import mindspore as ms

    from .steps import SumOverRanks

    step = step if step is not None else eval_step(net, num_classes)
    net.set_train(False)
    totals = np.zeros(4, dtype=np.float64)  # top1 hits, topk hits, loss sum, images
    start = time.perf_counter()
    for images, labels in pipeline.batches():
        labels = labels.astype(np.int32)
        top1, topk, loss = step(ms.Tensor(images), ms.Tensor(labels))
        totals += (float(top1.asnumpy()), float(topk.asnumpy()), float(loss.asnumpy()), labels.shape[0])
        if progress is not None:
            progress.update(1)
    if distributed:
        totals = SumOverRanks()(ms.Tensor(totals.astype(np.float32))).asnumpy().astype(np.float64)
    count = max(totals[3], 1.0)
    return {"top1": 100.0 * totals[0] / count, "top5": 100.0 * totals[1] / count, "loss": totals[2] / count,
            "count": int(totals[3]), "seconds": time.perf_counter() - start}


def eval_step(net: Any, num_classes: int, tta: str = "none") -> Any:
    """The cell that counts one batch's top-1/top-5 hits and summed loss for ``net`` (with ``tta``
    'hflip': of the mean logits of each image and its mirror)."""
    from .steps import EvalStep

    return EvalStep(net, min(5, num_classes), hflip=tta == "hflip")


def validate(job: Any) -> Dict[str, float]:
    """``validate.py``: top-1/top-5/loss of an evaluation job's network on its split."""
    from .runtime import LOG

    rt = job.runtime
    pipeline = job.batches.pipeline(job.source, training=False, seed=rt.seed, rank=rt.rank, world=rt.world)
    tta = "" if job.tta == "none" else f" with test-time augmentation '{job.tta}'"
    LOG.info(f"validating {job.label} on {len(job.source)} images of split '{job.split}'{tta}")
    return evaluate(job.net, pipeline, job.num_classes, distributed=rt.distributed,
                    step=eval_step(job.net, job.num_classes, job.tta))
