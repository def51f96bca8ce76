"""``mindplug new-plugin NAME``: a complete, separately installable plugin package with one component of
every kind, its own check test, and nothing heavy at import time.

``examples/plugin-template`` in the repository is exactly ``mindplug new-plugin example`` (a test keeps
them equal), so the documented template and the scaffold cannot drift apart.
"""
from __future__ import annotations

import keyword
import os
import re
from pathlib import Path
from string import Template
from typing import Dict, List

from ._errors import ConfigError

_FILES: Dict[str, str] = {
    "setup.py": '''\
"""A third-party mindplug plugin: installing this distribution is all it takes to appear in `mindplug list`."""
from setuptools import setup

setup(
    name="$dist",
    version="0.1.0",
    description="A mindplug plugin: a model, an optimizer, a schedule, a loss, an augmentation and a dataset",
    packages=["$package"],
    python_requires=">=3.9",
    install_requires=["mindplug"],
    entry_points={"mindplug.plugins": ["$name = $package"]},
)
''',
    "README.md": '''\
# $dist: a mindplug plugin

Made by `mindplug new-plugin $name`. It provides one component of every kind, under the plugin name
`$name` (canonical ids `$name:tinynet`, `$name:signsgd`, ...):

| kind | name | module |
|---|---|---|
| model | `tinynet` | `$package/models.py`: conv-BN-ReLU twice, global pooling, a classifier |
| optimizer | `signsgd` | `$package/optim.py`: a `mindspore.nn.Optimizer` stepping by the gradient's sign |
| scheduler | `linear_decay` | `$package/schedules.py`: one learning rate per step, linear to `min_lr` |
| loss | `focal` | `$package/losses.py`: focal loss, for hard and soft (mixup) labels |
| augmentation | `random_invert` | `$package/augment.py`: a uint8 HWC transform, placed at `photometric` |
| dataset | `npz_folder` | `$package/datasets.py`: `data_dir/<split>.npz` with `images` and `labels` |

`pip install .` is all it takes: `mindplug list` then shows them, and a recipe uses them by name
(`model: tinynet`, `opt: signsgd`, `transforms: {train_extra: [random_invert]}`). The plugin module
(`__init__.py`) only declares specs; the targets are `"module:attr"` strings imported on first use, so
listing never imports MindSpore.

The engine hands each factory the documented arguments of its kind that its signature takes
(docs/plugin-kinds.md in mindplug), drives the optimizer's per-step learning rate, and loads weights
(`--ckpt_path`, resume, `pretrained` from `ComponentSpec.weights`) into the model by parameter name: a model
factory needs no checkpoint arguments.

Check it the way mindplug does: `python -m pytest tests` (it calls `mindplug.testing.check_plugin`) or
`mindplug doctor --check $name`.
''',
    "tests/test_plugin.py": '''\
"""The plugin's own check: every component is created and checked against its kind's contract."""
import mindplug.testing


def test_every_component_keeps_its_contract():
    mindplug.testing.check_plugin("$name")
''',
    "$package/__init__.py": '''\
"""The plugin module named by the entry point: it declares components and imports nothing heavy."""
from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1.0,<2"


@hookimpl
def mindplug_models():
    return [ComponentSpec("tinynet", "model", "$package.models:tinynet",
                          description="A two-conv CNN with BatchNorm for small images", tags=("cnn", "small"),
                          metadata={"classifier": "classifier", "first_conv": "features.0"})]


@hookimpl
def mindplug_optimizers():
    return [ComponentSpec("signsgd", "optimizer", "$package.optim:signsgd",
                          description="Sign SGD: step by the sign of the gradient")]


@hookimpl
def mindplug_schedulers():
    return [ComponentSpec("linear_decay", "scheduler", "$package.schedules:linear_decay",
                          description="Linear warmup, then a straight line down to min_lr")]


@hookimpl
def mindplug_losses():
    return [ComponentSpec("focal", "loss", "$package.losses:focal",
                          description="Focal loss (Lin et al. 2017) for hard or soft labels")]


@hookimpl
def mindplug_augmentations():
    return [ComponentSpec("random_invert", "augmentation", "$package.augment:random_invert",
                          description="Invert a uint8 HWC image with probability prob", tags=("photometric",))]


@hookimpl
def mindplug_datasets():
    return [ComponentSpec("npz_folder", "dataset", "$package.datasets:npz_folder",
                          description="data_dir/<split>.npz holding uint8 images and int labels")]
''',
    "$package/models.py": '''\
"""TinyNet: small enough to train in seconds on a CPU. The factory takes what the engine offers a model
(num_classes, in_channels) and nothing about weights: the engine loads those by parameter name."""
import mindspore.nn as nn
import mindspore.ops as ops


class TinyNet(nn.Cell):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.features = nn.SequentialCell(
            nn.Conv2d(in_channels, width, 3, pad_mode="same"), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(width, width * 2, 3, pad_mode="same"), nn.BatchNorm2d(width * 2), nn.ReLU())
        self.classifier = nn.Dense(width * 2, num_classes)
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x):
        return self.classifier(self.mean(self.features(x), (2, 3)))


def tinynet(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> TinyNet:
    """A two-conv CNN with BatchNorm and global average pooling."""
    return TinyNet(num_classes, in_channels, width)
''',
    "$package/optim.py": '''\
"""Sign SGD as a MindSpore optimizer. The engine passes params and lr (a float, or one rate per step) and
advances global_step after every update, so get_lr() follows the schedule."""
import mindspore.nn as nn
import mindspore.ops as ops


class SignSGD(nn.Optimizer):
    def __init__(self, params, learning_rate=0.01, weight_decay=0.0, loss_scale=1.0):
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        self.assign = ops.Assign()
        self.sign = ops.Sign()

    def construct(self, gradients):
        gradients = self.flatten_gradients(gradients)
        gradients = self.decay_weight(gradients)
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        for param, grad in zip(self._parameters, gradients):
            self.assign(param, param - lr * self.sign(grad))
        return True


def signsgd(params, lr=0.01, *, weight_decay=0.0, weight_decay_filter="disable"):
    """Step every weight by -lr * sign(gradient)."""
    if weight_decay_filter != "disable":
        raise ValueError("signsgd supports only weight_decay_filter='disable'")
    return SignSGD(params, lr, weight_decay)
''',
    "$package/schedules.py": '''\
"""A learning-rate schedule: one float32 rate per optimizer step, for the whole run."""
import numpy as np


def linear_decay(*, lr: float, steps_per_epoch: int, num_epochs: int, warmup_epochs: int = 0,
                 min_lr: float = 0.0) -> np.ndarray:
    """Linear warmup from 0 over warmup_epochs, then a straight line from lr down to min_lr."""
    total, warmup = steps_per_epoch * num_epochs, min(steps_per_epoch * warmup_epochs, steps_per_epoch * num_epochs)
    steps = np.arange(total, dtype=np.float64)
    rates = min_lr + (lr - min_lr) * (1.0 - (steps - warmup) / max(total - warmup, 1))
    if warmup:
        rates[:warmup] = lr * (steps[:warmup] + 1) / warmup
    return rates.astype(np.float32)
''',
    "$package/losses.py": '''\
"""Focal loss: cross-entropy down-weighted on well-classified samples (Lin et al. 2017)."""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops


class FocalLoss(nn.Cell):
    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma, self.smoothing, self.reduction = gamma, label_smoothing, reduction

    def construct(self, logits, labels):
        if isinstance(logits, (tuple, list)):  # auxiliary heads: the main output decides
            logits = logits[0]
        classes = logits.shape[-1]
        if labels.ndim == 1:  # hard labels; soft ones (mixup/cutmix) arrive as [N, C]
            labels = ops.one_hot(labels, classes, ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32))
        labels = labels * (1.0 - self.smoothing) + self.smoothing / classes
        log_p = ops.log_softmax(logits.astype(ms.float32), -1)
        per_sample = -(labels * ops.pow(1.0 - ops.exp(log_p), self.gamma) * log_p).sum(-1)
        if self.reduction == "sum":
            return per_sample.sum()
        if self.reduction == "none":
            return per_sample
        return per_sample.mean()


def focal(*, gamma: float = 2.0, label_smoothing: float = 0.0, reduction: str = "mean") -> FocalLoss:
    """Softmax focal loss with focusing parameter gamma."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"focal: reduction must be mean, sum or none, got {reduction!r}")
    return FocalLoss(gamma, label_smoothing, reduction)
''',
    "$package/augment.py": '''\
"""An augmentation that is a plain Python callable on uint8 HWC images (it keeps that type)."""
import numpy as np


class RandomInvert:
    def __init__(self, prob: float = 0.5, seed=None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"random_invert: prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return 255 - image if self.rng.random() < self.prob else image


def random_invert(prob: float = 0.5, seed=None) -> RandomInvert:
    """Invert the image with probability prob."""
    return RandomInvert(prob, seed)
''',
    "$package/datasets.py": '''\
"""A dataset: a random-access source of (uint8 HWC image, int label), free of MindSpore."""
import os

import numpy as np


class NpzFolder:
    def __init__(self, path: str, class_names=None) -> None:
        with np.load(path) as data:
            self.images, self.labels = data["images"], data["labels"].astype(np.int64)
        if self.images.ndim == 3:
            self.images = self.images[:, :, :, None]
        count = int(self.labels.max()) + 1 if self.labels.size else 0
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def npz_folder(*, data_dir=None, split: str = "train", class_names=None) -> NpzFolder:
    """data_dir/<split>.npz with arrays 'images' (N, H, W[, C], uint8) and 'labels' (N,)."""
    if not data_dir:
        raise ValueError("npz_folder: data_dir is required (the folder that holds train.npz and val.npz)")
    path = os.path.join(data_dir, f"{split}.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz_folder: {path} does not exist; write it with numpy.savez(path, "
                                f"images=..., labels=...)")
    return NpzFolder(path, class_names)
''',
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def render(name: str) -> Dict[str, str]:
    """{relative path: content} of the plugin package for plugin name ``name``."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters, digits and '_', starting with a letter "
                          f"(it becomes the entry-point name and part of the package name)")
    values = {"name": name, "package": f"mindplug_{name}", "dist": f"mindplug-{name.replace('_', '-')}"}
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in _FILES.items()}


def write(name: str, folder: str) -> List[str]:
    """Write the package into ``folder`` (which must not hold any of its files yet); returns the paths."""
    files = render(name)
    clashes = [p for p in files if os.path.exists(os.path.join(folder, p))]
    if clashes:
        raise ConfigError(f"{folder} already has {', '.join(sorted(clashes))}; choose an empty or new folder")
    written = []
    for relative, text in files.items():
        path = Path(folder) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(str(path))
    return written
