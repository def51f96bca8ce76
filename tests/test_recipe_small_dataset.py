"""The small-dataset recipe, as the README tells a user to run it: an image folder it was not tuned on,
trained from the recipe file with only its length shortened. A recipe whose warmup or rate does not suit a
BatchNorm-free GoogLeNet on few steps per epoch sits near chance (10%) here, as the Fashion-MNIST recipe
did on another small set; this one must be well above it after five short epochs.

The folder is the embedded Fashion-MNIST sample written as PNG files (the README's Animal-MNIST run needs a
package from PyPI). About two minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

from test_engine import ROOT, run  # noqa: E402  (tests/ is on sys.path under pytest)

RECIPE = os.path.join(ROOT, "configs", "googlenet", "googlenet_small_dataset.yaml")

pytestmark = pytest.mark.slow

EPOCHS = 5
#: 2,000 training images at the recipe's batch 64: 31 steps an epoch, as few as the sets it is meant for
TRAIN_PER_CLASS, VAL_PER_CLASS = 200, 50
MIN_TOP1 = 55.0


def write_folder(out: str) -> None:
    """``out/train/<class>/*.png`` and ``out/val/<class>/*.png`` from the embedded sample, class-balanced."""
    from PIL import Image

    import mindplug

    for split, split_dir, per_class in (("train", "train", TRAIN_PER_CLASS), ("val", "val", VAL_PER_CLASS)):
        source = mindplug.create("fashion_mnist_sample", kind="dataset", split=split)
        taken = {}
        for index in range(len(source)):
            image, label = source[index]
            label = int(label)
            if taken.get(label, 0) >= per_class:
                continue
            taken[label] = taken.get(label, 0) + 1
            folder = os.path.join(out, split_dir, source.class_names[label].replace("/", "-"))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image[:, :, 0]).save(os.path.join(folder, f"{index:05d}.png"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("small")
    data, out = str(tmp / "data"), str(tmp / "run")
    write_folder(data)
    proc = run([sys.executable, "-m", "mindplug", "train", "-c", RECIPE, "--data_dir", data,
                "--epoch_size", str(EPOCHS), "--decay_epochs", str(EPOCHS - 3), "--ckpt_save_dir", out],
               timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(os.path.join(out, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    return {"data": data, "dir": out, "history": history}


def test_small_dataset_recipe_learns_a_folder_it_was_not_tuned_on(trained):
    history = trained["history"]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert all(row["val_images"] == 10 * VAL_PER_CLASS for row in history)
    best = max(row["val_top1"] for row in history)
    assert best >= MIN_TOP1, f"best top-1 {best:.2f}% (expected >= {MIN_TOP1}%, chance is 10%): {history}"
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_validate_py_reproduces_the_best_epoch_on_the_folder(trained):
    best = max(trained["history"], key=lambda row: row["val_top1"])
    proc = run([sys.executable, "validate.py", "-c", RECIPE, "--data_dir", trained["data"],
                "--ckpt_path", os.path.join(trained["dir"], "googlenet-best.ckpt")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"top-1 {best['val_top1']:.2f}%" in proc.stdout, proc.stdout
