"""Built-in dataset plugin: ImageNet-layout folders, Fashion-MNIST, and the embedded Fashion-MNIST sample.

Sources are random-access and free of MindSpore; ``mindplug._data`` turns one into a MindSpore pipeline.
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"

_FOLDER = "mindplug.plugins.datasets._folder:image_folder"


@hookimpl
def mindplug_datasets() -> List[ComponentSpec]:
    return [
        ComponentSpec("image_folder", "dataset", _FOLDER,
                      description="data_dir/<split>/<class>/<image>, decoded with Pillow", tags=("folder",)),
        # the reference recipes say dataset: 'imagenet' for the same layout
        ComponentSpec("imagenet", "dataset", _FOLDER,
                      description="ImageNet layout (data_dir/train, data_dir/val); same as image_folder",
                      tags=("folder",), default=True),  # MindCV's default dataset
        ComponentSpec("fashion_mnist", "dataset", "mindplug.plugins.datasets._idx:fashion_mnist",
                      description="Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)",
                      tags=("grayscale", "28x28"), metadata={"num_classes": 10, "in_channels": 1}),
        ComponentSpec("fashion_mnist_sample", "dataset", "mindplug.plugins.datasets._idx:fashion_mnist_sample",
                      description="4000/1000 class-balanced Fashion-MNIST images shipped with mindplug (MIT)",
                      tags=("grayscale", "28x28", "embedded"), metadata={"num_classes": 10, "in_channels": 1}),
    ]
