"""The general kernels (ops/csrc: conv_general, winograd, depthwise, pooling, batchnorm) as AOT Custom ops.

Every op takes its int64 ``cfg`` tensor as the first input (the C side reads it before it knows how many
tensors follow) and carries the same geometry as prim attributes, so PYNATIVE's per-primitive shape cache
cannot confuse two layers that share an entry point (facts: pitfall 1). Floats in a cfg (activation slope,
BatchNorm epsilon and momentum) are the bits of a double. Output shapes are static functions of the input
shapes; gradients are ordinary AOT ops called from the bprops.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from mindspore import Tensor, ops
from mindspore import dtype as mstype

from mindplug.ops._library import func_path

Pair = Tuple[int, int]
Pads = Tuple[int, int, int, int]  # (top, left, bottom, right), the kernels' order

#: activation name -> the kernels' code (ops/csrc/act.h)
ACT_CODES = {"none": 0, "relu": 1, "relu6": 2, "leaky_relu": 3, "hswish": 4, "silu": 5, "sigmoid": 6}
#: conv algorithms (ConvSpec::algo); tests pin one, layers use "auto"
ALGOS = {"auto": 0, "gemm": 1, "winograd4": 2, "winograd2": 3, "depthwise": 4}
F32 = mstype.float32


def bits(value: float) -> int:
    """The int64 holding a double's bits: how a cfg tensor carries a float."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def grad_from_output(act: int, alpha: float) -> bool:
    """True when the activation's derivative is a function of its output (the backward kernels' contract)."""
    return act in (0, 1, 2, 6) or (act == 3 and alpha > 0)


