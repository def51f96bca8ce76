"""The kernels as MindSpore Custom ops: against native MindSpore in GRAPH and PYNATIVE mode, forward and
backward, single ops, the fused Inception block, the whole GoogLeNet and a few SGD steps."""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, nn, ops  # noqa: E402

from mindplug.ops import _dispatch, _library  # noqa: E402
from mindplug.ops._aot import Conv2dKernel, InceptionKernel, MaxPoolKernel  # noqa: E402

pytestmark = [pytest.mark.skipif(not _library.library_path().is_file(), reason="kernel library not built"),
              pytest.mark.usefixtures("kernels_allowed")]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def normal(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


class WithWeight(nn.Cell):
    """y = f(x, w) for a kernel Cell or a native function, with w a Parameter so grads reach it."""

    def __init__(self, fn, w: np.ndarray) -> None:
        super().__init__()
        self.fn = fn
        self.w = Parameter(Tensor(w), name="w")

    def construct(self, x):
        return self.fn(x, self.w)


class NativeConv(nn.Cell):
    """ops.conv2d with "same", or explicit (top, left, bottom, right) pads applied by ops.pad."""

    def __init__(self, stride, padding, relu):
        super().__init__()
        self.stride, self.relu, self.same = stride, relu, padding == "same"
        if not self.same:
            t, l, b, r = (padding,) * 4 if isinstance(padding, int) else padding
            self.pads = (l, r, t, b)

    def construct(self, x, w):
        if self.same:
            y = ops.conv2d(x, w, stride=self.stride, pad_mode="same")
        else:
            y = ops.conv2d(ops.pad(x, self.pads), w, stride=self.stride, pad_mode="valid")
        return ops.relu(y) if self.relu else y


def value_and_grads(net: nn.Cell, x: Tensor, seed: int = 5):
    """Output, d<out, r>/dx and /dw for a fixed random r (so every output element matters)."""
    out_shape = net(x).shape
    r = Tensor(normal(out_shape, seed))

    def loss(inp):
        return (net(inp) * r).sum()

    grad_fn = ms.value_and_grad(loss, grad_position=0, weights=net.trainable_params())
    value, (dx, dws) = grad_fn(x)
    return net(x).asnumpy(), dx.asnumpy(), [g.asnumpy() for g in dws]


@pytest.mark.parametrize("k,stride,padding,relu", [
    (7, 2, "same", True), (3, 1, "same", True), (5, 1, "same", True), (1, 1, "same", False),
    (3, 2, (1, 0, 1, 0), True), (2, 3, 1, False),
])
def test_conv_matches_native(mode, k, stride, padding, relu):
    x = Tensor(normal((2, 5, 15, 13), 1))
    w = normal((6, 5, k, k), 2, 0.3)
    ours = value_and_grads(WithWeight(Conv2dKernel(k, stride, padding, relu), w), x)
    ref = value_and_grads(WithWeight(NativeConv(stride, padding, relu), w), x)
    assert ours[0].shape == ref[0].shape
    for got, want in zip([ours[0], ours[1], ours[2][0]], [ref[0], ref[1], ref[2][0]]):
        assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (2, 2)])
def test_max_pool_matches_native(mode, k, stride):
    x = Tensor(normal((2, 3, 11, 12), 3))
    ours, ref = MaxPoolKernel(k, stride, "same"), nn.MaxPool2d(k, stride, pad_mode="same")
    assert rel_err(ours(x).asnumpy(), ref(x).asnumpy()) == 0
    r = Tensor(normal(ref(x).shape, 6))
    grads = [ms.grad(WeightedSum(pool, r))(x).asnumpy() for pool in (ours, ref)]
    assert rel_err(*grads) < 1e-6  # overlapping windows may sum in another order


class WeightedSum(nn.Cell):
    def __init__(self, fn, r):
        super().__init__()
        self.fn, self.r = fn, r

    def construct(self, x):
        return (self.fn(x) * self.r).sum()


