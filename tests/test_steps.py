"""The compiled training step: its finiteness check, loss scaling and overflow skip."""
from __future__ import annotations

from typing import List

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


def _step(loss_scale: float, *, skip_overflow: bool = False, dynamic: bool = False):
    ms.set_seed(0)
    net = nn.Dense(4, 3)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    state = StepState(net.trainable_params(), loss_scale, 1)
    step = TrainStep(WithLoss(net, nn.CrossEntropyLoss()), opt, state, apply=True, skip_overflow=skip_overflow,
                     dynamic=dynamic)
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


@pytest.mark.parametrize("skip", [True, False])
def test_a_non_finite_step_is_reported_and_skipped_when_asked(skip: bool) -> None:
    images = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    images[3, 1] = np.nan
    labels = Tensor(np.arange(8, dtype=np.int32) % 3)
    net, step = _step(1.0, skip_overflow=skip)
    before = _weights(net)
    _, finite = step(Tensor(images), labels)
    assert not bool(finite.asnumpy())
    after = _weights(net)
    if skip:
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    else:
        assert not all(np.isfinite(w).all() for w in after)