def same_pads(n: int, k: int, s: int) -> Tuple[int, int]:
    """MindSpore's pad_mode="same" along one axis: output ceil(n / s), the odd pixel at the end."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pool_out_size(n: int, lo: int, hi: int, extent: int, s: int, ceil_mode: bool) -> int:
    """Output length of a window of `extent` input pixels (PyTorch's and MindSpore's rule, ceil mode too)."""
    span = n + lo + hi - extent
    if span < 0:
        return 0
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + lo:
        out -= 1
    return out


def _custom(entry: str, out_shape: Callable, out_dtype: Any, bprop: Optional[Callable] = None,
            **attrs: Any) -> ops.Custom:
    op = ops.Custom(func_path(entry), out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    op.add_prim_attr("mindplug_entry", entry)
    for key, value in attrs.items():
        op.add_prim_attr(key, value)
    return op


# ---------------------------------------------------------------- convolution
@dataclass(frozen=True)
class ConvGeometry:
    """Everything a conv layer's output shape depends on, besides the input shape."""

    kernel: Pair
    stride: Pair = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    same: bool = False

    def out_hw(self, h: int, w: int) -> Pair:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        if self.same:
            return -(-h // sh), -(-w // sw)
        pt, pl, pb, pr = self.pads
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1

    def attrs(self) -> dict:
        return dict(kernel=self.kernel, stride=self.stride, pads=self.pads, dilation=self.dilation,
                    groups=self.groups, same=self.same)


def conv_cfg(geo: ConvGeometry, act: int = 0, alpha: float = 0.0, has_bias: bool = False, fold: bool = False,
             eps: float = 1e-5, algo: int = 0) -> np.ndarray:
    """The cfg[16] of the Conv* entry points (ops/csrc/conv_spec.h)."""
    return np.array([*geo.stride, *geo.pads, *geo.dilation, geo.groups, act, int(has_bias), int(fold),
                     int(geo.same), algo, bits(alpha), bits(eps)], np.int64)


def _act_grad(act: int, alpha: float, z):
    """act'(z) with native ops, for the activations whose derivative needs the pre-activation."""
    if act == ACT_CODES["hswish"]:
        return ops.clip_by_value((2 * z + 3) / 6, 0.0, 1.0) * (z > -3).astype(F32) * (z < 3).astype(F32) + \
            (z >= 3).astype(F32)
    if act == ACT_CODES["silu"]:
        s = ops.sigmoid(z)
        return s * (1 + z * (1 - s))
    raise ValueError(f"activation code {act} has an output-derived gradient")


def conv_op(geo: ConvGeometry, act: int, alpha: float, has_bias: bool, fold: bool, eps: float,
            algo: int = 0) -> ops.Custom:
    """The forward Custom op y = act(conv(x, w) [+ bias]) [with BatchNorm folded], with its bprop.

    Inputs: cfg, x, w, [bias], [gamma, beta, moving_mean, moving_var]. Gradients: one op for dx (GRAPH mode
    drops it for the first layer), one for dw and the per-channel parameters."""
    extra = (1 if has_bias else 0) + (4 if fold else 0)
    attrs = dict(geo.attrs(), act=act, alpha=float(alpha), has_bias=has_bias, fold=fold, eps=float(eps), algo=algo)

    def fwd_shape(_cfg, x, w, *_rest):
        return [x[0], w[0], *geo.out_hw(x[2], x[3])]

    def grads(act_code: int):
        a = dict(attrs, act=act_code)
        dx_op = _custom("ConvBackwardData", lambda _c, dy, y, x, w, *r: list(x), F32, **a)
        nw = 1 + extra
        dw_dtype = F32 if nw == 1 else (F32,) * nw
        dw_op = _custom("ConvBackwardFilter",
                        lambda _c, dy, y, x, w, *r: list(w) if nw == 1 else tuple([list(w)] + [[w[0]]] * extra),
                        dw_dtype, **a)
        return dx_op, dw_op

    if grad_from_output(act, alpha):
        dx_op, dw_op = grads(act)
        bprop = _conv_bprop(extra, dx_op, dw_op)
    else:  # hswish / silu: recompute the pre-activation with a second forward op (rare: eval-mode gradients)
        cfg0 = Tensor(conv_cfg(geo, 0, alpha, has_bias, fold, eps, algo))
        fwd0 = _custom("ConvForward", fwd_shape, F32, **dict(attrs, act=0))
        dx_op, dw_op = grads(0)
        bprop = _conv_bprop_recompute(extra, fwd0, cfg0, act, alpha, dx_op, dw_op)
    return _custom("ConvForward", fwd_shape, F32, bprop, **attrs)


def _conv_bprop(extra: int, dx_op, dw_op) -> Callable:
    # one explicit signature per input count: GRAPH mode parses bprops and has no *args
    def plain(cfg, x, w, out, dout):
        return ops.zeros_like(cfg), dx_op(cfg, dout, out, x, w), dw_op(cfg, dout, out, x, w)

    def bias(cfg, x, w, b, out, dout):
        dw, db = dw_op(cfg, dout, out, x, w, b)
        return ops.zeros_like(cfg), dx_op(cfg, dout, out, x, w, b), dw, db

    def bn(cfg, x, w, g, be, m, v, out, dout):
        dw, dg, dbe, dm, dv = dw_op(cfg, dout, out, x, w, g, be, m, v)
        return ops.zeros_like(cfg), dx_op(cfg, dout, out, x, w, g, be, m, v), dw, dg, dbe, dm, dv

    def bias_bn(cfg, x, w, b, g, be, m, v, out, dout):
        dw, db, dg, dbe, dm, dv = dw_op(cfg, dout, out, x, w, b, g, be, m, v)
        return ops.zeros_like(cfg), dx_op(cfg, dout, out, x, w, b, g, be, m, v), dw, db, dg, dbe, dm, dv

    variants: Dict[int, Callable[..., Any]] = {0: plain, 1: bias, 4: bn, 5: bias_bn}
    return variants[extra]


def _conv_bprop_recompute(extra: int, fwd0, cfg0: Tensor, act: int, alpha: float, dx_op, dw_op) -> Callable:
    def plain(cfg, x, w, out, dout):
        z = fwd0(cfg0, x, w)
        gz = dout * _act_grad(act, alpha, z)
        return ops.zeros_like(cfg), dx_op(cfg0, gz, z, x, w), dw_op(cfg0, gz, z, x, w)

    def bias(cfg, x, w, b, out, dout):
        z = fwd0(cfg0, x, w, b)
        gz = dout * _act_grad(act, alpha, z)
        dw, db = dw_op(cfg0, gz, z, x, w, b)
        return ops.zeros_like(cfg), dx_op(cfg0, gz, z, x, w, b), dw, db

    def bn(cfg, x, w, g, be, m, v, out, dout):
        z = fwd0(cfg0, x, w, g, be, m, v)
        gz = dout * _act_grad(act, alpha, z)
        dw, dg, dbe, dm, dv = dw_op(cfg0, gz, z, x, w, g, be, m, v)
        return ops.zeros_like(cfg), dx_op(cfg0, gz, z, x, w, g, be, m, v), dw, dg, dbe, dm, dv

    def bias_bn(cfg, x, w, b, g, be, m, v, out, dout):
        z = fwd0(cfg0, x, w, b, g, be, m, v)
        gz = dout * _act_grad(act, alpha, z)
        dw, db, dg, dbe, dm, dv = dw_op(cfg0, gz, z, x, w, b, g, be, m, v)
        return ops.zeros_like(cfg), dx_op(cfg0, gz, z, x, w, b, g, be, m, v), dw, db, dg, dbe, dm, dv

    variants: Dict[int, Callable[..., Any]] = {0: plain, 1: bias, 4: bn, 5: bias_bn}
    return variants[extra]


# ---------------------------------------------------------------- pooling
@dataclass(frozen=True)
class PoolGeometry:
    """A max or average pool: window, stride, explicit pads (top, left, bottom, right) or "same", dilation
    (max only), ceil mode, count_include_pad and divisor_override (average only)."""

    kernel: Pair
    stride: Pair
    pads: Pads = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    avg: bool = False
    same: bool = False
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor: int = 0

    def out_hw(self, h: int, w: int) -> Pair:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        if self.same:
            return -(-h // sh), -(-w // sw)
        pt, pl, pb, pr = self.pads
        return (pool_out_size(h, pt, pb, dh * (kh - 1) + 1, sh, self.ceil_mode),
                pool_out_size(w, pl, pr, dw * (kw - 1) + 1, sw, self.ceil_mode))

    def cfg(self) -> np.ndarray:
        return np.array([*self.kernel, *self.stride, *self.pads, *self.dilation, int(self.avg),
                         int(self.count_include_pad), self.divisor, int(self.same), int(self.ceil_mode), 0], np.int64)

    def attrs(self) -> dict:
        return dict(kernel=self.kernel, stride=self.stride, pads=self.pads, dilation=self.dilation, avg=self.avg,
                    same=self.same, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor=self.divisor)


def pool_op(geo: PoolGeometry) -> ops.Custom:
    """The forward pooling op (inputs cfg, x) with its bprop."""
    attrs = geo.attrs()

    def fwd_shape(_cfg, x):
        return [x[0], x[1], *geo.out_hw(x[2], x[3])]

    backward = _custom("PoolBackward", lambda _c, dy, x, y: list(x), F32, **attrs)

    def bprop(cfg, x, out, dout):
        return ops.zeros_like(cfg), backward(cfg, dout, x, out)

    return _custom("PoolForward", fwd_shape, F32, bprop, **attrs)


# ---------------------------------------------------------------- BatchNorm
def bn_cfg(act: int, alpha: float, eps: float, momentum: float) -> np.ndarray:
    """cfg[8] of the BatchNorm entry points; momentum as nn.BatchNorm2d takes it (new = m*old + (1-m)*batch)."""
    return np.array([act, bits(alpha), bits(eps), bits(momentum), 0, 0, 0, 0], np.int64)


def bn_train_op(act: int, alpha: float, eps: float, momentum: float) -> ops.Custom:
    """Batch statistics: inputs cfg, x, gamma, beta, moving_mean, moving_var -> (y, mean, invstd, new_mean,
    new_var); the Cell assigns the new moving statistics (AOT outputs are always fresh tensors)."""
    attrs: Dict[str, Any] = dict(act=act, alpha=float(alpha), eps=float(eps), momentum=float(momentum),
                                 batch_stats=True)
    backward = _custom("BatchNormTrainBackward", lambda _c, dy, x, y, g, b, m, s: (list(x), [g[0]], [g[0]]),
                       (F32, F32, F32), **attrs)

    def bprop(cfg, x, gamma, beta, mm, mv, out, dout):
        dx, dg, db = backward(cfg, dout[0], x, out[0], gamma, beta, out[1], out[2])
        return ops.zeros_like(cfg), dx, dg, db, ops.zeros_like(mm), ops.zeros_like(mv)

    return _custom("BatchNormTrain", lambda _c, x, g, b, m, v: (list(x), [g[0]], [g[0]], [g[0]], [g[0]]),
                   (F32,) * 5, bprop, **attrs)


def bn_infer_op(act: int, alpha: float, eps: float) -> ops.Custom:
    """Moving statistics: inputs cfg, x, gamma, beta, mean, var -> y."""
    attrs: Dict[str, Any] = dict(act=act, alpha=float(alpha), eps=float(eps), batch_stats=False)
    backward = _custom("BatchNormInferBackward", lambda _c, dy, x, y, g, b, m, v: (list(x), [g[0]], [g[0]]),
                       (F32, F32, F32), **attrs)

    def bprop(cfg, x, gamma, beta, mean, var, out, dout):
        dx, dg, db = backward(cfg, dout, x, out, gamma, beta, mean, var)
        return ops.zeros_like(cfg), dx, dg, db, ops.zeros_like(mean), ops.zeros_like(var)

    return _custom("BatchNormInfer", lambda _c, x, g, b, m, v: list(x), F32, bprop, **attrs)


# ---------------------------------------------------------------- a training step's gradients
def grad_norm_op(shapes: Tuple[Tuple[int, ...], ...]) -> ops.Custom:
    """Inputs: the gradients (float32, these shapes) -> stats[2]: (1 if all finite else 0, global L2 norm)."""
    return _custom("GradNorm", lambda *_grads: [2], F32, shapes=tuple(shapes))


def grad_clip_op(shapes: Tuple[Tuple[int, ...], ...]) -> ops.Custom:
    """Inputs: cfg[1] (the clip norm's bits), GradNorm's stats, the gradients -> the gradients scaled by
    clip / norm where the norm is finite and at least clip (one output per gradient; a lone one untupled)."""
    if len(shapes) == 1:
        return _custom("GradClip", lambda _cfg, _stats, grad: list(grad), F32, shapes=tuple(shapes))
    return _custom("GradClip", lambda _cfg, _stats, *grads: tuple(list(g) for g in grads), (F32,) * len(shapes),
                   shapes=tuple(shapes))


def pair(v) -> Pair:
    """An int or a 1- or 2-sequence as (h, w)."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(t) for t in v)
    return (v[0], v[0]) if len(v) == 1 else (v[-2], v[-1])


__all__ = ["ACT_CODES", "ALGOS", "ConvGeometry", "PoolGeometry", "bits", "bn_cfg", "bn_infer_op", "bn_train_op",
           "conv_cfg", "conv_op", "grad_clip_op", "grad_from_output", "grad_norm_op", "pair", "pool_op", "pool_out_size", "same_pads"]