class NativeInception(nn.Cell):
    def construct(self, x, w1, w2a, w2b, w3a, w3b, w4):
        def cr(t, w):
            return ops.relu(ops.conv2d(t, w, pad_mode="same"))

        pool = ops.max_pool2d(ops.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
        return ops.concat((cr(x, w1), cr(cr(x, w2a), w2b), cr(cr(x, w3a), w3b), cr(pool, w4)), axis=1)


class BlockNet(nn.Cell):
    def __init__(self, block, ws):
        super().__init__()
        self.block = block
        self.ws = ms.ParameterTuple([Parameter(Tensor(w), name=f"w{i}") for i, w in enumerate(ws)])

    def construct(self, x):
        return self.block(x, *self.ws)


def test_inception_block_matches_native(mode):
    C, widths = 12, (4, 6, 8, 3, 5, 4)  # c1, c3r, c3, c5r, c5, pool_proj
    c1, c3r, c3, c5r, c5, c4 = widths
    shapes = [(c1, C, 1, 1), (c3r, C, 1, 1), (c3, c3r, 3, 3), (c5r, C, 1, 1), (c5, c5r, 5, 5), (c4, C, 1, 1)]
    ws = [normal(s, 10 + i, np.sqrt(2 / np.prod(s[1:]))) for i, s in enumerate(shapes)]
    x = Tensor(normal((3, C, 9, 9), 4))
    ours = value_and_grads(BlockNet(InceptionKernel(c1, c3, c5, c4), ws), x)
    ref = value_and_grads(BlockNet(NativeInception(), ws), x)
    assert rel_err(ours[0], ref[0]) < 1e-5
    assert rel_err(ours[1], ref[1]) < 1e-5
    for got, want in zip(ours[2], ref[2]):
        assert rel_err(got, want) < 1e-5


def test_layers_sharing_a_kernel_keep_their_own_shapes():
    """PYNATIVE caches inferred shapes per primitive: same entry point, same input, different strides."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x, w = Tensor(normal((1, 2, 8, 8))), Tensor(normal((3, 2, 3, 3)))
        shapes = [Conv2dKernel(3, s, "same")(x, w).shape for s in (1, 2, 1, 4)]
    finally:
        ms.set_context(mode=previous)
    assert shapes == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 2, 2)]


def test_kernel_error_is_raised_not_corrupting():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        with pytest.raises(Exception):
            Conv2dKernel(3, 1, "same")(Tensor(normal((1, 2, 8, 8))), Tensor(normal((3, 4, 3, 3)))).asnumpy()
    finally:
        ms.set_context(mode=previous)


def test_kernel_refusal_reaches_the_cli_as_its_one_error_line():
    """MindSpore runs the kernel on its own thread and says only "returned 1": the engine's error line
    must carry the kernel's own message, and the kernel must not print a second copy of it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, mindspore as ms\n"
        "from mindspore import nn, Tensor\n"
        "import mindplug.ops as mo\n"
        "from mindplug.engine.cli import run\n"
        "import mindplug.engine.cli as cli\n"
        "def boom(argv):\n"
        "    net = mo.accelerate(nn.SequentialCell([nn.Conv2d(1, 4, 3)]))\n"
        "    net(Tensor(np.ones((1, 3, 8, 8), np.float32))).asnumpy()\n"
        "cli.COMMANDS['boom'] = boom\n"
        "sys.exit(run('boom', []))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if "mindplug kernel" in line]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: mindplug kernel ConvForward: input has 3 channels"), lines
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- dispatch
def test_dispatch_env_and_native_context(monkeypatch):
    from mindplug._errors import ConfigError
    from mindplug.ops.blocks import ConvReLU, Inception

    assert ms.get_context("device_target") == "CPU" and _dispatch.use_kernels()
    assert Inception(8, 2, 2, 2, 2, 2, 2).use_kernels
    with _dispatch.native():
        assert not _dispatch.use_kernels() and not ConvReLU(3, 4, 3).use_kernels
    monkeypatch.setenv("MINDPLUG_KERNELS", "native")
    assert not _dispatch.use_kernels()
    monkeypatch.setenv("MINDPLUG_KERNELS", "kernel")
    with pytest.raises(ConfigError, match="did you mean 'kernels'"):
        _dispatch.use_kernels()


def test_kernel_threads_follow_mindspore_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _dispatch.configure_threads() == 1
    assert _library.load().MindplugGetNumThreads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _dispatch.configure_threads() == _dispatch.kernel_threads() >= 1


