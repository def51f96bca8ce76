"""The compiled pieces of a training step: forward+backward, loss scaling, clipping, accumulation, update.

Two step cells share their state (loss scale, accumulation buffers): ``accumulate`` adds a micro-batch's
gradients to the buffers, ``apply`` adds the last one and updates the weights. The Python loop picks which
to call, so neither graph needs control flow on the step count.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

_SCALE_FACTOR = 2.0
_SCALE_WINDOW = 1000

_scale = ops.MultitypeFuncGraph("scale")
_add_into = ops.MultitypeFuncGraph("add_into")
_mean_with = ops.MultitypeFuncGraph("mean_with")
_zero = ops.MultitypeFuncGraph("zero")
_average = ops.MultitypeFuncGraph("average")
_sum32 = ops.MultitypeFuncGraph("sum32")


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor: Tensor, grad: Tensor) -> Tensor:
    return grad * factor.astype(grad.dtype)


@_add_into.register("Tensor", "Tensor")
def _add_into_tensor(buffer: Tensor, grad: Tensor) -> Tensor:
    return ops.assign_add(buffer, grad)


@_mean_with.register("Number", "Tensor", "Tensor")
def _mean_with_tensor(inv_count: float, buffer: Tensor, grad: Tensor) -> Tensor:
    return (buffer + grad) * inv_count


@_zero.register("Tensor")
def _zero_tensor(buffer: Tensor) -> Tensor:
    return ops.assign(buffer, ops.zeros_like(buffer))


@_sum32.register("Tensor")
def _sum32_tensor(grad: Tensor) -> Tensor:
    if grad.dtype != ms.float32:
        grad = grad.astype(ms.float32)
    return grad.sum()


def all_finite(grads: Any) -> Tensor:
    """True when no gradient holds an inf or a NaN: the sum of all gradients is finite exactly then (an
    inf or NaN element makes its sum non-finite; only finite sums beyond 3e38 would count as overflow).

    One reduction per tensor and one check, where ``ms.amp.all_finite`` runs IsFinite and ReduceAll on
    every tensor, whose CPU kernels are slow enough to show in a step's time.
    """
    return ops.isfinite(ops.addn(ops.HyperMap()(_sum32, grads)))


class GradPasses(nn.Cell):
    """A step's passes over all its gradients: whether they are finite, and the optional clip by global norm.

    On the kernels (``kernels=True``, float32 weights) one kernel computes the global norm and finiteness of
    all gradients and one scales them: MindSpore's composition launches several ops per gradient tensor,
    which costs a CPU step more than the arithmetic. Elsewhere ``all_finite`` and ``ops.clip_by_global_norm``.
    """

    def __init__(self, weights: Sequence[Parameter], clip_value: Optional[float], kernels: bool):
        super().__init__(auto_prefix=False)
        self.clip = clip_value is not None
        self.clip_value = float(clip_value or 1.0)
        # a 0-d output of an AOT op leaves a GRAPH as a Python float, not a tensor the optimizer can take
        self.fused = bool(kernels) and len(weights) > 0 and all(w.dtype == ms.float32 and len(w.shape) > 0
                                                                 for w in weights)
        if self.fused:
            from mindplug.ops._kernels import bits, grad_clip_op, grad_norm_op

            shapes = tuple(tuple(int(d) for d in w.shape) for w in weights)
            self.norm_op = grad_norm_op(shapes)
            self.clip_op = grad_clip_op(shapes) if self.clip else None
            self.single = len(shapes) == 1
            self.clip_cfg = Tensor(np.array([bits(self.clip_value)], np.int64))

    def finite(self, grads: Any) -> Tensor:
        if self.fused:
            return self.norm_op(*grads)[0] > 0.5
        return all_finite(grads)

    def construct(self, grads: Any) -> Any:
        """(the gradients, clipped if asked, and whether they were all finite)"""
        if not self.fused:
            finite = all_finite(grads)
            if self.clip:
                grads = ops.clip_by_global_norm(grads, self.clip_value)
            return grads, finite
        stats = self.norm_op(*grads)
        if self.clip:
            clipped = self.clip_op(self.clip_cfg, stats, *grads)
            grads = (clipped,) if self.single else clipped
        return grads, stats[0] > 0.5


@_average.register("Number", "Tensor", "Tensor")
def _average_tensor(decay: float, shadow: Tensor, weight: Tensor) -> Tensor:
    return ops.assign(shadow, shadow * decay + weight * (1.0 - decay))


class WithLoss(nn.Cell):
    """net + loss as one cell; the loss receives the raw output (a tuple when aux heads are on).

    ``size``: progressive resizing; the images are first resized (bilinear, half-pixel centres, aspect kept)
    so that their shorter side has ``size`` px.
    """

    def __init__(self, net: nn.Cell, loss_fn: nn.Cell, size: Optional[int] = None):
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = loss_fn
        self.size = size

    def construct(self, images: Tensor, labels: Tensor) -> Tensor:
        if self.size is not None:
            images = self.resized(images)
        return self.loss_fn(self.net(images), labels)

    def resized(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2], images.shape[-1]
        short = min(height, width)
        if short == self.size:
            return images
        target = (self.size, max(1, round(width * self.size / short))) if height <= width else \
            (max(1, round(height * self.size / short)), self.size)
        return ops.interpolate(images, size=target, mode="bilinear", align_corners=False)


def progressive_size(sizes: Sequence[int], epochs: Sequence[int], epoch: int) -> Optional[int]:
    """The training size of the 0-based ``epoch`` under a progressive-resizing schedule (None: none set)."""
    size = None
    for begin, value in zip(epochs, sizes):
        if epoch + 1 >= begin:
            size = value
    return size


class StepState:
    """Loss-scale value, its growth counter and the accumulation buffers: saved in train-state files."""

    def __init__(self, weights: Sequence[Parameter], loss_scale: float, accumulate: int):
        self.scale = Parameter(Tensor(np.float32(loss_scale)), name="loss_scale", requires_grad=False)
        self.initial_scale = float(loss_scale)
        self.good_steps = Parameter(Tensor(np.int32(0)), name="loss_scale_good_steps", requires_grad=False)
        self.buffers: List[Parameter] = []
        if accumulate > 1:
            self.buffers = [Parameter(ops.zeros(w.shape, w.dtype), name="grad_accum." + w.name,
                                      requires_grad=False) for w in weights]

    def parameters(self) -> List[Parameter]:
        return [self.scale, self.good_steps] + self.buffers


class TrainStep(nn.Cell):
    """One micro-step; ``apply=True`` also updates the weights (optimizer, optional clip, overflow skip).

    ``dynamic``: the loss scale halves on overflow and doubles after a window of finite steps;
    ``skip_overflow``: a step with non-finite gradients leaves the weights unchanged.
    """

    def __init__(self, with_loss: nn.Cell, optimizer: nn.Optimizer, state: StepState, *, apply: bool,
                 accumulate: int = 1, clip_value: Optional[float] = None, dynamic: bool = False,
                 skip_overflow: bool = False, reducer: Optional[nn.Cell] = None, kernels: bool = False):
        super().__init__(auto_prefix=False)
        self.with_loss = with_loss
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.global_step = optimizer.global_step
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.scale = state.scale
        self.unscale = dynamic or state.initial_scale != 1.0  # a fixed scale of 1 needs no division
        self.good_steps = state.good_steps
        self.buffers = ms.ParameterTuple(state.buffers) if state.buffers else None
        self.apply = apply
        self.accumulate = accumulate
        self.inv_accumulate = 1.0 / accumulate
        self.passes = GradPasses(self.weights, clip_value, kernels)
        self.dynamic = dynamic
        self.skip_overflow = skip_overflow or dynamic
        self.reducer = reducer
        self.hyper_map = ops.HyperMap()

    def construct(self, images: Tensor, labels: Tensor) -> Any:
        loss = self.with_loss(images, labels)
        sens = ops.fill(loss.dtype, loss.shape, 1.0) * self.scale.astype(loss.dtype)
        grads = self.grad(self.with_loss, self.weights)(images, labels, sens)
        if self.reducer is not None:
            grads = self.reducer(grads)
        if self.unscale:
            grads = self.hyper_map(ops.partial(_scale, ops.reciprocal(self.scale)), grads)
        if self.buffers is not None:
            if not self.apply:
                loss = ops.depend(loss, self.hyper_map(_add_into, self.buffers, grads))
                return loss, self.passes.finite(grads)
            grads = self.hyper_map(ops.partial(_mean_with, self.inv_accumulate), self.buffers, grads)
            grads = ops.depend(grads, self.hyper_map(_zero, self.buffers))
        grads, finite = self.passes(grads)
        if self.dynamic:
            loss = ops.depend(loss, self._adjust(finite))
        if self.skip_overflow:
            if finite:
                loss = ops.depend(loss, self._update(grads))
        else:
            loss = ops.depend(loss, self._update(grads))
        return loss, finite

    def _update(self, grads: Any) -> Any:
        """The optimizer's step, after which its ``global_step`` (which indexes the per-step learning rates)
        is one more than before, whether or not the optimizer counts steps itself."""
        before = self.global_step + 0
        done = self.optimizer(grads)
        return ops.depend(ops.assign(self.global_step, before + 1), done)

    def _adjust(self, finite: Tensor) -> Tensor:
        good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
        grow = good >= _SCALE_WINDOW
        scale = ops.select(finite, ops.select(grow, self.scale * _SCALE_FACTOR, self.scale),
                           ops.maximum(self.scale / _SCALE_FACTOR, ops.ones_like(self.scale)))
        good = ops.select(grow, ops.zeros_like(good), good)
        return ops.depend(ops.assign(self.scale, scale), ops.assign(self.good_steps, good))


class EMA(nn.Cell):
    """Exponential moving average of the weights, updated after every optimizer step."""

    def __init__(self, weights: Sequence[Parameter], decay: float):
        super().__init__(auto_prefix=False)
        self.weights = ms.ParameterTuple(list(weights))
        self.shadow = ms.ParameterTuple([Parameter(w.value().copy(), name="ema." + w.name, requires_grad=False)
                                         for w in weights])
        self.decay = float(decay)
        self.hyper_map = ops.HyperMap()

    def construct(self) -> Tensor:
        return self.hyper_map(ops.partial(_average, self.decay), self.shadow, self.weights)


class EvalStep(nn.Cell):
    """Top-1 and top-k hit counts and the summed cross-entropy of one batch (counts, so ranks can sum)."""

    def __init__(self, net: nn.Cell, k: int, hflip: bool = False):
        super().__init__(auto_prefix=False)
        self.net = net
        self.k = k
        self.hflip = hflip
        self.ce = nn.CrossEntropyLoss(reduction="sum")

    def construct(self, images: Tensor, labels: Tensor) -> Any:
        logits = self.logits(images)
        if self.hflip:  # test-time augmentation: the mean with the mirrored image's logits
            logits = (logits + self.logits(ops.flip(images, (-1,)))) / 2
        loss = self.ce(logits, labels)
        top = ops.topk(logits, self.k)[1]
        hits = ops.equal(top, labels.reshape((-1, 1))).astype(ms.float32)
        return hits[:, 0].sum(), hits.sum(), loss

    def logits(self, images: Tensor) -> Tensor:
        logits = self.net(images)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits.astype(ms.float32)


class FlatGradReducer(nn.Cell):
    """Averages all gradients over the ranks with ONE all-reduce of a flat buffer.

    On CPU, MindSpore's DistributedGradReducer all-reduces the gradient tensors one by one, which costs far
    more than one all-reduce of the same bytes (bench/RESULTS.md).
    """

    def __init__(self, parameters: Sequence[Parameter], degree: int):
        super().__init__(auto_prefix=False)
        self.shapes = tuple(tuple(p.shape) for p in parameters)
        self.sizes = tuple(int(np.prod(shape)) for shape in self.shapes)
        self.inv_degree = 1.0 / degree
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, grads: Any) -> Any:
        flat = ops.concat([g.reshape(-1) for g in grads])
        flat = self.all_reduce(flat) * self.inv_degree
        pieces = ops.split(flat, self.sizes)
        return tuple(piece.reshape(shape) for piece, shape in zip(pieces, self.shapes))


def grad_reducer(parameters: Sequence[Parameter], world: int, device: str) -> Optional[nn.Cell]:
    """The gradient averaging of a data-parallel step: none for one process; one flat all-reduce on CPU;
    MindSpore's own DistributedGradReducer on Ascend and GPU (those paths are not run here)."""
    if world <= 1:
        return None
    if device == "CPU":
        return FlatGradReducer(parameters, world)
    return nn.DistributedGradReducer(parameters, mean=True, degree=world)


