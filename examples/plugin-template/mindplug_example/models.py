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
