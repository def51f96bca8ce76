"""Every C++ kernel against a float64 numpy reference, forward and backward, through the AOT ABI.

The library is called directly with ctypes (no MindSpore graph). Backward tests use small integer
data and weights in quarter steps: every sum is then exact in float32, so ReLU masks and max-pool
ties agree bit for bit with the reference and the comparison can be tight.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mindplug.ops import _library

pytestmark = pytest.mark.skipif(not _library.available(), reason="kernel library not built")

call = _library.call
# the autouse fixtures below set the GEMM backend / thread count once per test, not per example
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- float64 references
def out_size(n: int, k: int, s: int, lo: int, hi: int) -> int:
    return (n + lo + hi - k) // s + 1


def conv_ref(x, w, stride, pads):
    """Cross-correlation, NCHW / OIHW, pads = (top, left, bottom, right)."""
    sh, sw = stride
    pt, pl, pb, pr = pads
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = (H - KH) // sh + 1, (W - KW) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            patch = x[:, :, kh:kh + sh * (OH - 1) + 1:sh, kw:kw + sw * (OW - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw].astype(np.float64))
    return y


def conv_grad_ref(g, x, w, stride, pads):
    """(dx, dw) of conv_ref for the upstream gradient g (already ReLU-masked)."""
    sh, sw = stride
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    O, _, KH, KW = w.shape
    OH, OW = g.shape[2:]
    dw = np.zeros(w.shape)
    for kh in range(KH):
        for kw in range(KW):
            sl = (slice(None), slice(None), slice(kh, kh + sh * (OH - 1) + 1, sh), slice(kw, kw + sw * (OW - 1) + 1, sw))
            dw[:, :, kh, kw] = np.einsum("nohw,nchw->oc", g, xp[sl])
            dxp[sl] += np.einsum("nohw,oc->nchw", g, w[:, :, kh, kw].astype(np.float64))
    H, W = x.shape[2:]
    return dxp[:, :, pt:pt + H, pl:pl + W], dw


def pool_windows(x, k, stride, pads):
    kh, kw = k
    sh, sw = stride
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    OH, OW = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    for oh in range(OH):
        for ow in range(OW):
            yield oh, ow, xp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]


def pool_ref(x, k, stride, pads):
    out = {}
    for oh, ow, win in pool_windows(x, k, stride, pads):
        out[oh, ow] = win.max(axis=(2, 3))
    OH, OW = max(out)[0] + 1, max(out)[1] + 1
    y = np.zeros(x.shape[:2] + (OH, OW))
    for (oh, ow), v in out.items():
        y[:, :, oh, ow] = v
    return y


def pool_grad_ref(g, x, k, stride, pads):
    """Each output's gradient goes to the first maximum of its window (row-major order)."""
    kh, kw = k
    sh, sw = stride
    pt, pl, pb, pr = pads
    N, C, H, W = x.shape
    dxp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    n_idx, c_idx = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for oh, ow, win in pool_windows(x, k, stride, pads):
        flat = win.reshape(N, C, -1).argmax(axis=2)
        dxp[n_idx, c_idx, oh * sh + flat // kw, ow * sw + flat % kw] += g[:, :, oh, ow]
    return dxp[:, :, pt:pt + H, pl:pl + W]


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """MindSpore's pad_mode="same": output ceil(n / s), the odd padding pixel at the end."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def same(k: int) -> tuple[int, int, int, int]:
    p = (k - 1) // 2
    return (p, p, p, p)


def inception_ref(x, ws):
    w1, w2a, w2b, w3a, w3b, w4 = ws
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    t2, t3 = relu(conv_ref(x, w2a, (1, 1), same(1))), relu(conv_ref(x, w3a, (1, 1), same(1)))
    p = pool_ref(x, (3, 3), (1, 1), same(3))
    y = np.concatenate([relu(conv_ref(x, w1, (1, 1), same(1))),
                        relu(conv_ref(t2, w2b, (1, 1), same(w2b.shape[2]))),
                        relu(conv_ref(t3, w3b, (1, 1), same(w3b.shape[2]))),
                        relu(conv_ref(p, w4, (1, 1), same(1)))], axis=1)
    return y, (t2, t3, p)


def inception_grad_ref(dy, y, x, ws):
    w1, w2a, w2b, w3a, w3b, w4 = ws
    _, (t2, t3, p) = inception_ref(x, ws)
    g = dy * (y > 0)
    c1, c3, c5 = w1.shape[0], w2b.shape[0], w3b.shape[0]
    g1, g2, g3, g4 = np.split(g, [c1, c1 + c3, c1 + c3 + c5], axis=1)
    dx1, dw1 = conv_grad_ref(g1, x, w1, (1, 1), same(1))
    dt2, dw2b = conv_grad_ref(g2, t2, w2b, (1, 1), same(w2b.shape[2]))
    dx2, dw2a = conv_grad_ref(dt2 * (t2 > 0), x, w2a, (1, 1), same(1))
    dt3, dw3b = conv_grad_ref(g3, t3, w3b, (1, 1), same(w3b.shape[2]))
    dx3, dw3a = conv_grad_ref(dt3 * (t3 > 0), x, w3a, (1, 1), same(1))
    dp, dw4 = conv_grad_ref(g4, p, w4, (1, 1), same(1))
    dx4 = pool_grad_ref(dp, x, (3, 3), (1, 1), same(3))
    return dx1 + dx2 + dx3 + dx4, dw1, dw2a, dw2b, dw3a, dw3b, dw4


# ---------------------------------------------------------------- helpers
def ints(rng, shape, lo=-3, hi=3):
    return rng.integers(lo, hi + 1, size=shape).astype(np.float32)


def quarters(rng, shape):
    return (rng.integers(-4, 5, size=shape) / 4).astype(np.float32)


def assert_close(got, ref, rtol=1e-5):
    ref = np.asarray(ref, np.float64)
    scale = max(np.abs(ref).max(), 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=rtol * scale)


GEMMS = {"onednn": (0, None), "own": (1, None), "own-baseline": (2, None), "own-avx2": (3, "avx2")}


@pytest.fixture(params=sorted(GEMMS), autouse=True)
def gemm_backend(request):
    """Runs every test with oneDNN's sgemm and with our portable GEMM at each ISA it is built for."""
    lib = _library.load()
    mode, feature = GEMMS[request.param]
    if feature and not lib.MindplugCpuHas(feature.encode()):
        pytest.skip(f"this CPU has no {feature}")
    lib.MindplugForceOwnGemm(mode)
    if request.param == "onednn" and _library.gemm_backend() != "onednn":
        pytest.skip("oneDNN not found beside mindspore")
    yield request.param
    lib.MindplugForceOwnGemm(0)


@pytest.fixture(params=[1, 2], autouse=True)
def threads(request):
    _library.set_num_threads(request.param)
    yield request.param
    _library.set_num_threads(0)


@st.composite
def window_case(draw, max_k: int, max_pad: int, **extra):
    """Shapes, a window that fits (pads < kernel, at least one output) and a seed."""
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    pads = tuple(draw(st.integers(0, min(k - 1, max_pad))) for k in (kh, kw, kh, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 12))
    case = dict(n=draw(st.integers(1, 3)), h=h, w=w, kh=kh, kw=kw, sh=draw(st.integers(1, 3)),
                sw=draw(st.integers(1, 3)), pads=pads, same=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))
    if case["same"]:  # the kernel derives the pads from the input size; the explicit ones are ignored
        (pt, pb), (pl, pr) = same_pads(h, kh, case["sh"]), same_pads(w, kw, case["sw"])
        case["pads"] = (pt, pl, pb, pr)
    case.update({k: draw(v) for k, v in extra.items()})
    return case


