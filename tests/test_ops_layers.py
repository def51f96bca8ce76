"""mindplug.ops.Conv2d / MaxPool2d / AvgPool2d and the kernel BatchNorm against mindspore.nn's own cells, in
GRAPH and PYNATIVE mode, forward and backward: same signatures, same parameter names, same numbers.

Native MindSpore is the reference here (padding order, "same" with strides and dilation, ceil mode, the
BatchNorm moving-average rule); the numpy float64 references are in test_kernels.py.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402

import mindplug.ops as mo  # noqa: E402
from mindplug.ops import _library  # noqa: E402
from mindplug.ops import layers as L  # noqa: E402

pytestmark = [pytest.mark.skipif(not _library.library_path().is_file(), reason="kernel library not built"),
              pytest.mark.usefixtures("kernels_allowed")]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def normal(shape, seed=0, scale=1.0, shift=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(np.float32)


class Weighted(nn.Cell):
    """sum(f(x) * r): every output element gets its own gradient."""

    def __init__(self, fn, r):
        super().__init__()
        self.fn, self.r = fn, r

    def construct(self, x):
        return (self.fn(x) * self.r).sum()


def value_and_grads(cell, x, seed=5):
    out = cell(x)
    r = Tensor(normal(out.shape, seed))
    params = cell.trainable_params()
    grads = ms.grad(Weighted(cell, r), grad_position=0, weights=params)(x) if params else \
        (ms.grad(Weighted(cell, r), grad_position=0)(x), ())
    return out.asnumpy(), grads[0].asnumpy(), [g.asnumpy() for g in grads[1]]


def copy_params(src: nn.Cell, dst: nn.Cell) -> None:
    for (name, p), (_, q) in zip(src.parameters_and_names(), dst.parameters_and_names()):
        q.set_data(p.data.copy())


def test_signatures_and_parameter_names_match_nn():
    for ours, theirs in [(mo.Conv2d, nn.Conv2d), (mo.MaxPool2d, nn.MaxPool2d), (mo.AvgPool2d, nn.AvgPool2d),
                         (L.BatchNorm2d, nn.BatchNorm2d)]:
        assert inspect.signature(ours.__init__) == inspect.signature(theirs.__init__), ours
        assert issubclass(ours, theirs)
    a, b = mo.Conv2d(3, 8, 3, has_bias=True), nn.Conv2d(3, 8, 3, has_bias=True)
    assert [p.name for p in a.get_parameters()] == [p.name for p in b.get_parameters()]
    assert a._mp_reason is None


CONVS = [
    dict(kernel_size=3, pad_mode="pad", padding=(1, 2, 0, 3)),             # MindSpore's (top, bottom, left, right)
    dict(kernel_size=(3, 5), stride=2, pad_mode="same"),
    dict(kernel_size=3, stride=3, pad_mode="same", dilation=2),
    dict(kernel_size=(2, 4), stride=(2, 1), pad_mode="valid", dilation=(1, 2)),
    dict(kernel_size=3, pad_mode="pad", padding=1, group=4, has_bias=True),
    dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, group=8),     # depthwise
    dict(kernel_size=5, pad_mode="same", group=8, has_bias=True),          # depthwise, bias
    dict(kernel_size=1, stride=2, has_bias=True),
    dict(kernel_size=7, stride=2, pad_mode="pad", padding=3),
]


@pytest.mark.parametrize("kw", CONVS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv2d_matches_nn(mode, kw):
    check_conv(kw, 8, 8 if kw.get("group") == 8 else 16)


@pytest.mark.parametrize("algo", ["winograd4", "winograd2"])
def test_winograd_conv2d_matches_nn(mode, algo, monkeypatch):
    monkeypatch.setattr(L, "_ALGO", algo)
    check_conv(dict(kernel_size=3, pad_mode="pad", padding=(1, 0, 2, 1), has_bias=True), 16, 24)


def check_conv(kw, c_in, c_out):
    x = Tensor(normal((2, c_in, 13, 11), 1))
    ms.set_seed(1)
    theirs = nn.Conv2d(c_in, c_out, **kw)
    ours = mo.Conv2d(c_in, c_out, **kw)
    copy_params(theirs, ours)
    assert ours._mp_reason is None
    got, want = value_and_grads(ours, x), value_and_grads(theirs, x)
    assert got[0].shape == want[0].shape
    assert rel_err(got[0], want[0]) < 1e-5
    assert rel_err(got[1], want[1]) < 1e-5
    for g, w in zip(got[2], want[2]):
        assert rel_err(g, w) < 1e-5


POOLS = [
    ("max", dict(kernel_size=3, stride=2, pad_mode="same")),
    ("max", dict(kernel_size=(2, 3), stride=(1, 2), pad_mode="valid")),
    ("max", dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, ceil_mode=True)),
    ("max", dict(kernel_size=3, stride=2, pad_mode="pad", padding=(1, 0), dilation=2, ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, pad_mode="same")),
    ("avg", dict(kernel_size=3, stride=2, pad_mode="valid")),
    ("avg", dict(kernel_size=3, stride=2, pad_mode="pad", padding=1)),
    ("avg", dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", dict(kernel_size=(3, 2), stride=(2, 3), pad_mode="pad", padding=(1, 1), ceil_mode=True,
                 divisor_override=4)),
    ("avg", dict(kernel_size=(11, 10), stride=1)),                           # global average pooling
]


@pytest.mark.parametrize("kind,kw", POOLS, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={x}" for k, x in v.items()))
def test_pools_match_nn(mode, kind, kw):
    x = Tensor(normal((2, 3, 11, 10), 3))
    ours = (mo.MaxPool2d if kind == "max" else mo.AvgPool2d)(**kw)
    theirs = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(**kw)
    assert ours._mp_reason is None
    got, want = value_and_grads(ours, x), value_and_grads(theirs, x)
    assert got[0].shape == want[0].shape
    assert rel_err(got[0], want[0]) < 1e-6
    assert rel_err(got[1], want[1]) < 1e-6


def test_max_pool_with_indices_stays_native():
    pool = mo.MaxPool2d(3, 2, pad_mode="pad", padding=1, return_indices=True)
    assert pool._mp_reason == "return_indices=True"
    out, idx = pool(Tensor(normal((1, 2, 6, 6))))
    assert out.shape == idx.shape == (1, 2, 3, 3)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_nn(mode, train):
    """Training: batch statistics, gradients and the moving-average update; inference: moving statistics."""
    x = Tensor(normal((4, 6, 5, 7), 2, scale=2.0, shift=1.0))
    theirs, ours = nn.BatchNorm2d(6, momentum=0.8, eps=1e-3), L.BatchNorm2d(6, momentum=0.8, eps=1e-3)
    for bn in (theirs, ours):
        bn.gamma.set_data(Tensor(normal((6,), 3)))
        bn.beta.set_data(Tensor(normal((6,), 4)))
        bn.moving_mean.set_data(Tensor(normal((6,), 5)))
        bn.moving_variance.set_data(Tensor(normal((6,), 6, 0.1, 1.0)))
        bn.set_train(train)
    got, want = value_and_grads(ours, x), value_and_grads(theirs, x)
    for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]]):
        assert rel_err(g, w) < 1e-5
    for name in ("moving_mean", "moving_variance"):
        assert rel_err(getattr(ours, name).asnumpy(), getattr(theirs, name).asnumpy()) < 1e-6, name


def test_non_float32_input_falls_back_to_native():
    """Mixed precision hands the cells float16: they run the native ops instead of the float32 kernels."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x = Tensor(normal((1, 4, 6, 6))).astype(ms.float16)
        conv = mo.Conv2d(4, 4, 3, weight_init="ones").to_float(ms.float16)
        assert conv(x).dtype == ms.float16
        assert mo.MaxPool2d(2, 2)(x).dtype == ms.float16
    finally:
        ms.set_context(mode=previous)