# ---------------------------------------------------------------- the whole GoogLeNet
def _twin_googlenets(num_classes: int = 10):
    """The same weights in a kernel-backed and a native GoogLeNet."""
    from mindplug.plugins.googlenet.model import GoogLeNet

    ms.set_seed(0)
    fast = GoogLeNet(num_classes=num_classes, drop_rate=0.0)
    with _dispatch.native():
        slow = GoogLeNet(num_classes=num_classes, drop_rate=0.0)
    ms.load_param_into_net(slow, {name: Parameter(p.data.copy(), name=name)
                                  for name, p in fast.parameters_and_names()})
    assert any(getattr(c, "use_kernels", False) for _, c in fast.cells_and_names())
    assert not any(getattr(c, "use_kernels", False) for _, c in slow.cells_and_names())
    return fast, slow


def test_googlenet_logits_and_gradients_match_native(mode):
    fast, slow = _twin_googlenets()
    x = Tensor(normal((2, 3, 48, 48), 7))
    labels = Tensor(np.array([1, 7], np.int32))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    results = []
    for net in (fast, slow):
        net.set_train(True)
        with_loss = nn.WithLossCell(net, loss_fn)
        value, grads = ms.value_and_grad(with_loss, None, weights=net.trainable_params())(x, labels)
        results.append((net(x).asnumpy(), [g.asnumpy() for g in grads]))
    (logits_f, grads_f), (logits_s, grads_s) = results
    assert rel_err(logits_f, logits_s) <= 1e-4
    names = [p.name for p in fast.trainable_params()]
    worst = max((rel_err(gf, gs), n) for gf, gs, n in zip(grads_f, grads_s, names))
    assert worst[0] <= 1e-4, worst


@pytest.mark.skipif(not _library.bf16_available(), reason="no AVX512_BF16 here")
def test_googlenet_in_bfloat16_matches_float32(mode):
    """The whole network with bf16 GEMMs: logits within 1e-2 of fp32's (relative to their scale), and the
    weight gradients point the same way as fp32's."""
    fast, _ = _twin_googlenets()
    x = Tensor(normal((4, 3, 64, 64), 9))
    labels = Tensor(np.array([1, 7, 3, 0], np.int32))
    with_loss = nn.WithLossCell(fast, nn.CrossEntropyLoss())
    grad_fn = ms.value_and_grad(with_loss, None, weights=fast.trainable_params())
    results = {}
    try:
        for precision in ("float32", "bfloat16"):
            assert _library.set_precision(precision) == precision
            fast.set_train(False)
            logits = fast(x).asnumpy()
            fast.set_train(True)
            _, grads = grad_fn(x, labels)
            results[precision] = (logits, [g.asnumpy().ravel() for g in grads])
    finally:
        _library.set_precision("float32")
    (l32, g32), (l16, g16) = results["float32"], results["bfloat16"]
    assert 1e-5 < rel_err(l16, l32) <= 1e-2, rel_err(l16, l32)
    cosines = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)) for a, b in zip(g16, g32)]
    a, b = np.concatenate(g16), np.concatenate(g32)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    # a single layer's gradient at initialisation is a sum that mostly cancels, so bf16's rounding (and the
    # odd ReLU that lands on the other side of 0) shows more in it than in the whole
    worst = min(zip(cosines, [p.name for p in fast.trainable_params()]))
    assert worst[0] > 0.9 and float(np.median(cosines)) > 0.97, worst


def test_sgd_steps_give_the_same_weights():
    fast, slow = _twin_googlenets()
    x = Tensor(normal((2, 3, 40, 40), 8))
    labels = Tensor(np.array([3, 4], np.int32))
    finals = []
    for net in (fast, slow):
        opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss(label_smoothing=0.1)), opt)
        step.set_train(True)
        for _ in range(3):
            step(x, labels)
        finals.append({p.name: p.asnumpy().copy() for p in net.trainable_params()})
    worst = max((rel_err(finals[0][n], finals[1][n]), n) for n in finals[1])
    assert worst[0] <= 1e-4, worst


@pytest.mark.parametrize("padding", ["valid", (1, 2, 3), (-1, 0)])
def test_kernel_cells_reject_unsupported_padding(padding):
    from mindplug._errors import ConfigError

    with pytest.raises(ConfigError, match="padding"):
        Conv2dKernel(3, 1, padding)
