"""The plugin module named by the entry point: it declares components and imports nothing heavy."""
from mindplug import ComponentSpec, hookimpl

MINDPLUG_API_REQUIRES = ">=1.0,<2"


@hookimpl
def mindplug_models():
    return [ComponentSpec("tinynet", "model", "mindplug_example.models:tinynet",
                          description="A two-conv CNN with BatchNorm for small images", tags=("cnn", "small"),
                          metadata={"classifier": "classifier", "first_conv": "features.0"})]


@hookimpl
def mindplug_optimizers():
    return [ComponentSpec("signsgd", "optimizer", "mindplug_example.optim:signsgd",
                          description="Sign SGD: step by the sign of the gradient")]


@hookimpl
def mindplug_schedulers():
    return [ComponentSpec("linear_decay", "scheduler", "mindplug_example.schedules:linear_decay",
                          description="Linear warmup, then a straight line down to min_lr")]


@hookimpl
def mindplug_losses():
    return [ComponentSpec("focal", "loss", "mindplug_example.losses:focal",
                          description="Focal loss (Lin et al. 2017) for hard or soft labels")]


@hookimpl
def mindplug_augmentations():
    return [ComponentSpec("random_invert", "augmentation", "mindplug_example.augment:random_invert",
                          description="Invert a uint8 HWC image with probability prob", tags=("photometric",))]


@hookimpl
def mindplug_datasets():
    return [ComponentSpec("npz_folder", "dataset", "mindplug_example.datasets:npz_folder",
                          description="data_dir/<split>.npz holding uint8 images and int labels")]