conv_case = window_case(5, 4, c=st.integers(1, 6), o=st.integers(1, 7), relu=st.booleans())


def conv_setup(case):
    pt, pl, pb, pr = case["pads"]
    assume(max(pt, pb) < case["kh"] and max(pl, pr) < case["kw"])
    oh = out_size(case["h"], case["kh"], case["sh"], pt, pb)
    ow = out_size(case["w"], case["kw"], case["sw"], pl, pr)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(case["seed"])
    x = ints(rng, (case["n"], case["c"], case["h"], case["w"]))
    w = quarters(rng, (case["o"], case["c"], case["kh"], case["kw"]))
    explicit = (0, 0, 0, 0) if case["same"] else case["pads"]
    cfg = np.array([case["sh"], case["sw"], *explicit, int(case["relu"]), int(case["same"])], np.int64)
    return rng, x, w, cfg, (case["sh"], case["sw"]), case["pads"]


# ---------------------------------------------------------------- conv
@SETTINGS
@given(conv_case)
def test_conv_forward(case):
    rng, x, w, cfg, stride, pads = conv_setup(case)
    ref = conv_ref(x, w, stride, pads)
    if case["relu"]:
        ref = np.maximum(ref, 0)
    (y,) = call("Conv2dForward", [x, w, cfg], [ref.shape])
    assert_close(y, ref)


