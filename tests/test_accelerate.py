"""mindplug.ops.accelerate on arbitrary networks: parameter names and checkpoints unchanged, the summary,
what is (and is not) fused, the no-op cases, and whole networks (MindCV's ResNet-18/50 and MobileNetV2, the
plugin template's TinyNet) against the same network on native MindSpore, logits, gradients and SGD steps.

Comparisons against native need care in training mode. At initialisation these networks are numerically
chaotic there: with small batches BatchNorm normalises few values per channel and one ReLU input crossing
zero moves a channel's gradient by percents, so native MindSpore itself does not reproduce its own training
gradients to 1e-4 when the input changes by 1e-7. Training-mode checks therefore use a well-conditioned
state (BatchNorm gamma 0.5, beta 3: every ReLU / ReLU6 input stays clear of its kinks, while every kernel,
the batch statistics and the residual adds still run) with Dropout off; inference-mode checks use the
models' own initialisation. Gradient errors are measured per tensor against the largest of the tensor's
own scale and 1% of the network's largest gradient (a near-zero tensor is pure rounding), and for all
gradients together.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, nn  # noqa: E402

import mindplug.ops as mo  # noqa: E402
from mindplug.ops import _dispatch, _library  # noqa: E402

pytestmark = [pytest.mark.skipif(not _library.library_path().is_file(), reason="kernel library not built"),
              pytest.mark.usefixtures("kernels_allowed")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def graph():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


def normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_err(a, b, floor: float = 1e-12) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


def tinynet(num_classes: int = 10):
    sys.path.insert(0, str(ROOT / "examples" / "plugin-template"))
    try:
        from mindplug_example.models import tinynet as build
    finally:
        sys.path.pop(0)
    return build(num_classes=num_classes)


def mindcv_model(name: str):
    mindcv = pytest.importorskip("mindcv")
    return mindcv.create_model(name, num_classes=10)


def twins(build, well_conditioned: bool = False):
    """(accelerated, native) copies of one network with the same weights."""
    ms.set_seed(0)
    fast = build()
    ms.set_seed(0)
    slow = build()
    if well_conditioned:
        for _, cell in fast.cells_and_names():
            if isinstance(cell, nn.BatchNorm2d):
                cell.gamma.set_data(Tensor(np.full(cell.gamma.shape, 0.5, np.float32)))
                cell.beta.set_data(Tensor(np.full(cell.beta.shape, 3.0, np.float32)))
    ms.load_param_into_net(slow, {p.name: Parameter(p.data.copy(), name=p.name) for p in fast.get_parameters()})
    mo.accelerate(fast)
    return fast, slow


def set_mode(net: nn.Cell, train: bool) -> None:
    net.set_train(train)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Dropout):
            cell.set_train(False)


def logits_and_grads(net, x, labels, train: bool):
    set_mode(net, train)
    with_loss = nn.WithLossCell(net, nn.CrossEntropyLoss())
    _, grads = ms.value_and_grad(with_loss, None, weights=net.trainable_params())(x, labels)
    return net(x).asnumpy(), [g.asnumpy() for g in grads]


def assert_grads_close(got, want, per_tensor: float, overall: float, names) -> None:
    top = max(float(np.abs(w).max()) for w in want)
    worst = max((rel_err(g, w, 1e-2 * top), n) for g, w, n in zip(got, want, names))
    assert worst[0] <= per_tensor, worst
    total = np.sqrt(sum(float(((g - w) ** 2).sum()) for g, w in zip(got, want)) /
                    sum(float((w ** 2).sum()) for w in want))
    assert total <= overall, total


# ---------------------------------------------------------------- the swap itself
def test_names_and_checkpoints_are_unchanged(graph, tmp_path):
    net = mindcv_model("resnet18")
    before = [p.name for p in net.get_parameters()]
    path = str(tmp_path / "before.ckpt")
    ms.save_checkpoint(net, path)
    assert mo.accelerate(net) is net
    assert [p.name for p in net.get_parameters()] == before
    assert [n for n, _ in net.parameters_and_names()] == before
    assert isinstance(net.conv1, mo.Conv2d) and isinstance(net.conv1, nn.Conv2d)
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(path), strict_load=True)
    assert not not_loaded and not unused
    after = str(tmp_path / "after.ckpt")
    ms.save_checkpoint(net, after)
    fresh = mindcv_model("resnet18")
    not_loaded, unused = ms.load_param_into_net(fresh, ms.load_checkpoint(after), strict_load=True)
    assert not not_loaded and not unused


def test_summary_lists_what_stays_native(graph):
    net = mo.accelerate(mindcv_model("resnet18"))
    s = mo.summary(net)
    assert (s.kernel_layers, s.total) == (42, 52)
    assert s.total == s.kernel_layers + len(s.native_layers)
    assert len(s.fused_chains) == 20 and ("conv1", "bn1", "relu") in s.fused_chains
    native = {path: (cls, reason) for path, cls, reason in s.native_layers}
    assert native["layer1.0.relu"][0] == "ReLU" and "not in a provable chain" in native["layer1.0.relu"][1]
    assert native["classifier"][0] == "Dense"
    assert str(s).startswith("42 of 52 layers on the kernels (20 fused chains)")
    assert "layer1.0.relu (ReLU)" in str(s)


def test_accelerate_is_idempotent(graph):
    net = mo.accelerate(mindcv_model("mobilenet_v2_100"))
    first = mo.summary(net)
    classes = [type(c) for _, c in net.cells_and_names()]
    mo.accelerate(net)
    assert mo.summary(net) == first
    assert [type(c) for _, c in net.cells_and_names()] == classes


def test_noop_when_the_kernels_are_off(graph, monkeypatch):
    def classes(net):
        return [type(c) for _, c in net.cells_and_names()]

    native = classes(tinynet())
    monkeypatch.setenv("MINDPLUG_KERNELS", "native")
    net = mo.accelerate(tinynet())
    assert classes(net) == native
    assert all("MINDPLUG_KERNELS=native" in reason for _, _, reason in mo.summary(net).native_layers)
    monkeypatch.delenv("MINDPLUG_KERNELS")
    with _dispatch.native():
        assert classes(mo.accelerate(tinynet())) == native
    real = ms.get_context
    monkeypatch.setattr(ms, "get_context", lambda key: "GPU" if key == "device_target" else real(key))
    net = mo.accelerate(tinynet())
    assert classes(net) == native
    assert mo.summary(net).kernel_layers == 0


def test_googlenet_blocks_are_left_alone(graph):
    from mindplug.ops.blocks import ConvReLU, Inception, MaxPoolSame
    from mindplug.plugins.googlenet.model import GoogLeNet

    net = GoogLeNet(num_classes=10)
    before = [(n, type(c)) for n, c in net.cells_and_names()]
    mo.accelerate(net)
    assert [(n, type(c)) for n, c in net.cells_and_names()] == before
    s = mo.summary(net)
    blocks = sum(isinstance(c, (ConvReLU, Inception, MaxPoolSame)) for _, c in net.cells_and_names()
                 if not isinstance(c, nn.SequentialCell))
    assert s.kernel_layers >= 9 + 3  # nine Inception blocks, the stem convs, the pools
    assert not any(cls in ("ConvReLU", "Inception", "MaxPoolSame") for _, cls, _ in s.native_layers)
    assert blocks > 0


# ---------------------------------------------------------------- what is a provable chain
class SharedRelu(nn.Cell):
    """MindCV's ResNet block pattern: one ReLU cell applied twice."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, pad_mode="same", has_bias=True)

    def construct(self, x):
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        return self.relu(out + x)