def test_cells_built_native_under_env(monkeypatch):
    monkeypatch.setenv("MINDPLUG_KERNELS", "native")
    conv = mo.Conv2d(3, 4, 3)
    assert conv._mp_reason == "MINDPLUG_KERNELS=native"
    assert conv(Tensor(normal((1, 3, 5, 5)))).shape == (1, 4, 5, 5)
    conv_params = {p.name for p in conv.get_parameters()}
    assert conv_params == {"weight"}


def test_layers_sharing_geometry_but_not_shape_keep_their_own_shapes():
    """PYNATIVE caches inferred shapes per primitive: two convs differing only in stride."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x = Tensor(normal((1, 2, 8, 8)))
        shapes = [mo.Conv2d(2, 3, 3, stride=s)(x).shape for s in (1, 2, 1, 4)]
    finally:
        ms.set_context(mode=previous)
    assert shapes == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 2, 2)]


def test_parameters_survive_a_checkpoint_round_trip(tmp_path):
    net = nn.SequentialCell([mo.Conv2d(3, 4, 3, has_bias=True), L.BatchNorm2d(4), mo.MaxPool2d(2, 2)])
    path = str(tmp_path / "layers.ckpt")
    ms.save_checkpoint(net, path)
    twin = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=True), nn.BatchNorm2d(4), nn.MaxPool2d(2, 2)])
    not_loaded, _ = ms.load_param_into_net(twin, ms.load_checkpoint(path), strict_load=True)
    assert not not_loaded