@SETTINGS
@given(conv_case)
def test_conv_backward(case):
    rng, x, w, cfg, stride, pads = conv_setup(case)
    pre = conv_ref(x, w, stride, pads)
    y = (np.maximum(pre, 0) if case["relu"] else pre).astype(np.float32)
    dy = ints(rng, y.shape)
    g = dy * (y > 0) if case["relu"] else dy
    dx_ref, dw_ref = conv_grad_ref(g.astype(np.float64), x, w, stride, pads)
    (dx,) = call("Conv2dBackwardData", [dy, y, x, w, cfg], [x.shape])
    (dw,) = call("Conv2dBackwardFilter", [dy, y, x, w, cfg], [w.shape])
    assert_close(dx, dx_ref)
    assert_close(dw, dw_ref)


@pytest.mark.parametrize("shape,k,s,pads", [
    ((2, 3, 32, 32), 7, 2, (2, 2, 3, 3)),   # the stem 7x7/2 "same" at a small size
    ((3, 8, 14, 14), 3, 1, (1, 1, 1, 1)),
    ((4, 6, 7, 7), 5, 1, (2, 2, 2, 2)),
    ((5, 16, 7, 7), 1, 1, (0, 0, 0, 0)),     # pointwise, several images per GEMM chunk
])
def test_conv_googlenet_shapes_normal_data(shape, k, s, pads):
    """Real-valued data: forward within float32 rounding, backward within float32 rounding."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((9, shape[1], k, k)) * 0.2).astype(np.float32)
    cfg = np.array([s, s, *pads, 1, 0], np.int64)
    ref = np.maximum(conv_ref(x, w, (s, s), pads), 0)
    (y,) = call("Conv2dForward", [x, w, cfg], [ref.shape])
    assert_close(y, ref, rtol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx_ref, dw_ref = conv_grad_ref(dy * (y > 0), x, w, (s, s), pads)
    (dx,) = call("Conv2dBackwardData", [dy, y, x, w, cfg], [x.shape])
    (dw,) = call("Conv2dBackwardFilter", [dy, y, x, w, cfg], [w.shape])
    assert_close(dx, dx_ref, rtol=1e-5)
    assert_close(dw, dw_ref, rtol=1e-5)


@pytest.mark.parametrize("shape,o,k", [((1, 20, 16, 16), 24, 3),    # one image: GEMM columns split
                                       ((1, 40, 8, 8), 160, 3),     # one image, few columns: rows split
                                       ((1, 200, 6, 6), 144, 1)])   # pointwise, rows split in every GEMM
def test_conv_single_image_splits_gemms(shape, o, k):
    """A batch smaller than the thread count splits each GEMM instead (all three GEMM shapes)."""
    rng = np.random.default_rng(4)
    x, w = ints(rng, shape), quarters(rng, (o, shape[1], k, k))
    pads = same(k)
    cfg = np.array([1, 1, *pads, 1, 0], np.int64)
    y = np.maximum(conv_ref(x, w, (1, 1), pads), 0).astype(np.float32)
    (got,) = call("Conv2dForward", [x, w, cfg], [y.shape])
    assert_close(got, y)
    dy = ints(rng, y.shape)
    dx_ref, dw_ref = conv_grad_ref((dy * (y > 0)).astype(np.float64), x, w, (1, 1), pads)
    assert_close(call("Conv2dBackwardData", [dy, y, x, w, cfg], [x.shape])[0], dx_ref)
    assert_close(call("Conv2dBackwardFilter", [dy, y, x, w, cfg], [w.shape])[0], dw_ref)


def test_kernels_work_in_a_forked_child(threads):
    """A child forked after the worker pool started gets a pool of its own (the parent's workers are
    not copied by fork): the kernel finishes in the child instead of waiting for them forever."""
    import os
    import signal

    rng = np.random.default_rng(5)
    x, w = ints(rng, (4, 8, 8, 8)), quarters(rng, (16, 8, 3, 3))
    cfg = np.array([1, 1, *same(3), 1, 0], np.int64)
    want = np.maximum(conv_ref(x, w, (1, 1), same(3)), 0).astype(np.float32)
    assert_close(call("Conv2dForward", [x, w, cfg], [want.shape])[0], want)   # the pool is running now
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        signal.alarm(60)
        try:
            (got,) = call("Conv2dForward", [x, w, cfg], [want.shape])
            os._exit(0 if np.allclose(got, want, rtol=1e-5) else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"


# ---------------------------------------------------------------- max pool
pool_case = window_case(4, 3, c=st.integers(1, 5))


@SETTINGS
@given(pool_case)
def test_maxpool_forward_backward(case):
    pt, pl, pb, pr = pads = case["pads"]
    k, s = (case["kh"], case["kw"]), (case["sh"], case["sw"])
    assume(max(pt, pb) < k[0] and max(pl, pr) < k[1])
    assume(out_size(case["h"], k[0], s[0], pt, pb) >= 1 and out_size(case["w"], k[1], s[1], pl, pr) >= 1)
    rng = np.random.default_rng(case["seed"])
    x = ints(rng, (case["n"], case["c"], case["h"], case["w"]))  # many ties: the first maximum must win
    explicit = (0, 0, 0, 0) if case["same"] else pads
    cfg = np.array([*k, *s, *explicit, int(case["same"])], np.int64)
    ref = pool_ref(x, k, s, pads)
    (y,) = call("MaxPoolForward", [x, cfg], [ref.shape])
    assert_close(y, ref)
    dy = ints(rng, y.shape)
    (dx,) = call("MaxPoolBackward", [dy, x, y, cfg], [x.shape])
    assert_close(dx, pool_grad_ref(dy.astype(np.float64), x, k, s, pads))


@pytest.mark.parametrize("k,s,size,pads", [(3, 1, 9, (1, 1, 1, 1)), (3, 2, 9, (1, 1, 1, 1)),
                                           (3, 2, 8, (0, 0, 1, 1)), (2, 2, 8, (0, 0, 0, 0))])
def test_maxpool_googlenet_windows(k, s, size, pads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    cfg = np.array([k, k, s, s, *pads, 0], np.int64)
    ref = pool_ref(x, (k, k), (s, s), pads)
    (y,) = call("MaxPoolForward", [x, cfg], [ref.shape])
    assert_close(y, ref)


@pytest.mark.parametrize("k,s,size", [(3, 1, 16), (3, 1, 17), (3, 2, 16), (3, 2, 17), (3, 2, 32), (3, 2, 33),
                                      (2, 2, 1), (3, 1, 2)])
def test_maxpool_window_table_and_separable_paths_agree_with_reference(k, s, size):
    """Planes up to 16x16 (forward) / 32x32 (backward) use per-output window tables, larger ones the
    separable passes: both sides of each switch, with ties (the first maximum gets the gradient)."""
    rng = np.random.default_rng(size)
    x = ints(rng, (2, 3, size, size))
    pads = [0, 0, 0, 0]
    for axis in (0, 1):
        lo_hi = max((-(-size // s) - 1) * s + k - size, 0)
        pads[axis], pads[axis + 2] = lo_hi // 2, lo_hi - lo_hi // 2
    cfg = np.array([k, k, s, s, 0, 0, 0, 0, 1], np.int64)
    ref = pool_ref(x, (k, k), (s, s), tuple(pads))
    (y,) = call("MaxPoolForward", [x, cfg], [ref.shape])
    assert_close(y, ref)
    dy = ints(rng, y.shape)
    (dx,) = call("MaxPoolBackward", [dy, x, y, cfg], [x.shape])
    assert_close(dx, pool_grad_ref(dy.astype(np.float64), x, (k, k), (s, s), tuple(pads)))


# ---------------------------------------------------------------- inception
inception_case = st.fixed_dictionaries(dict(
    n=st.integers(1, 4), c=st.integers(1, 8), h=st.integers(1, 9), w=st.integers(1, 9),
    widths=st.tuples(*[st.integers(1, 6)] * 6), k2=st.sampled_from([1, 3, 5]), k3=st.sampled_from([3, 5]),
    seed=st.integers(0, 2**31 - 1)))


def inception_setup(case):
    rng = np.random.default_rng(case["seed"])
    c1, c3r, c3, c5r, c5, c4 = case["widths"]
    C = case["c"]
    x = ints(rng, (case["n"], C, case["h"], case["w"]))
    shapes = [(c1, C, 1, 1), (c3r, C, 1, 1), (c3, c3r, case["k2"], case["k2"]), (c5r, C, 1, 1),
              (c5, c5r, case["k3"], case["k3"]), (c4, C, 1, 1)]
    return rng, x, [quarters(rng, s) for s in shapes]


@SETTINGS
@given(inception_case)
def test_inception_forward(case):
    rng, x, ws = inception_setup(case)
    ref, _ = inception_ref(x, ws)
    (y,) = call("InceptionForward", [x, *ws], [ref.shape])
    assert_close(y, ref)


@SETTINGS
@given(inception_case)
def test_inception_backward(case):
    rng, x, ws = inception_setup(case)
    ref, _ = inception_ref(x, ws)
    y = ref.astype(np.float32)
    dy = ints(rng, y.shape)
    refs = inception_grad_ref(dy.astype(np.float64), y, x, ws)
    got = call("InceptionBackward", [dy, y, x, *ws], [x.shape] + [w.shape for w in ws])
    for name, g, r in zip(["dx", "dw1", "dw2a", "dw2b", "dw3a", "dw3b", "dw4"], got, refs):
        assert_close(g, r), name


def test_inception_3a_shape_normal_data():
    """Inception 3a's channel widths at 7x7 with real-valued data."""
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((3, 192, 7, 7)), 0).astype(np.float32)
    shapes = [(64, 192, 1, 1), (96, 192, 1, 1), (128, 96, 3, 3), (16, 192, 1, 1), (32, 16, 5, 5), (32, 192, 1, 1)]
    ws = [(rng.standard_normal(s) * np.sqrt(2 / np.prod(s[1:]))).astype(np.float32) for s in shapes]
    ref, _ = inception_ref(x, ws)
    (y,) = call("InceptionForward", [x, *ws], [ref.shape])
    assert_close(y, ref, rtol=1e-5)


