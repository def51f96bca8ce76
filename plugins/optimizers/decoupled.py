"""Optimizers MindSpore lacks in a usable form: Lion, AdamW with bias correction, and LAMB (``nn.Lamb``
is deprecated and its Lamb kernel does not exist on CPU).

All three decay weights the decoupled way (``p -= lr * wd * p``, not ``wd * p`` added to the gradient), so
weight decay is never multiplied by the loss scale; gradients are divided by it before the update.
(``nn.AdamWeightDecay`` is not used for AdamW: it has no bias correction, so its first steps are about
``(1 - beta1) / sqrt(1 - beta2)`` = 3x larger than AdamW's, and it takes no loss scale.)
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype
from mindspore.ops import composite as C

_lion_update = C.MultitypeFuncGraph("mindplug_lion_update")
_adamw_update = C.MultitypeFuncGraph("mindplug_adamw_update")
_lamb_update = C.MultitypeFuncGraph("mindplug_lamb_update")


@_lion_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _lion_step(beta1: Tensor, beta2: Tensor, lr: Tensor, weight_decay: Tensor, param: Tensor, moment: Tensor,
               gradient: Tensor, decay_flag: bool) -> Tensor:
    """p -= lr * (sign(b1 m + (1 - b1) g) + wd p);  m = b2 m + (1 - b2) g."""
    p32 = ops.cast(param, mstype.float32)
    m32 = ops.cast(moment, mstype.float32)
    g32 = ops.cast(gradient, mstype.float32)
    update = ops.sign(beta1 * m32 + (1.0 - beta1) * g32)
    if decay_flag:
        update = update + weight_decay * p32
    new_param = p32 - lr * update
    new_moment = beta2 * m32 + (1.0 - beta2) * g32
    new_param = ops.depend(new_param, ops.assign(param, ops.cast(new_param, param.dtype)))
    new_param = ops.depend(new_param, ops.assign(moment, ops.cast(new_moment, moment.dtype)))
    return new_param


@_adamw_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Bool")
def _adamw_step(beta1: Tensor, beta2: Tensor, eps: Tensor, bias1: Tensor, bias2: Tensor, lr: Tensor,
                weight_decay: Tensor, param: Tensor, m: Tensor, v: Tensor, gradient: Tensor,
                decay_flag: bool) -> Tensor:
    """p = p (1 - lr wd) - lr (m / bias1) / (sqrt(v / bias2) + eps), as torch.optim.AdamW."""
    p32 = ops.cast(param, mstype.float32)
    new_m, new_v = _adam_moments(beta1, beta2, m, v, gradient)
    if decay_flag:
        p32 = p32 - lr * weight_decay * p32
    new_param = p32 - lr * (new_m / bias1) / (ops.sqrt(new_v / bias2) + eps)
    return _assign_all(new_param, param, m, v, new_m, new_v)


@_lamb_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor", "Bool")
def _lamb_step(beta1: Tensor, beta2: Tensor, eps: Tensor, bias1: Tensor, bias2: Tensor, lr: Tensor,
               weight_decay: Tensor, param: Tensor, m: Tensor, v: Tensor, gradient: Tensor,
               decay_flag: bool) -> Tensor:
    """r = m_hat / (sqrt(v_hat) + eps) + wd p;  p -= lr * (||p|| / ||r||) * r  (trust ratio 1 if a norm is 0)."""
    p32 = ops.cast(param, mstype.float32)
    new_m, new_v = _adam_moments(beta1, beta2, m, v, gradient)
    ratio = (new_m / bias1) / (ops.sqrt(new_v / bias2) + eps)
    if decay_flag:
        ratio = ratio + weight_decay * p32
    w_norm = ops.sqrt(ops.reduce_sum(ops.square(p32)))
    r_norm = ops.sqrt(ops.reduce_sum(ops.square(ratio)))
    usable = ops.logical_and(w_norm > 0.0, r_norm > 0.0)
    trust = ops.select(usable, w_norm / ops.select(usable, r_norm, ops.ones_like(r_norm)), ops.ones_like(w_norm))
    new_param = p32 - lr * trust * ratio
    return _assign_all(new_param, param, m, v, new_m, new_v)


def _adam_moments(beta1: Tensor, beta2: Tensor, m: Tensor, v: Tensor, gradient: Tensor) -> Tuple[Tensor, Tensor]:
    """Adam's first and second moments, updated in fp32 whatever the parameters' dtype."""
    g32 = ops.cast(gradient, mstype.float32)
    new_m = beta1 * ops.cast(m, mstype.float32) + (1.0 - beta1) * g32
    new_v = beta2 * ops.cast(v, mstype.float32) + (1.0 - beta2) * ops.square(g32)
    return new_m, new_v


def _assign_all(new_param: Tensor, param: Tensor, m: Tensor, v: Tensor, new_m: Tensor, new_v: Tensor) -> Tensor:
    """Writes the parameter and both moments back in their own dtypes; the result depends on all three."""
    new_param = ops.depend(new_param, ops.assign(param, ops.cast(new_param, param.dtype)))
    new_param = ops.depend(new_param, ops.assign(m, ops.cast(new_m, m.dtype)))
    return ops.depend(new_param, ops.assign(v, ops.cast(new_v, v.dtype)))


def _scalar(value: float) -> Tensor:
    return Tensor(np.array(value, dtype=np.float32))


def _check_betas(betas: Sequence[float], owner: str) -> Tuple[float, float]:
    if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        raise ValueError(f"{owner}: betas must be two numbers in [0, 1), got {tuple(betas)!r}.")
    return float(betas[0]), float(betas[1])


class DecoupledWeightDecayOptimizer(nn.Optimizer):
    """Base for optimizers that decay weights themselves: loss scale divides gradients only.

    Subclasses implement ``_update(lr, weight_decay, gradients)``; group learning rates, group weight
    decay and per-step learning-rate arrays are resolved here by ``nn.Optimizer``.
    """

    def __init__(self, params: Any, learning_rate: Any, weight_decay: float = 0.0, loss_scale: float = 1.0):
        # loss_scale is deliberately not given to nn.Optimizer: it would multiply the weight decay by it.
        super().__init__(learning_rate, params, weight_decay)
        if float(loss_scale) <= 0.0:
            raise ValueError(f"{self.cls_name}: loss_scale must be > 0, got {loss_scale!r}.")
        self.loss_scale = float(loss_scale)
        self.reciprocal_scale = Tensor(1.0 / self.loss_scale, mstype.float32)
        self.need_scale = self.loss_scale != 1.0

    def construct(self, gradients: Tuple[Tensor, ...]) -> Any:
        gradients = self.flatten_gradients(gradients)
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return self._update(lr, weight_decay, gradients)


class Lion(DecoupledWeightDecayOptimizer):
    """Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"); use a 3-10x smaller
    learning rate and a 3-10x larger weight decay than for AdamW."""

    def __init__(self, params: Any, learning_rate: Any = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
                 weight_decay: float = 0.0, loss_scale: float = 1.0):
        super().__init__(params, learning_rate, weight_decay, loss_scale)
        beta1, beta2 = _check_betas((beta1, beta2), self.cls_name)
        self.beta1 = _scalar(beta1)
        self.beta2 = _scalar(beta2)
        self.moments = self._parameters.clone(prefix="lion_m", init="zeros")

    def _update(self, lr: Any, weight_decay: Any, gradients: Tuple[Tensor, ...]) -> Any:
        if self.is_group_lr:
            return self.hyper_map(ops.partial(_lion_update, self.beta1, self.beta2), lr, weight_decay,
                                  self._parameters, self.moments, gradients, self.decay_flags)
        if self.is_group:
            return self.hyper_map(ops.partial(_lion_update, self.beta1, self.beta2, lr), weight_decay,
                                  self._parameters, self.moments, gradients, self.decay_flags)
        return self.hyper_map(ops.partial(_lion_update, self.beta1, self.beta2, lr, weight_decay),
                              self._parameters, self.moments, gradients, self.decay_flags)


class _BiasCorrectedAdam(DecoupledWeightDecayOptimizer):
    """Adam moments with bias correction; subclasses pick the per-parameter step in ``_step``."""

    _step = _adamw_update

    def __init__(self, params: Any, learning_rate: Any, beta1: float, beta2: float, eps: float,
                 weight_decay: float, loss_scale: float, prefix: str):
        super().__init__(params, learning_rate, weight_decay, loss_scale)
        beta1, beta2 = _check_betas((beta1, beta2), self.cls_name)
        if float(eps) <= 0.0:
            raise ValueError(f"{self.cls_name}: eps must be > 0, got {eps!r}.")
        self.beta1 = _scalar(beta1)
        self.beta2 = _scalar(beta2)
        self.eps = _scalar(eps)
        self.moments1 = self._parameters.clone(prefix=f"{prefix}_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix=f"{prefix}_v", init="zeros")

    def _update(self, lr: Any, weight_decay: Any, gradients: Tuple[Tensor, ...]) -> Any:
        # global_step has just been incremented: it is t, the 1-based step number.
        step = ops.cast(self.global_step, mstype.float32).reshape(())
        bias1 = 1.0 - ops.pow(self.beta1, step)
        bias2 = 1.0 - ops.pow(self.beta2, step)
        if self.is_group_lr:
            return self.hyper_map(ops.partial(self._step, self.beta1, self.beta2, self.eps, bias1, bias2),
                                  lr, weight_decay, self._parameters, self.moments1, self.moments2, gradients,
                                  self.decay_flags)
        if self.is_group:
            return self.hyper_map(ops.partial(self._step, self.beta1, self.beta2, self.eps, bias1, bias2, lr),
                                  weight_decay, self._parameters, self.moments1, self.moments2, gradients,
                                  self.decay_flags)
        return self.hyper_map(ops.partial(self._step, self.beta1, self.beta2, self.eps, bias1, bias2, lr,
                                          weight_decay),
                              self._parameters, self.moments1, self.moments2, gradients, self.decay_flags)


class AdamW(_BiasCorrectedAdam):
    """AdamW (Loshchilov & Hutter, 2019) with bias correction, matching ``torch.optim.AdamW``."""

    _step = _adamw_update

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, loss_scale: float = 1.0):
        super().__init__(params, learning_rate, beta1, beta2, eps, weight_decay, loss_scale, "adamw")


class Lamb(_BiasCorrectedAdam):
    """LAMB (You et al., 2020): AdamW's direction scaled per tensor by the trust ratio ||w|| / ||update||."""

    _step = _lamb_update

    def __init__(self, params: Any, learning_rate: Any = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-6, weight_decay: float = 0.0, loss_scale: float = 1.0):
        super().__init__(params, learning_rate, beta1, beta2, eps, weight_decay, loss_scale, "lamb")
