"""The compiled training step: its finiteness check, clipping, loss scaling and overflow skip, with
MindSpore's ops and with the gradient kernels (GradNorm, GradClip; their numpy tests are in test_kernels)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402

from mindplug.engine.steps import StepState, TrainStep, WithLoss, all_finite  # noqa: E402

SHAPES = [(3, 4), (7,), (2, 3, 5), (1,)]


def _grads(rng: np.random.Generator, dtype: type = np.float32) -> List[np.ndarray]:
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


class _Check(nn.Cell):
    def construct(self, grads):
        return all_finite(grads)


def _finite(grads: List[np.ndarray]) -> bool:
    return bool(_Check()(tuple(Tensor(g) for g in grads)).asnumpy())


@pytest.mark.parametrize("seed", range(4))
def test_all_finite_matches_numpy_over_random_poisonings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grads = _grads(rng)
    assert _finite(grads)
    for bad in (np.inf, -np.inf, np.nan):
        poisoned = [g.copy() for g in grads]
        which = int(rng.integers(len(SHAPES)))
        poisoned[which].reshape(-1)[int(rng.integers(poisoned[which].size))] = bad
        assert _finite(poisoned) == all(np.isfinite(g).all() for g in poisoned) is False


def test_all_finite_sees_opposite_infinities_in_different_tensors() -> None:
    grads = _grads(np.random.default_rng(0))
    grads[0][0, 0], grads[2][1, 1, 1] = np.inf, -np.inf
    assert not _finite(grads)


def test_all_finite_sums_half_precision_in_float32() -> None:
    """float16 gradients whose sum exceeds float16's range are still finite."""
    grads = [np.full(shape, 60000.0, np.float16) for shape in SHAPES]
    assert _finite(grads)


def _step(loss_scale: float, *, skip_overflow: bool = False, dynamic: bool = False, kernels: bool = False,
          clip_value: Optional[float] = None):
    ms.set_seed(0)
    net = nn.Dense(4, 3)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    state = StepState(net.trainable_params(), loss_scale, 1)
    step = TrainStep(WithLoss(net, nn.CrossEntropyLoss()), opt, state, apply=True, skip_overflow=skip_overflow,
                     dynamic=dynamic, kernels=kernels, clip_value=clip_value)
    return net, step


def _weights(net: nn.Cell) -> List[np.ndarray]:
    return [p.asnumpy().copy() for p in net.trainable_params()]


def test_fixed_loss_scale_gives_the_unscaled_update() -> None:
    images = Tensor(np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32))
    labels = Tensor(np.arange(8, dtype=np.int32) % 3)
    results = []
    for scale in (1.0, 64.0):
        net, step = _step(scale)
        before = _weights(net)
        loss, finite = step(images, labels)
        assert bool(finite.asnumpy())
        after = _weights(net)
        assert any(not np.allclose(a, b) for a, b in zip(before, after))
        results.append(after)
    for one, scaled in zip(*results):
        np.testing.assert_allclose(one, scaled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernels", [False, True], ids=["native", "kernels"])
@pytest.mark.parametrize("skip", [True, False])
def test_a_non_finite_step_is_reported_and_skipped_when_asked(skip: bool, kernels: bool) -> None:
    images = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    images[3, 1] = np.nan
    labels = Tensor(np.arange(8, dtype=np.int32) % 3)
    net, step = _step(1.0, skip_overflow=skip, kernels=kernels, clip_value=0.5)
    before = _weights(net)
    _, finite = step(Tensor(images), labels)
    assert not bool(finite.asnumpy())
    after = _weights(net)
    if skip:
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    else:
        assert not all(np.isfinite(w).all() for w in after)


def _bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of NCHW images (the edge pixel repeated), in float64."""
    def axis(size_in: int, size_out: int):
        where = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(where).astype(int)
        return low, np.minimum(low + 1, size_in - 1), where - low

    top, bottom, fy = axis(images.shape[2], height)
    left, right, fx = axis(images.shape[3], width)
    rows = images[:, :, top] * (1 - fy)[:, None] + images[:, :, bottom] * fy[:, None]
    return rows[..., left] * (1 - fx) + rows[..., right] * fx


class _Images(nn.Cell):
    """A 'loss' that returns what the network gave it, so WithLoss's input reaches the test."""

    def construct(self, logits, labels):
        return logits


@pytest.mark.parametrize("seed", range(3))
def test_progressive_resize_matches_a_numpy_bilinear_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(5, 30, 2))
    size = int(rng.integers(3, 40))
    images = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    out = WithLoss(nn.Identity(), _Images(), size)(Tensor(images), Tensor(np.zeros(2, np.int32))).asnumpy()
    short = min(height, width)
    expect_shape = (size, max(1, round(width * size / short))) if height <= width else \
        (max(1, round(height * size / short)), size)
    assert out.shape == (2, 3) + expect_shape
    np.testing.assert_allclose(out, _bilinear(images.astype(np.float64), *expect_shape), rtol=1e-5, atol=1e-5)


def test_progressive_size_follows_the_schedule() -> None:
    from mindplug.engine.steps import progressive_size

    assert [progressive_size([32, 40, 48], [1, 3, 6], e) for e in range(7)] == [32, 32, 40, 40, 40, 48, 48]
    assert progressive_size([], [], 4) is None


@pytest.mark.parametrize("clip", [None, 0.05, 100.0], ids=["no-clip", "clipping", "under-clip"])
def test_fused_gradient_passes_train_as_the_native_step(mode: str, clip: Optional[float]) -> None:
    """Three steps with the kernels' norm and clip give MindSpore's clip_by_global_norm weights."""
    rng = np.random.default_rng(3)
    batches = [(Tensor(rng.standard_normal((8, 4)).astype(np.float32)), Tensor(np.arange(8, dtype=np.int32) % 3))
               for _ in range(3)]
    results = []
    for kernels in (False, True):
        net, step = _step(1.0, kernels=kernels, clip_value=clip)
        assert step.passes.fused is kernels
        for images, labels in batches:
            _, finite = step(images, labels)
            assert bool(finite.asnumpy())
        results.append(_weights(net))
    for native, fused in zip(*results):
        np.testing.assert_allclose(fused, native, rtol=1e-5, atol=1e-7)