def test_weight_gradients_are_reproducible(threads):
    """Partials are summed in chunk order, so repeated runs agree bit for bit whichever thread ran what."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 24, 7, 7)).astype(np.float32)
    shapes = [(8, 24, 1, 1), (6, 24, 1, 1), (8, 6, 3, 3), (4, 24, 1, 1), (8, 4, 5, 5), (8, 24, 1, 1)]
    ws = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    (y,) = call("InceptionForward", [x, *ws], [(8, 32, 7, 7)])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    runs = [call("InceptionBackward", [dy, y, x, *ws], [x.shape] + shapes) for _ in range(6)]
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert np.array_equal(got, first)


# ---------------------------------------------------------------- validation: errors, never corruption
def _conv_args():
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 0], np.int64)
    return x, w, cfg


@pytest.mark.parametrize("mutate,message", [
    (lambda x, w, c: (x.astype(np.float64), w, c, (1, 3, 5, 5)), "'x' must be float32"),
    (lambda x, w, c: (x[0], w, c, (1, 3, 5, 5)), "'x' must have 4 dims"),
    (lambda x, w, c: (x, w[:, :1], c, (1, 3, 5, 5)), "2 channels but the weight expects 1"),
    (lambda x, w, c: (x, w, c, (1, 3, 4, 5)), "'y' has shape (1,3,4,5), expected (1,3,5,5)"),
    (lambda x, w, c: (x, w, c[:7], (1, 3, 5, 5)), "'cfg' has shape (7), expected (8)"),
    (lambda x, w, c: (x, w, np.array([0, 1, 1, 1, 1, 1, 1, 0], np.int64), (1, 3, 5, 5)), "cfg[0] = 0"),
    (lambda x, w, c: (x, w, np.array([1, 1, 3, 1, 1, 1, 1, 0], np.int64), (1, 3, 5, 5)), "does not fit"),
])
def test_conv_rejects_bad_arguments(mutate, message):
    x, w, cfg, out = mutate(*_conv_args())
    with pytest.raises(Exception, match="Conv2dForward") as err:
        call("Conv2dForward", [x, w, cfg], [out])
    assert message in str(err.value)


def test_inception_rejects_mismatched_weights():
    x = np.ones((1, 4, 5, 5), np.float32)
    ws = [np.ones(s, np.float32) for s in [(2, 4, 1, 1), (2, 4, 1, 1), (2, 3, 3, 3), (2, 4, 1, 1), (2, 2, 5, 5),
                                           (2, 4, 1, 1)]]
    with pytest.raises(Exception, match="'w2b' has shape"):
        call("InceptionForward", [x, *ws], [(1, 8, 5, 5)])


def test_wrong_tensor_count_is_an_error():
    x, w, cfg = _conv_args()
    with pytest.raises(Exception, match="expected 4 tensors"):
        call("Conv2dForward", [x, w, cfg], [(1, 3, 5, 5), (1, 3, 5, 5)])


# ---------------------------------------------------------------- the same tests under ASan + UBSan
@pytest.mark.slow
def test_kernels_pass_under_address_and_undefined_sanitizers(tmp_path, gemm_backend, threads):
    """Builds the MINDPLUG_SANITIZE=1 variant and reruns this file's tests against it (one thread/GEMM pair)."""
    if (gemm_backend, threads) != ("onednn", 1):
        pytest.skip("the sanitizer run covers both GEMMs and thread counts itself; it runs once")
    import os
    import subprocess
    import sys
    from pathlib import Path

    if os.environ.get("MINDPLUG_KERNELS_LIBRARY"):
        pytest.skip("already running against a replacement library")
    root = Path(__file__).resolve().parents[1]
    asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(asan):
        pytest.skip("libasan is not installed")
    env = {**os.environ, "MINDPLUG_SANITIZE": "1"}
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path),
                    "--build-temp", str(tmp_path / "tmp")], cwd=root, env=env, check=True, capture_output=True)
    lib = tmp_path / "mindplug" / "ops" / _library.LIBRARY_NAME
    env = {**os.environ, "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1", "MINDPLUG_KERNELS_LIBRARY": str(lib)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "not sanitizers and (onednn-2 or own-1 or own-baseline-2)"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "passed" in proc.stdout and "AddressSanitizer" not in proc.stderr
