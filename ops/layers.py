"""Drop-in replacements for mindspore.nn's Conv2d, MaxPool2d, AvgPool2d and BatchNorm2d on the C++ kernels.

Each subclasses the nn class it replaces and takes its exact signature, so isinstance checks, parameter
names, checkpoints, optimizers and weight-decay filters see no difference. ``accelerate`` turns existing nn
cells into these in place (it switches the object's class and calls ``_mp_prepare``): the same objects keep
the same Parameters under the same names, and containers that hold them need no update.

A layer the kernels cannot serve (a reason is recorded in ``_mp_reason``) and any call they cannot take
(input not 4-D float32, e.g. under mixed precision) run the native nn code, so nothing is silently wrong.

Fusion (set up by ``accelerate`` for provable chains only, see ``_fusion``): a conv followed by a
BatchNorm2d and/or an activation computes them in one kernel. Who computes what depends on the BatchNorm's
mode: with moving statistics (inference) the conv folds the BatchNorm into its weights and applies the
activation, and the BatchNorm and activation cells pass their input through; with batch statistics
(training) the conv runs alone and the BatchNorm kernel applies the activation.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype

from mindplug.ops import _dispatch, _library
from mindplug.ops import _kernels as K

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "ACTIVATIONS", "fused_activation_class"]

#: activation cell classes the kernels can fuse -> kernel code
ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.HSwish: "hswish",
               nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}


def activation_code(cell: nn.Cell) -> Optional[tuple]:
    """(code, alpha) of a fusable activation cell, or None (unknown class, overridden construct, LeakyReLU
    slope outside [0, 1] where MindSpore's max(alpha x, x) is not the usual leaky ReLU)."""
    for cls, name in ACTIVATIONS.items():
        if type(cell) is cls:
            alpha = float(getattr(cell, "alpha", 0.0)) if cls is nn.LeakyReLU else 0.0
            if cls is nn.LeakyReLU and not 0.0 <= alpha <= 1.0:
                return None
            return K.ACT_CODES[name], alpha
    return None


def _native_act(act: int, alpha: float, y):
    """The activation with native ops (fallback paths)."""
    if act == 1:
        return ops.relu(y)
    if act == 2:
        return ops.relu6(y)
    if act == 3:
        return ops.maximum(y * alpha, y)
    if act == 4:
        return ops.hardswish(y)
    if act == 5:
        return y * ops.sigmoid(y)
    if act == 6:
        return ops.sigmoid(y)
    return y


def _is_float32(x) -> bool:
    return x.dtype == mstype.float32


# ---------------------------------------------------------------- convolution
def conv_geometry(cell: nn.Conv2d) -> tuple:
    """(ConvGeometry, None) for a conv the kernels serve, else (None, reason)."""
    if cell.data_format != "NCHW":
        return None, f"data_format {cell.data_format}"
    if cell.weight.dtype != mstype.float32:
        return None, f"{cell.weight.dtype} weights (the kernels are float32)"
    mode = str(cell.pad_mode).lower()
    kernel, stride, dilation = K.pair(cell.kernel_size), K.pair(cell.stride), K.pair(cell.dilation)
    pads = (0, 0, 0, 0)
    if mode == "pad":
        p = cell.padding
        if isinstance(p, (int, np.integer)):
            pads = (int(p),) * 4
        elif len(p) == 4:  # MindSpore's (top, bottom, left, right) -> the kernels' (top, left, bottom, right)
            pads = (int(p[0]), int(p[2]), int(p[1]), int(p[3]))
        else:
            return None, f"padding {p!r}"
    elif mode not in ("same", "valid"):
        return None, f"pad_mode {cell.pad_mode!r}"
    return K.ConvGeometry(kernel, stride, pads, dilation, int(cell.group), mode == "same"), None


def _batch_stats(bn: nn.Cell) -> bool:
    """Whether a BatchNorm normalises with the batch's statistics now (MindSpore's rule)."""
    ubs = bn.use_batch_statistics
    return bool(ubs) if ubs is not None else bool(bn.training)


class Conv2d(nn.Conv2d):
    """mindspore.nn.Conv2d on the kernels: same signature, same parameters, same results."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad_mode="same", padding=0, dilation=1,
                 group=1, has_bias=False, weight_init=None, bias_init=None, data_format="NCHW",
                 dtype=mstype.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, pad_mode=pad_mode, padding=padding,
                         dilation=dilation, group=group, has_bias=has_bias, weight_init=weight_init,
                         bias_init=bias_init, data_format=data_format, dtype=dtype)
        self._mp_prepare()

    def _mp_prepare(self) -> None:
        """Reads the geometry and builds the kernel ops (also after accelerate switched the class)."""
        geo, reason = conv_geometry(self)
        self._mp_geo, self._mp_reason = geo, _dispatch.why_native(_library.LAYER_ENTRIES) or reason
        self._mp_bn, self._mp_act, self._mp_alpha = None, 0, 0.0
        self._mp_has_bn = False
        self._mp_build()

    def _mp_fuse(self, bn: Optional[nn.Cell], act: int, alpha: float) -> None:
        """Take over the BatchNorm `bn` (inference) and the activation `act` that follow this conv."""
        object.__setattr__(self, "_mp_bn", bn)  # a reference, not a child: the BatchNorm stays where it is
        self._mp_has_bn = bn is not None
        self._mp_act, self._mp_alpha = int(act), float(alpha)
        self._mp_build()

    def _mp_build(self) -> None:
        if self._mp_reason is not None:
            return
        geo, has_bias = self._mp_geo, bool(self.has_bias)
        algo = K.ALGOS[_ALGO]
        plain_act = 0 if self._mp_has_bn else self._mp_act
        self._mp_op = K.conv_op(geo, plain_act, self._mp_alpha, has_bias, False, 1e-5, algo)
        self._mp_cfg = Tensor(K.conv_cfg(geo, plain_act, self._mp_alpha, has_bias, False, 1e-5, algo))
        if self._mp_bn is not None:
            eps = float(self._mp_bn.eps)
            self._mp_op_fold = K.conv_op(geo, self._mp_act, self._mp_alpha, has_bias, True, eps, algo)
            self._mp_cfg_fold = Tensor(K.conv_cfg(geo, self._mp_act, self._mp_alpha, has_bias, True, eps, algo))

    def _mp_native(self, x):
        y = self.conv2d(x, self.weight)
        if self.has_bias:
            y = self.bias_add(y, self.bias)
        if self._mp_has_bn:
            bn = self._mp_bn
            if _batch_stats(bn):
                return y  # the BatchNorm cell normalises (and activates) itself
            y = bn.bn_infer(y, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)[0]
        return _native_act(self._mp_act, self._mp_alpha, y)

    def construct(self, x):
        if self._mp_reason is not None:
            return self._mp_native(x)
        if x.ndim != 4 or not _is_float32(x):
            return self._mp_native(x)
        if self._mp_has_bn:
            bn = self._mp_bn
            if not _batch_stats(bn):
                if self.has_bias:
                    return self._mp_op_fold(self._mp_cfg_fold, x, self.weight, self.bias, bn.gamma, bn.beta,
                                            bn.moving_mean, bn.moving_variance)
                return self._mp_op_fold(self._mp_cfg_fold, x, self.weight, bn.gamma, bn.beta, bn.moving_mean,
                                        bn.moving_variance)
        if self.has_bias:
            return self._mp_op(self._mp_cfg, x, self.weight, self.bias)
        return self._mp_op(self._mp_cfg, x, self.weight)


#: conv algorithm for newly built layers ("auto"; the tests pin others)
_ALGO = "auto"


# ---------------------------------------------------------------- BatchNorm
class BatchNorm2d(nn.BatchNorm2d):
    """mindspore.nn.BatchNorm2d on the kernels, with an optional fused activation. Training uses the batch
    statistics and updates the moving ones exactly as MindSpore does; inference uses the moving ones."""

    def __init__(self, num_features, eps=1e-5, momentum=0.9, affine=True, gamma_init="ones", beta_init="zeros",
                 moving_mean_init="zeros", moving_var_init="ones", use_batch_statistics=None, data_format="NCHW",
                 dtype=mstype.float32):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, gamma_init=gamma_init,
                         beta_init=beta_init, moving_mean_init=moving_mean_init, moving_var_init=moving_var_init,
                         use_batch_statistics=use_batch_statistics, data_format=data_format, dtype=dtype)
        self._mp_prepare()

    def _mp_prepare(self) -> None:
        reason = _dispatch.why_native(_library.LAYER_ENTRIES)
        if reason is not None:
            pass
        elif self.format != "NCHW":
            reason = f"data_format {self.format}"
        elif self.gamma.dtype != mstype.float32:
            reason = f"{self.gamma.dtype} parameters (the kernels are float32)"
        self._mp_reason = reason
        self._mp_folded, self._mp_act, self._mp_alpha = False, 0, 0.0
        self._mp_build()

    def _mp_fuse(self, folded: bool, act: int, alpha: float) -> None:
        """folded: a conv before it applies this BatchNorm with moving statistics; act: apply it here."""
        self._mp_folded, self._mp_act, self._mp_alpha = bool(folded), int(act), float(alpha)
        self._mp_build()

    def _mp_build(self) -> None:
        if self._mp_reason is not None:
            return
        momentum = 1.0 - float(self.momentum)  # nn.BatchNorm2d keeps the primitive's (1 - momentum)
        eps = float(self.eps)
        self._mp_train = K.bn_train_op(self._mp_act, self._mp_alpha, eps, momentum)
        self._mp_infer = K.bn_infer_op(self._mp_act, self._mp_alpha, eps)
        self._mp_cfg = Tensor(K.bn_cfg(self._mp_act, self._mp_alpha, eps, momentum))

    def construct(self, x):
        batch = _batch_stats(self)
        if self._mp_folded and not batch:
            return x  # the conv before this cell has applied it (and the activation)
        if self._mp_reason is not None:
            return _native_act(self._mp_act, self._mp_alpha, super().construct(x))
        if x.ndim != 4 or not _is_float32(x):
            return _native_act(self._mp_act, self._mp_alpha, super().construct(x))
        if batch:
            y, _, _, mean, var = self._mp_train(self._mp_cfg, x, self.gamma, self.beta, self.moving_mean,
                                                self.moving_variance)
            y = ops.depend(y, ops.assign(self.moving_mean, mean))
            return ops.depend(y, ops.assign(self.moving_variance, var))
        return self._mp_infer(self._mp_cfg, x, self.gamma, self.beta, self.moving_mean, self.moving_variance)


# ---------------------------------------------------------------- pooling
def _pool_prim(cell: nn.Cell):
    return getattr(cell, "max_pool", None) if isinstance(cell, nn.MaxPool2d) else getattr(cell, "avg_pool", None)


def pool_geometry(cell: nn.Cell) -> tuple:
    """(PoolGeometry, None) for a MaxPool2d / AvgPool2d the kernels serve, else (None, reason)."""
    if cell.format != "NCHW":
        return None, f"data_format {cell.format}"
    is_max = isinstance(cell, nn.MaxPool2d)
    kernel, stride = K.pair(cell.kernel_size), K.pair(cell.stride)
    mode = str(cell.pad_mode).upper()
    prim = _pool_prim(cell)
    if prim is None:
        return None, "no pooling primitive to read the geometry from"
    attrs = prim.attrs
    if is_max:
        if cell.return_indices:
            return None, "return_indices=True"
        if mode == "PAD":
            _, ph, pw = cell.padding
            dil = attrs.get("dilation", (1, 1, 1))
            dil = (int(dil[-2]), int(dil[-1])) if isinstance(dil, (tuple, list)) else (int(dil), int(dil))
            geo = K.PoolGeometry(kernel, stride, (ph, pw, ph, pw), dil, ceil_mode=bool(attrs.get("ceil_mode", False)))
        else:
            geo = K.PoolGeometry(kernel, stride, same=mode == "SAME")
    else:
        if getattr(cell, "is_expand", False):  # AvgPool3D underneath: explicit pads, ceil mode, divisor
            pad = attrs.get("pad", (0,) * 6)
            pad = tuple(int(p) for p in (pad if isinstance(pad, (tuple, list)) else (pad,) * 6))
            ceil = bool(attrs.get("ceil_mode", False))
            cip = bool(attrs.get("count_include_pad", True))
            div = int(attrs.get("divisor_override", 0) or 0)
            pad_mode = str(attrs.get("pad_mode", "PAD")).upper()
            if pad_mode not in ("PAD", "VALID", "0", "2"):
                return None, f"AvgPool3D pad_mode {pad_mode} with extra options"
            pads = (pad[2], pad[4], pad[3], pad[5]) if pad_mode in ("PAD", "0") else (0, 0, 0, 0)
            geo = K.PoolGeometry(kernel, stride, pads, avg=True, ceil_mode=ceil, count_include_pad=cip, divisor=div)
        else:
            # ops.AvgPool: "same" averages over the pixels inside the image (padding not counted)
            geo = K.PoolGeometry(kernel, stride, avg=True, same=mode == "SAME", count_include_pad=False)
    return geo, None


def _prepare_pool(cell: nn.Cell) -> None:
    """Reads the geometry and builds the pooling op (also after accelerate switched the class)."""
    geo, reason = pool_geometry(cell)
    cell._mp_geo, cell._mp_reason = geo, _dispatch.why_native(_library.LAYER_ENTRIES) or reason
    if cell._mp_reason is None:
        cell._mp_op = K.pool_op(geo)
        cell._mp_cfg = Tensor(geo.cfg())


class MaxPool2d(nn.MaxPool2d):
    """mindspore.nn.MaxPool2d on the kernels (any window, stride, padding, dilation, ceil mode)."""

    def __init__(self, kernel_size=1, stride=1, pad_mode="valid", padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, data_format="NCHW"):
        super().__init__(kernel_size=kernel_size, stride=stride, pad_mode=pad_mode, padding=padding,
                         dilation=dilation, return_indices=return_indices, ceil_mode=ceil_mode, data_format=data_format)
        self._mp_prepare()

    def _mp_prepare(self) -> None:
        _prepare_pool(self)

    def construct(self, x):
        if self._mp_reason is not None:
            return super().construct(x)
        if x.ndim != 4 or not _is_float32(x):
            return super().construct(x)
        return self._mp_op(self._mp_cfg, x)


class AvgPool2d(nn.AvgPool2d):
    """mindspore.nn.AvgPool2d on the kernels (any window, stride, padding, ceil mode, count_include_pad,
    divisor_override; a window covering the whole map is global average pooling)."""

    def __init__(self, kernel_size=1, stride=1, pad_mode="valid", padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, data_format="NCHW"):
        super().__init__(kernel_size=kernel_size, stride=stride, pad_mode=pad_mode, padding=padding,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override,
                         data_format=data_format)
        self._mp_prepare()

    def _mp_prepare(self) -> None:
        _prepare_pool(self)

    def construct(self, x):  # MaxPool2d's; a shared mixin's construct fails MindSpore's graph compile
        if self._mp_reason is not None:
            return super().construct(x)
        if x.ndim != 4 or not _is_float32(x):
            return super().construct(x)
        return self._mp_op(self._mp_cfg, x)


# ---------------------------------------------------------------- fused-away activations
def _pass_through(self, x):
    return x


_FUSED: Dict[type, type] = {}


def fused_activation_class(cls: type) -> type:
    """The subclass an activation cell becomes when the layer before it applies it: its input passes
    through (the cell stays in the tree, so the model's structure and repr are unchanged)."""
    if cls not in _FUSED:
        _FUSED[cls] = type(cls.__name__, (cls,), {
            "construct": _pass_through, "__module__": __name__,
            "__doc__": f"{cls.__name__} applied by the kernel of the layer before it (passes its input through)."})
    return _FUSED[cls]
