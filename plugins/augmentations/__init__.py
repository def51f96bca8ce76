"""Built-in augmentation plugin: every transform a recipe names, each its own component, and the default
pipeline that reads MindCV's augmentation keys.

Only spec records live here; the factories (which import MindSpore and Pillow) are in ``._factories``
and are imported on first ``create``.
"""
from __future__ import annotations

from typing import List

from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"

_TARGET = "mindplug.plugins.augmentations._factories:"

# (name, description, tags)
_TRANSFORMS = [
    ("random_resized_crop", "random area/aspect crop resized to size (Inception crop)", ("train", "geometric")),
    ("random_crop", "pad then crop at a random place (CIFAR / Fashion-MNIST crop)", ("train", "geometric")),
    ("hflip", "horizontal flip with probability prob", ("train", "geometric")),
    ("vflip", "vertical flip with probability prob", ("train", "geometric")),
    ("resize", "resize (shorter side or (h, w))", ("geometric",)),
    ("center_crop", "centre crop", ("eval", "geometric")),
    ("resize_center_crop", "evaluation resize to size/crop_pct then centre crop", ("eval", "geometric")),
    ("color_jitter", "random brightness/contrast/saturation/hue", ("train", "photometric")),
    ("rand_augment", "RandAugment from a policy string such as randaug-m9-n2-mstd0.5-inc1", ("train", "policy")),
    ("auto_augment", "AutoAugment ImageNet policies: autoaug, autoaug-originalr, autoaug-v0", ("train", "policy")),
    ("trivial_augment_wide", "TrivialAugmentWide: one op at a uniform magnitude", ("train", "policy")),
    ("augmix", "AugMix from a policy string such as augmix-m3-w3", ("train", "policy")),
    ("random_erasing", "erase a random box of the normalised CHW image", ("train", "tensor")),
    ("normalize", "(x - mean) / std on 0..255 values, then HWC -> CHW float32", ("normalize",)),
    ("to_rgb", "grayscale to 3 channels (for 1-channel data and a 3-channel network)", ("channels",)),
    ("to_grayscale", "RGB to 1 channel (for colour data and a 1-channel network)", ("channels",)),
]


@hookimpl
def mindplug_augmentations() -> List[ComponentSpec]:
    specs = [ComponentSpec(name, "augmentation", _TARGET + name, description=desc, tags=tags)
             for name, desc, tags in _TRANSFORMS]
    specs.append(ComponentSpec("mixup_cutmix", "augmentation", _TARGET + "mixup_cutmix",
                               description="Mixup/CutMix on a batch, giving soft labels (timm's Mixup)",
                               tags=("batch", "train")))
    specs.append(ComponentSpec("mindcv_pipeline", "augmentation",
                               "mindplug.plugins.augmentations._pipeline:mindcv_pipeline",
                               description="MindCV's ImageNet pipeline from the recipe's augmentation keys "
                                           "(image_resize, scale, hflip, mean, std, ...)",
                               tags=("pipeline",), default=True))  # what a recipe without a list gets
    return specs
