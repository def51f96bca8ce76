"""The built-in GoogLeNet plugin: the seed's model and a record of its published ImageNet weights.

Importing this module is cheap (no MindSpore); the model is built by ``.model:googlenet`` on create.
"""
from __future__ import annotations

from typing import List

from mindplug import IMAGENET_MEAN, IMAGENET_STD, ComponentSpec, WeightsSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1,<2"

#: Layers whose size is the number of classes: replaced when fine-tuning to other classes.
CLASSIFIERS = ("classifier", "aux1.fc2", "aux2.fc2")
#: Parts a checkpoint or the network may lack: the auxiliary heads (aux_logits).
OPTIONAL = ("aux1.*", "aux2.*")

#: The seed's ImageNet-1k weights (MindCV, 8 x Ascend 910, 150 epochs). The sha256 is unpublished;
#: the 8 hex digits in the file name are its prefix, which the cache lookup checks.
IMAGENET_WEIGHTS = WeightsSpec(
    tag="imagenet1k",
    file_name="googlenet-de74c31d-910v2.ckpt",
    sha256=None,
    source="https://download-mindspore.osinfra.cn/toolkits/mindcv/googlenet/googlenet-de74c31d-910v2.ckpt",
    num_classes=1000,
    input_size=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    eval_transform="resize_center_crop",
    crop_pct=0.875,
    interpolation="bilinear",
    metrics={"top1": 72.89, "top5": 90.89},
)


@hookimpl
def mindplug_models() -> List[ComponentSpec]:
    return [ComponentSpec(
        "googlenet", "model", "mindplug.plugins.googlenet.model:googlenet",
        description="GoogLeNet / Inception v1 (Szegedy et al. 2014), paper layout with 5x5 branch, "
                    "no BatchNorm; 6.99M parameters; loads MindCV GoogLeNet checkpoints by name",
        tags=("cnn", "inception", "imagenet", "classification", "backbone"),
        metadata={"paper": "https://arxiv.org/abs/1409.4842", "params": 6991272, "params_aux": 13370744,
                  "default_input_size": (3, 224, 224), "first_conv": "conv1.conv",
                  "classifier": "classifier", "classifiers": CLASSIFIERS, "optional": OPTIONAL,
                  "aux_input_range": (209, 256)},
        weights=(IMAGENET_WEIGHTS,),
        default=True,  # the model of a recipe that names none
    )]