class Nested(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU6()

    def construct(self, x):
        return self.act(self.bn(self.conv(x)))


class Reused(nn.Cell):
    """The conv's output is also used after the BatchNorm: not a chain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def construct(self, x):
        a = self.conv(x)
        b = self.bn(a)
        return a + b


class Dynamic(nn.Cell):
    """Children called through getattr: nothing can be proven."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def construct(self, x):
        y = getattr(self, "conv")(x)
        return self.bn(y)


class Aliased(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.alias = self.conv

    def construct(self, x):
        return self.bn(self.conv(x))


class MyConv(nn.Conv2d):
    def construct(self, x):
        return super().construct(x) * 2


class Custom(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = MyConv(4, 4, 3)
        self.pool = nn.AvgPool2d(2, 2)

    def construct(self, x):
        return self.pool(self.conv(x))


def chains(net):
    return set(mo.summary(net).fused_chains)


@pytest.mark.parametrize("build,expected", [
    (SharedRelu, {("conv1", "bn1")}),
    (Nested, {("conv", "bn", "act")}),
    (Reused, set()),
    (Dynamic, set()),
    (Aliased, set()),
    (Custom, set()),
])
def test_only_provable_chains_are_fused_and_results_match(mode, build, expected):
    fast, slow = twins(build)
    assert chains(fast) == expected
    x = Tensor(normal((4, 4, 9, 9), 1))
    for train in (False, True):
        got, want = [], []
        for net, out in ((fast, got), (slow, want)):
            net.set_train(train)
            r = Tensor(normal(net(x).shape, 2))
            loss = WeightedSum(net, r)
            dx, dws = ms.grad(loss, grad_position=0, weights=net.trainable_params())(x)
            out += [net(x).asnumpy(), dx.asnumpy()] + [g.asnumpy() for g in dws]
        for g, w in zip(got, want):
            assert rel_err(g, w) < 1e-4, (build.__name__, train)


class WeightedSum(nn.Cell):
    def __init__(self, net, r):
        super().__init__()
        self.net, self.r = net, r

    def construct(self, x):
        return (self.net(x) * self.r).sum()


def test_subclasses_and_hooked_cells_stay_native(graph):
    net = Custom()
    net.pool.register_forward_hook(lambda cell, args, out: None)
    mo.accelerate(net)
    assert type(net.conv) is MyConv and type(net.pool) is nn.AvgPool2d
    reasons = {path: reason for path, _, reason in mo.summary(net).native_layers}
    assert "subclass of nn.Conv2d (MyConv)" in reasons["conv"]
    assert reasons["pool"] == "has hooks registered"


def test_a_graph_compiled_before_accelerate_is_recompiled(graph):
    net = nn.SequentialCell([nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1)])
    twin = nn.SequentialCell([nn.Conv2d(8, 8, 3, pad_mode="pad", padding=1)])
    twin[0].weight.set_data(net[0].weight.data.copy())
    x = Tensor(normal((2, 8, 12, 12), 3))
    native = net(x).asnumpy()
    mo.accelerate(net)
    lib = _library.load()
    lib.MindplugForceOwnGemm(2)  # oneDNN's sgemm can round as MindSpore's native conv does (AVX2 hosts)
    try:
        kernel = mo.accelerate(twin)(x).asnumpy()
        assert not np.array_equal(native, kernel)  # the portable GEMM sums in another order
        assert np.array_equal(net(x).asnumpy(), kernel)
    finally:
        lib.MindplugForceOwnGemm(0)


def test_import_stays_free_of_mindspore():
    code = "import sys, mindplug.ops as o; o.__all__; print('mindspore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- whole networks against native
NETWORKS = {"resnet18": lambda: mindcv_model("resnet18"), "resnet50": lambda: mindcv_model("resnet50"),
            "mobilenet_v2": lambda: mindcv_model("mobilenet_v2_100"), "tinynet": tinynet}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_inference_logits_and_gradients_match_native(graph, name):
    """BatchNorm folded into the convs; the models' own initialisation."""
    fast, slow = twins(NETWORKS[name])
    x, labels = Tensor(normal((2, 3, 32, 32), 4)), Tensor(np.array([1, 7], np.int32))
    (lf, gf), (ls, gs) = (logits_and_grads(n, x, labels, False) for n in (fast, slow))
    assert rel_err(lf, ls) <= 1e-4
    names = [p.name for p in fast.trainable_params()]
    worst = max((rel_err(a, b, 1e-6), n) for a, b, n in zip(gf, gs, names))
    assert worst[0] <= 1e-4, worst


@pytest.mark.parametrize("name", ["resnet18", "tinynet", pytest.param("resnet50", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_training_logits_gradients_and_statistics_match_native(graph, name):
    fast, slow = twins(NETWORKS[name], well_conditioned=True)
    x, labels = Tensor(normal((8, 3, 32, 32), 5)), Tensor(np.arange(8).astype(np.int32))
    (lf, gf), (ls, gs) = (logits_and_grads(n, x, labels, True) for n in (fast, slow))
    assert rel_err(lf, ls) <= 1e-4
    assert_grads_close(gf, gs, 1e-3, 1e-4, [p.name for p in fast.trainable_params()])
    stats = [(p.name, p.asnumpy()) for p in fast.get_parameters() if "moving" in p.name]
    native = {p.name: p.asnumpy() for p in slow.get_parameters() if "moving" in p.name}
    if stats:
        top = max(float(np.abs(v).max()) for _, v in stats)
        worst = max((rel_err(v, native[n], 1e-2 * top), n) for n, v in stats)
        assert worst[0] <= 1e-4, worst


def test_pynative_matches_native(name="resnet18"):
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        for train in (False, True):
            fast, slow = twins(NETWORKS[name], well_conditioned=train)
            x, labels = Tensor(normal((8, 3, 32, 32), 6)), Tensor(np.arange(8).astype(np.int32))
            (lf, gf), (ls, gs) = (logits_and_grads(n, x, labels, train) for n in (fast, slow))
            assert rel_err(lf, ls) <= 1e-4
            assert_grads_close(gf, gs, 1e-3, 1e-4, [p.name for p in fast.trainable_params()])
    finally:
        ms.set_context(mode=previous)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "tinynet"])
def test_sgd_steps_give_the_same_weights(graph, name):
    """Three momentum steps: the weights and the BatchNorm moving statistics agree per tensor (against 1% of
    the largest value in each group, as above)."""
    fast, slow = twins(NETWORKS[name], well_conditioned=True)
    x, labels = Tensor(normal((8, 3, 32, 32), 7)), Tensor(np.arange(8).astype(np.int32) % 10)
    finals = []
    for net in (fast, slow):
        opt = nn.Momentum(net.trainable_params(), learning_rate=0.001, momentum=0.9)
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt)
        set_mode(step, True)
        for _ in range(3):
            step(x, labels)
        finals.append({p.name: p.asnumpy().copy() for p in net.get_parameters()})
    for moving in (False, True):
        names = [n for n in finals[1] if ("moving" in n) == moving]
        if not names:
            continue
        top = max(float(np.abs(finals[1][n]).max()) for n in names)
        worst = max((rel_err(finals[0][n], finals[1][n], 1e-2 * top), n) for n in names)
        assert worst[0] <= 1e-4, worst
