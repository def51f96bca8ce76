"""The plugin module named by the entry point: it declares components and imports nothing heavy."""
from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1.0,<2"


@hookimpl
def mindplug_models():
    return [ComponentSpec("tinynet", "model", "mindplug_example.models:tinynet",
                          description="A two-conv CNN for small images", tags=("cnn", "small"))]


@hookimpl
def mindplug_optimizers():
    return [ComponentSpec("signsgd", "optimizer", "mindplug_example.optim:signsgd",
                          description="Sign SGD: step by the sign of the gradient",
                          metadata={"arguments": ("lr", "weight_decay")})]


@hookimpl
def mindplug_augmentations():
    return [ComponentSpec("random_invert", "augmentation", "mindplug_example.augment:random_invert",
                          description="Invert an HWC uint8 image with probability prob")]