class SumOverRanks(nn.Cell):
    """All-reduce sum of a small count vector, so validation metrics cover the whole validation set."""

    def __init__(self) -> None:
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, x: Tensor) -> Tensor:
        return self.all_reduce(x)


#: attribute pairs that hold the seeds of MindSpore's stateful random primitives
_SEED_ATTRS = (("Seed0", "Seed1"), ("seed", "seed2"))


def stochastic_primitives(net: nn.Cell) -> List[Any]:
    """Random primitives whose stream lives in the kernel (Dropout, UniformReal, ...), with their seed
    attribute names: the loop reseeds them per epoch."""
    found = []
    for _, cell in net.cells_and_names():
        for value in vars(cell).values():
            if isinstance(value, ops.Primitive):
                for pair in _SEED_ATTRS:
                    if all(name in value.attrs for name in pair):
                        found.append((value, pair))
                        break
    return found


def reseed(primitives: Sequence[Any], seed: int) -> None:
    """Give every stateful random primitive a seed derived from ``seed``; takes effect at the next compile
    (a fresh compile also restarts the kernel's stream)."""
    for index, (prim, (first, second)) in enumerate(primitives):
        prim.add_prim_attr(first, int((seed + 7919 * index) % (2**31 - 1)) or 1)
        prim.add_prim_attr(second, int((seed * 31 + index) % (2**31 - 1)) or 1)
