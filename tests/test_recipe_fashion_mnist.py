"""The Fashion-MNIST recipe, trained for real on a subset: a regression in the kernels, the data pipeline,
the optimizer or the schedule shows up here as an accuracy near chance (10%), not only as a crash.

The recipe file itself is used (its transforms, optimizer, schedule and loss), with the embedded sample
(4,000 train / 1,000 test images of Fashion-MNIST) standing in for the Debian dataset and fewer epochs,
through the seed's command line. About two to three minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

from test_engine import ROOT, run  # noqa: E402  (tests/ is on sys.path under pytest)

RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_fashion_mnist.yaml")

pytestmark = pytest.mark.slow

#: 4,000 images give 31 steps an epoch at the recipe's batch 128, too few for its one-cycle warmup: the
#: subset runs at batch 32 with the linearly scaled peak rate (0.05 * 32 / 128), everything else as written
EPOCHS = 5
#: well above chance (10%)
MIN_TOP1 = 60.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("recipe") / "run")
    proc = run([sys.executable, "train.py", "--config", RECIPE, "--dataset", "fashion_mnist_sample",
                "--data_dir", "none", "--epoch_size", str(EPOCHS), "--batch_size", "32", "--lr", "0.0125",
                "--ckpt_save_dir", out, "--distribute", "False"], timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(os.path.join(out, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    return {"dir": out, "history": history}


def test_recipe_learns_well_above_chance_on_a_subset(trained):
    history = trained["history"]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    best = max(row["val_top1"] for row in history)
    assert best >= MIN_TOP1, f"best top-1 {best:.2f}% on the sample subset (expected >= {MIN_TOP1}%): {history}"
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_validate_reproduces_the_best_checkpoint_exactly(trained):
    best = max(trained["history"], key=lambda row: row["val_top1"])
    ckpt = os.path.join(trained["dir"], "googlenet-best.ckpt")
    proc = run([sys.executable, "validate.py", "-c", RECIPE, "--dataset", "fashion_mnist_sample",
                "--data_dir", "none", "--ckpt_path", ckpt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"top-1 {best['val_top1']:.2f}%" in proc.stdout, proc.stdout
    assert f"top-5 {best['val_top5']:.2f}%" in proc.stdout, proc.stdout
