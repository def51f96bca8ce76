"""The kernels as MindSpore AOT Custom ops with their bprops, wrapped in small parameter-free Cells.

Each op reads its geometry from an int64 ``cfg`` tensor input (no attribute ABI, no std::string), and
carries the same geometry as prim attributes so PYNATIVE's per-primitive shape cache cannot confuse two
layers that share a kernel. Output shapes are static functions of the input shapes.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype

from mindplug.ops._library import func_path

Shape = Sequence[int]
Pads = Tuple[int, int, int, int]


def _out_size(n: int, k: int, s: int, lo: int, hi: int, same: bool) -> int:
    return math.ceil(n / s) if same else (n + lo + hi - k) // s + 1


def _custom(entry: str, out_shape: Callable, out_dtype: Any, bprop: Callable | None = None,
            **attrs: Any) -> ops.Custom:
    op = ops.Custom(func_path(entry), out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    op.add_prim_attr("mindplug_entry", entry)
    for key, value in attrs.items():
        op.add_prim_attr(key, value)
    return op


def _zeros_like_cfg(cfg: Tensor) -> Tensor:
    return ops.zeros_like(cfg)


def conv2d_ops(kernel: Tuple[int, int], stride: Tuple[int, int], pads: Pads, relu: bool, same: bool):
    """(forward, input-gradient, weight-gradient) Custom ops of one conv layer: y = [relu](conv(x, w)).

    The two gradients are separate ops so that GRAPH mode drops the input gradient of the first layer."""
    attrs: Dict[str, Any] = dict(stride=tuple(stride), pads=tuple(pads), relu=bool(relu), same=bool(same),
                                 kernel=tuple(kernel))

    def fwd_shape(x: Shape, w: Shape, _cfg: Shape):
        return [x[0], w[0], _out_size(x[2], w[2], stride[0], pads[0], pads[2], same),
                _out_size(x[3], w[3], stride[1], pads[1], pads[3], same)]

    grad_x = _custom("Conv2dBackwardData", lambda dy, y, x, w, cfg: list(x), mstype.float32, **attrs)
    grad_w = _custom("Conv2dBackwardFilter", lambda dy, y, x, w, cfg: list(w), mstype.float32, **attrs)

    def bprop(x, w, cfg, out, dout):
        return grad_x(dout, out, x, w, cfg), grad_w(dout, out, x, w, cfg), _zeros_like_cfg(cfg)

    forward = _custom("Conv2dForward", fwd_shape, mstype.float32, bprop, **attrs)
    return forward, grad_x, grad_w


def max_pool_ops(kernel: Tuple[int, int], stride: Tuple[int, int], pads: Pads, same: bool):
    """(forward, backward) Custom ops of one max pool; the gradient goes to each window's first maximum."""
    attrs: Dict[str, Any] = dict(stride=tuple(stride), pads=tuple(pads), same=bool(same), kernel=tuple(kernel))

    def fwd_shape(x: Shape, _cfg: Shape):
        return [x[0], x[1], _out_size(x[2], kernel[0], stride[0], pads[0], pads[2], same),
                _out_size(x[3], kernel[1], stride[1], pads[1], pads[3], same)]

    backward = _custom("MaxPoolBackward", lambda dy, x, y, cfg: list(x), mstype.float32, **attrs)

    def bprop(x, cfg, out, dout):
        return backward(dout, x, out, cfg), _zeros_like_cfg(cfg)

    forward = _custom("MaxPoolForward", fwd_shape, mstype.float32, bprop, **attrs)
    return forward, backward


def inception_ops(widths: Tuple[int, ...]):
    """(forward, backward) Custom ops of the fused Inception block with branch widths (c1, c3, c5, c4)."""
    attrs: Dict[str, Any] = dict(widths=tuple(widths))
    f32 = mstype.float32

    def fwd_shape(x: Shape, w1: Shape, w2a: Shape, w2b: Shape, w3a: Shape, w3b: Shape, w4: Shape):
        return [x[0], w1[0] + w2b[0] + w3b[0] + w4[0], x[2], x[3]]

    backward = _custom("InceptionBackward", lambda dy, y, x, *ws: tuple([list(x)] + [list(w) for w in ws]),
                       (f32,) * 7, **attrs)

    def bprop(x, w1, w2a, w2b, w3a, w3b, w4, out, dout):
        return backward(dout, out, x, w1, w2a, w2b, w3a, w3b, w4)

    forward = _custom("InceptionForward", fwd_shape, f32, bprop, **attrs)
    return forward, backward


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _pads(padding) -> Tuple[Pads, bool]:
    """'same', an int, (pad_h, pad_w) or (top, left, bottom, right) -> (pads, same)."""
    if isinstance(padding, str):
        if padding.lower() != "same":
            from mindplug._errors import ConfigError

            raise ConfigError(f"padding {padding!r} is not supported; use 'same' or explicit pads "
                              f"(an int or (top, left, bottom, right))")
        return (0, 0, 0, 0), True
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4, False
    pads = tuple(int(p) for p in padding)
    if len(pads) == 2:
        pads = (pads[0], pads[1], pads[0], pads[1])
    if len(pads) != 4 or min(pads) < 0:
        from mindplug._errors import ConfigError

        raise ConfigError(f"padding {padding!r} must be 'same', an int, (pad_h, pad_w) or "
                          f"(top, left, bottom, right) with non-negative entries")
    return pads, False  # type: ignore[return-value]


class Conv2dKernel(nn.Cell):
    """conv2d (no bias) + optional ReLU on the C++ kernels; the weight is passed in, so the Cell holding
    the Parameter (and its checkpoint name) stays where it is."""

    def __init__(self, kernel_size, stride=1, padding="same", relu: bool = True) -> None:
        super().__init__()
        kernel, stride = _pair(kernel_size), _pair(stride)
        pads, same = _pads(padding)
        self.op = conv2d_ops(kernel, stride, pads, relu, same)[0]
        self.cfg = Tensor(np.array([*stride, *pads, int(relu), int(same)], np.int64))

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.op(x, weight, self.cfg)


class MaxPoolKernel(nn.Cell):
    """Max pooling on the C++ kernels ('same' or explicit padding; padding never wins)."""

    def __init__(self, kernel_size, stride=None, padding="same") -> None:
        super().__init__()
        kernel = _pair(kernel_size)
        stride = kernel if stride is None else _pair(stride)
        pads, same = _pads(padding)
        self.op, _ = max_pool_ops(kernel, stride, pads, same)
        self.cfg = Tensor(np.array([*kernel, *stride, *pads, int(same)], np.int64))

    def construct(self, x: Tensor) -> Tensor:
        return self.op(x, self.cfg)


class InceptionKernel(nn.Cell):
    """The fused Inception block (see ops/csrc/inception.cc); weights in OIHW, all convs 'same' + ReLU."""

    def __init__(self, c1: int, c3: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.op, _ = inception_ops((c1, c3, c5, pool_proj))

    def construct(self, x: Tensor, w1: Tensor, w2a: Tensor, w2b: Tensor, w3a: Tensor, w3b: Tensor,
                  w4: Tensor) -> Tensor:
        return self.op(x, w1, w2a, w2b, w3a, w3b, w4)
