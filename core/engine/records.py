"""What a run leaves beside its checkpoints: the per-epoch CSV and JSON log and a PNG of the curves."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Dict, List, Sequence

from .._atomic import atomic_write, atomic_write_text


def write_history(save_dir: str, history: Sequence[Dict[str, Any]]) -> None:
    """``log.csv``, ``log.json`` and ``curves.png`` from the per-epoch records so far."""
    os.makedirs(save_dir, exist_ok=True)
    columns: List[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    atomic_write_text(os.path.join(save_dir, "log.json"), json.dumps(list(history), indent=1) + "\n", point="log")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_text(os.path.join(save_dir, "log.csv"), text.getvalue(), point="log")
    plot_history(history, os.path.join(save_dir, "curves.png"))


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


def plot_history(history: Sequence[Dict[str, Any]], path: str) -> None:
    """Loss (train and validation) and accuracy (top-1, top-5) against the epoch, with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
        if points:
            left.plot(*zip(*points), marker="o", label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend(loc="best")
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy (%)")
    if right.lines:
        right.legend(loc="best")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), point="log")
    finally:
        plt.close(fig)
