"""The GoogLeNet building blocks as Cells, computed by native MindSpore ops or the C++ kernels.

Each block is one Cell with fixed child names (``conv``, ``b1``..``b4``), so checkpoints in the
MindCV format load by name and a faster implementation can replace a block's ``construct``
without touching the model that uses it. On CPU the blocks run on :mod:`mindplug.ops` kernels
(chosen when built, see ``_dispatch``); the kernel Cells hold no parameters, the weights stay here.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeNormal

from mindplug.ops._dispatch import use_kernels


class ConvReLU(nn.Cell):
    """Conv2d ("same" padding, no bias) followed by ReLU; He-normal init suits the ReLU after it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="same",
                              has_bias=False,
                              weight_init=HeNormal(negative_slope=0, mode="fan_in", nonlinearity="relu"))
        self.relu = nn.ReLU()
        self.use_kernels = use_kernels()
        if self.use_kernels:
            from mindplug.ops._aot import Conv2dKernel

            self.kernel = Conv2dKernel(kernel_size, stride, "same", relu=True)

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernels:
            return self.kernel(x, self.conv.weight)
        return self.relu(self.conv(x))


class MaxPoolSame(nn.MaxPool2d):
    """Max pooling with "same" padding: output size ceil(input / stride), as in the paper and the seed."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size=kernel_size, stride=stride, pad_mode="same")
        self.use_kernels = use_kernels()
        if self.use_kernels:
            from mindplug.ops._aot import MaxPoolKernel

            self.kernel = MaxPoolKernel(kernel_size, stride, "same")

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernels:
            return self.kernel(x)
        return super().construct(x)


class Inception(nn.Cell):
    """Inception v1 block: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool3x3->1x1, concatenated on channels."""

    def __init__(self, in_channels: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.out_channels = c1 + c3 + c5 + pool_proj
        self.b1 = ConvReLU(in_channels, c1, 1)
        self.b2 = nn.SequentialCell([ConvReLU(in_channels, c3r, 1), ConvReLU(c3r, c3, 3)])
        self.b3 = nn.SequentialCell([ConvReLU(in_channels, c5r, 1), ConvReLU(c5r, c5, 5)])
        self.b4 = nn.SequentialCell([MaxPoolSame(3, 1), ConvReLU(in_channels, pool_proj, 1)])
        self.use_kernels = use_kernels()
        if self.use_kernels:
            from mindplug.ops._aot import InceptionKernel

            self.kernel = InceptionKernel(c1, c3, c5, pool_proj)

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernels:  # one fused kernel writes all four branches into their channel slices
            return self.kernel(x, self.b1.conv.weight, self.b2[0].conv.weight, self.b2[1].conv.weight,
                               self.b3[0].conv.weight, self.b3[1].conv.weight, self.b4[1].conv.weight)
        return ops.concat((self.b1(x), self.b2(x), self.b3(x), self.b4(x)), axis=1)
