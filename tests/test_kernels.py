"""Every C++ kernel against a float64 numpy reference, forward and backward, through the AOT ABI.

The library is called directly with ctypes (no MindSpore graph). Backward tests use small integer
data and weights in quarter steps: every sum is then exact in float32, so ReLU masks and max-pool
ties agree bit for bit with the reference and the comparison can be tight.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mindplug._errors import MindplugError
from mindplug.ops import _library

pytestmark = pytest.mark.skipif(not _library.library_path().is_file(), reason="kernel library not built")

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
    ((1, 64, 40, 40), 3, 1, (1, 1, 1, 1)),   # im2col larger than a band: four bands of output rows
    ((2, 3, 96, 96), 7, 2, (2, 2, 3, 3)),    # the stem at 96 px: two bands, stride 2 across their seam
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


@pytest.mark.parametrize("k,s,size", [(3, 1, 32), (3, 1, 33), (3, 2, 16), (3, 2, 17), (3, 2, 32), (3, 2, 33),
                                      (2, 2, 1), (3, 1, 2), (2, 2, 14), (3, 2, 28), (3, 1, 3), (3, 1, 4),
                                      (3, 1, 6), (3, 1, 7), (3, 2, 8), (3, 2, 9)])
def test_maxpool_framed_table_and_separable_paths_agree_with_reference(k, s, size):
    """Up to 32x32, stride 1 from 7x7 (its backward from 4x4) and the strided backward from 9x9 take the
    framed passes; smaller planes and the strided forward up to 16x16 the window lists; larger planes the
    per-plane passes: both sides of each switch, with ties (the first maximum gets the gradient)."""
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


@pytest.mark.parametrize("s,size", [(1, 7), (2, 7), (1, 33), (2, 33)])
def test_maxpool_minus_infinity_inputs_keep_their_gradient(s, size):
    """A window whose pixels are all -inf still has a maximum, its first pixel: the framing around the
    plane never takes it, so no gradient is lost to the padding."""
    rng = np.random.default_rng(size + s)
    x = ints(rng, (2, 3, size, size))
    x[rng.random(x.shape) < 0.7] = -np.inf
    lo, hi = same_pads(size, 3, s)
    pads = (lo, lo, hi, hi)
    finite = np.where(np.isinf(x), -1e30, x)  # the same order among the pixels, above the padding
    cfg = np.array([3, 3, s, s, *pads, 0], np.int64)
    ref = pool_ref(finite, (3, 3), (s, s), pads)
    (y,) = call("MaxPoolForward", [x, cfg], [ref.shape])
    assert np.array_equal(np.isinf(y), ref < -1e29)
    dy = ints(rng, y.shape)
    (dx,) = call("MaxPoolBackward", [dy, x, y, cfg], [x.shape])
    assert_close(dx, pool_grad_ref(dy.astype(np.float64), finite, (3, 3), (s, s), pads))


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


# ---------------------------------------------------------------- Winograd inside the GoogLeNet convs
def general_conv3x3(entry, inputs, out_shape):
    """The general convolution's own choice (algo auto) for a 3x3 stride-1 'same' ReLU layer."""
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, bits(ALPHA), bits(1e-3)], np.int64)
    return call(entry, [cfg, *inputs], [out_shape])[0]


def test_block_conv_takes_winograd_where_the_general_conv_does(gemm_backend):
    """Conv2d* send a 3x3 stride-1 layer to Winograd by the general convolution's cost model: the same
    bits as ConvForward/ConvBackward* with algo auto, within Winograd's rounding of the reference, and
    (the GEMM path being exact on quarter-valued data) visibly through Winograd where the micro-kernel is."""
    rng = np.random.default_rng(9)
    x, w = quarters(rng, (3, 64, 32, 32)), quarters(rng, (64, 64, 3, 3)) / 8
    cfg = np.array([1, 1, *same(3), 1, 0], np.int64)
    ref = np.maximum(conv_ref(x, w, (1, 1), same(3)), 0)
    (y,) = call("Conv2dForward", [x, w, cfg], [ref.shape])
    assert np.array_equal(y, general_conv3x3("ConvForward", [x, w], ref.shape))
    assert_close(y, ref, 3e-5)
    if gemm_backend in ("onednn", "own") and _library.load().MindplugCpuHas(b"avx512f"):
        # Winograd's micro-kernel needs AVX-512: elsewhere the cost model keeps im2col + GEMM
        assert not np.array_equal(y, ref.astype(np.float32)), "expected the Winograd path"
    dy = quarters(rng, y.shape)
    dx_ref, dw_ref = conv_grad_ref((dy * (y > 0)).astype(np.float64), x, w, (1, 1), same(3))
    (dx,) = call("Conv2dBackwardData", [dy, y, x, w, cfg], [x.shape])
    (dw,) = call("Conv2dBackwardFilter", [dy, y, x, w, cfg], [w.shape])
    assert np.array_equal(dx, general_conv3x3("ConvBackwardData", [dy, y, x, w], x.shape))
    assert np.array_equal(dw, general_conv3x3("ConvBackwardFilter", [dy, y, x, w], w.shape))
    assert_close(dx, dx_ref, 3e-5)
    assert_close(dw, dw_ref, 3e-5)


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


# ---------------------------------------------------------------- general conv (ConvForward / ConvBackward*)
# The kernels behind mindplug.ops.Conv2d: groups, dilation, bias, folded BatchNorm, activations, and every
# algorithm (im2col + GEMM, Winograd F(4,3) and F(2,3), direct depthwise). Real-valued data: Winograd's
# transforms are not exact in float32, and with continuous data no pre-activation sits on a ReLU kink.
ACTS = {0: lambda v: v, 1: lambda v: np.maximum(v, 0), 2: lambda v: np.clip(v, 0, 6),
        3: lambda v: np.where(v > 0, v, 0.1 * v), 4: lambda v: v * np.clip(v + 3, 0, 6) / 6,
        5: lambda v: v / (1 + np.exp(-v)), 6: lambda v: 1 / (1 + np.exp(-v))}
GRAD_FROM_Y = {0: lambda y: np.ones_like(y), 1: lambda y: (y > 0) * 1.0, 2: lambda y: ((y > 0) & (y < 6)) * 1.0,
               3: lambda y: np.where(y > 0, 1.0, 0.1), 6: lambda y: y * (1 - y)}
ALPHA = 0.1  # the LeakyReLU slope used throughout


def bits(v: float) -> int:
    import struct

    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


def conv_any_ref(x, w, stride, pads, dil=(1, 1), groups=1):
    """Grouped, dilated cross-correlation in float64, pads = (top, left, bottom, right)."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, pads, dil
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    N, C, H, W = xp.shape
    O, Cg, KH, KW = w.shape
    Og = O // groups
    OH, OW = (H - dh * (KH - 1) - 1) // sh + 1, (W - dw * (KW - 1) - 1) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for g in range(groups):
        for kh in range(KH):
            for kw in range(KW):
                patch = xp[:, g * Cg:(g + 1) * Cg, kh * dh:kh * dh + sh * (OH - 1) + 1:sh,
                           kw * dw:kw * dw + sw * (OW - 1) + 1:sw]
                y[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch,
                                                      w[g * Og:(g + 1) * Og, :, kh, kw].astype(np.float64))
    return y


def conv_any_grad_ref(gy, x, w, stride, pads, dil=(1, 1), groups=1):
    """(dx, dw) of conv_any_ref for the output gradient gy."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = stride, pads, dil
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    O, Cg, KH, KW = w.shape
    Og = O // groups
    OH, OW = gy.shape[2:]
    dwt = np.zeros(w.shape)
    for g in range(groups):
        go = gy[:, g * Og:(g + 1) * Og]
        for kh in range(KH):
            for kw in range(KW):
                sl = (slice(None), slice(g * Cg, (g + 1) * Cg), slice(kh * dh, kh * dh + sh * (OH - 1) + 1, sh),
                      slice(kw * dw, kw * dw + sw * (OW - 1) + 1, sw))
                dwt[g * Og:(g + 1) * Og, :, kh, kw] = np.einsum("nohw,nchw->oc", go, xp[sl])
                dxp[sl] += np.einsum("nohw,oc->nchw", go, w[g * Og:(g + 1) * Og, :, kh, kw].astype(np.float64))
    H, W = x.shape[2:]
    return dxp[:, :, pt:pt + H, pl:pl + W], dwt


def normal(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@st.composite
def conv_any_case(draw):
    depthwise = draw(st.booleans())
    if depthwise:
        groups, cg, og = draw(st.integers(1, 6)), 1, 1
    else:
        groups, cg, og = draw(st.sampled_from([1, 1, 2, 3])), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    wino = not depthwise and groups == 1 and draw(st.booleans())
    if wino:
        kh = kw = 3
        sh = sw = dh = dw = 1
    else:
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        sh, sw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    same = draw(st.booleans())
    pads = tuple(draw(st.integers(0, 4)) for _ in range(4))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h = draw(st.integers(max(1, ekh - (0 if same else pads[0] + pads[2])), 13))
    w = draw(st.integers(max(1, ekw - (0 if same else pads[1] + pads[3])), 13))
    if same:
        (pt, pb), (pl, pr) = same_pads(h, ekh, sh), same_pads(w, ekw, sw)
        pads = (pt, pl, pb, pr)
    algos = [0, 1] + ([4] if depthwise else []) + ([2, 3] if wino else [])
    return dict(n=draw(st.integers(1, 3)), c=groups * cg, o=groups * og, groups=groups, h=h, w=w, kh=kh, kw=kw,
                stride=(sh, sw), dil=(dh, dw), pads=pads, same=same, act=draw(st.integers(0, 6)),
                bias=draw(st.booleans()), fold=draw(st.booleans()), algo=draw(st.sampled_from(algos)),
                seed=draw(st.integers(0, 2**31 - 1)))


def conv_any_setup(case, act=None):
    rng = np.random.default_rng(case["seed"])
    act = case["act"] if act is None else act
    x = normal(rng, (case["n"], case["c"], case["h"], case["w"]))
    w = normal(rng, (case["o"], case["c"] // case["groups"], case["kh"], case["kw"]), 0.5)
    extra = []
    if case["bias"]:
        extra.append(normal(rng, (case["o"],)))
    if case["fold"]:
        extra += [normal(rng, (case["o"],)), normal(rng, (case["o"],)), normal(rng, (case["o"],)),
                  (rng.random(case["o"]) + 0.5).astype(np.float32)]
    explicit = (0, 0, 0, 0) if case["same"] else case["pads"]
    cfg = np.array([*case["stride"], *explicit, *case["dil"], case["groups"], act, int(case["bias"]),
                    int(case["fold"]), int(case["same"]), case["algo"], bits(ALPHA), bits(1e-3)], np.int64)
    return rng, x, w, extra, cfg


def folded(case, w, extra):
    """The weights and bias the kernel convolves with (float64), and the per-channel BatchNorm scale."""
    w = w.astype(np.float64)
    bias = extra[0].astype(np.float64) if case["bias"] else np.zeros(w.shape[0])
    if not case["fold"]:
        return w, bias, None
    g, b, m, v = (t.astype(np.float64) for t in extra[1 if case["bias"] else 0:])
    s = g / np.sqrt(v + 1e-3)
    return w * s[:, None, None, None], b + (bias - m) * s, s


def conv_tolerance(case) -> float:
    return 3e-5 if case["algo"] in (2, 3) or (case["algo"] == 0 and case["kh"] == 3) else 1e-5


@SETTINGS
@given(conv_any_case())
def test_conv_any_forward(case):
    rng, x, w, extra, cfg = conv_any_setup(case)
    wf, bf, _ = folded(case, w, extra)
    ref = ACTS[case["act"]](conv_any_ref(x, wf, case["stride"], case["pads"], case["dil"], case["groups"])
                            + bf[None, :, None, None])
    (y,) = call("ConvForward", [cfg, x, w, *extra], [ref.shape])
    assert_close(y, ref, conv_tolerance(case))


@SETTINGS
@given(conv_any_case(), st.sampled_from([0, 1, 2, 3, 6]))
def test_conv_any_backward(case, act):
    """dx, dw, dbias and the folded BatchNorm's gradients, the activation's derivative taken from y."""
    rng, x, w, extra, cfg = conv_any_setup(case, act)
    wf, bf, s = folded(case, w, extra)
    z = conv_any_ref(x, wf, case["stride"], case["pads"], case["dil"], case["groups"]) + bf[None, :, None, None]
    y = ACTS[act](z).astype(np.float32)
    dy = normal(rng, y.shape)
    g = dy.astype(np.float64) * GRAD_FROM_Y[act](y.astype(np.float64))
    dx_ref, dwf = conv_any_grad_ref(g, x, wf, case["stride"], case["pads"], case["dil"], case["groups"])
    dbf = g.sum(axis=(0, 2, 3))
    refs = [dx_ref]
    outs = [w.shape]
    if not case["fold"]:
        refs.append(dwf)
        if case["bias"]:
            refs.append(dbf)
    else:
        gam, _, mean, var = (t.astype(np.float64) for t in extra[1 if case["bias"] else 0:])
        bias = extra[0].astype(np.float64) if case["bias"] else np.zeros(w.shape[0])
        ds = (dwf * w).sum(axis=(1, 2, 3)) + dbf * (bias - mean)
        refs.append(dwf * s[:, None, None, None])
        if case["bias"]:
            refs.append(dbf * s)
        inv = 1 / np.sqrt(var + 1e-3)
        refs += [ds * inv, dbf, -dbf * s, ds * gam * -0.5 * inv ** 3]
    outs += [(w.shape[0],)] * (len(refs) - 2)
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, w, *extra], [x.shape])
    grads = call("ConvBackwardFilter", [cfg, dy, y, x, w, *extra], outs)
    tol = 2 * conv_tolerance(case)
    for name, got, want in zip(["dx", "dw", "d1", "d2", "d3", "d4", "d5"], [dx, *grads], refs):
        assert_close(got, want, tol), name


@pytest.mark.parametrize("algo", [1, 2, 3])
@pytest.mark.parametrize("n,c,o,size", [(16, 64, 64, 14), (2, 96, 48, 9), (3, 40, 72, 28), (1, 128, 128, 7)])
def test_winograd_at_network_sizes(algo, n, c, o, size):
    """Winograd F(4,3) / F(2,3) against float64 at ResNet-like widths (many tiles, several tile blocks, a
    block boundary inside a tile row): forward, input gradient and the weight gradient (Winograd's dual,
    over several super-blocks of tiles), ReLU epilogue."""
    rng = np.random.default_rng(c + size)
    x = np.maximum(normal(rng, (n, c, size, size)), 0)
    w = normal(rng, (o, c, 3, 3), np.sqrt(2 / (9 * c)))
    b = normal(rng, (o,))
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, algo, 0, 0], np.int64)
    ref = np.maximum(conv_any_ref(x, w, (1, 1), (1, 1, 1, 1)) + b[None, :, None, None], 0)
    (y,) = call("ConvForward", [cfg, x, w, b], [ref.shape])
    assert_close(y, ref, 1e-5 if algo == 1 else 4e-5)
    dy = normal(rng, y.shape)
    dx_ref, dw_ref = conv_any_grad_ref(dy * (y > 0), x, w, (1, 1), (1, 1, 1, 1))
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, w, b], [x.shape])
    assert_close(dx, dx_ref, 1e-5 if algo == 1 else 4e-5)
    dw, db = call("ConvBackwardFilter", [cfg, dy, y, x, w, b], [w.shape, (o,)])
    assert_close(dw, dw_ref, 1e-5 if algo == 1 else 4e-5)
    assert_close(db, (dy * (y > 0)).sum(axis=(0, 2, 3)))


def test_conv_any_rejects_bad_arguments():
    x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((6, 2, 3, 3), np.float32)
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0], np.int64)
    call("ConvForward", [cfg, x, w], [(1, 6, 5, 5)])  # the valid call
    cases = [
        (dict(groups=3), "groups = 3 must divide"),
        (dict(act=9), "act = 9 is out of range"),
        (dict(dil=0), "dilation_h = 0"),
        (dict(algo=2), "Winograd needs"),
        (dict(algo=4), "depthwise kernel needs"),
        (dict(bias=1), "expected 5 tensors"),
    ]
    for change, message in cases:
        c = cfg.copy()
        c[8] = change.get("groups", 2)
        c[9] = change.get("act", 0)
        c[6] = change.get("dil", 1)
        c[13] = change.get("algo", 0)
        c[10] = change.get("bias", 0)
        with pytest.raises(Exception, match="ConvForward") as err:
            call("ConvForward", [c, x, w], [(1, 6, 5, 5)])
        assert message in str(err.value), (change, str(err.value))
    with pytest.raises(Exception, match="has shape"):
        call("ConvForward", [cfg, x, w], [(1, 6, 4, 5)])
    with pytest.raises(Exception, match="first input must be the int64 cfg"):
        call("ConvForward", [x, w], [(1, 6, 5, 5)])
    swish = cfg.copy()
    swish[9] = 5
    with pytest.raises(Exception, match="cannot be differentiated from its output"):
        call("ConvBackwardData", [swish, np.ones((1, 6, 5, 5), np.float32), np.ones((1, 6, 5, 5), np.float32), x, w],
             [x.shape])


# ---------------------------------------------------------------- general pooling (PoolForward / PoolBackward)
def pool_any_ref(x, k, stride, pads, dil, avg, ceil_mode, include_pad, divisor):
    """PyTorch's / MindSpore's pooling in float64 with the first maximum getting the gradient; returns
    (y, backward) where backward(dy) -> dx."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = k, stride, pads, dil
    N, C, H, W = x.shape

    def size(n, lo, hi, ext, s):
        span = n + lo + hi - ext
        o = (-(-span // s) if ceil_mode else span // s) + 1
        return o - 1 if ceil_mode and (o - 1) * s >= n + lo else o

    OH, OW = size(H, pt, pb, dh * (kh - 1) + 1, sh), size(W, pl, pr, dw * (kw - 1) + 1, sw)
    x64 = x.astype(np.float64)
    y = np.zeros((N, C, OH, OW))
    taps = {}
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * sh - pt, ow * sw - pl
            cells = [(h0 + a * dh, w0 + b * dw) for a in range(kh) for b in range(kw)]
            inside = [(i, j) for i, j in cells if 0 <= i < H and 0 <= j < W]
            if avg:
                hend, wend = min(h0 + kh, H + pb), min(w0 + kw, W + pr)
                if divisor:
                    div = divisor
                elif include_pad:
                    div = (hend - h0) * (wend - w0)
                else:
                    div = (min(hend, H) - max(h0, 0)) * (min(wend, W) - max(w0, 0))
                taps[oh, ow] = (inside, div)
                y[:, :, oh, ow] = sum(x64[:, :, i, j] for i, j in inside) / div
            elif not inside:  # a dilated window can miss the image entirely: -inf, no gradient
                taps[oh, ow] = (inside, None)
                y[:, :, oh, ow] = -np.inf
            else:
                vals = np.stack([x64[:, :, i, j] for i, j in inside], axis=-1)
                taps[oh, ow] = (inside, vals.argmax(axis=-1))
                y[:, :, oh, ow] = vals.max(axis=-1)

    def backward(dy):
        dx = np.zeros((N, C, H, W))
        n_idx, c_idx = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
        for (oh, ow), (inside, aux) in taps.items():
            if avg:
                for i, j in inside:
                    dx[:, :, i, j] += dy[:, :, oh, ow] / aux
            elif inside:
                rows = np.array([i for i, _ in inside])[aux]
                cols = np.array([j for _, j in inside])[aux]
                np.add.at(dx, (n_idx, c_idx, rows, cols), dy[:, :, oh, ow])
        return dx

    return y, backward


@st.composite
def pool_any_case(draw):
    avg = draw(st.booleans())
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = (1, 1) if avg else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    same = draw(st.booleans())
    pads = (draw(st.integers(0, ekh - 1)), draw(st.integers(0, ekw - 1)), draw(st.integers(0, ekh - 1)),
            draw(st.integers(0, ekw - 1)))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, ekh - (0 if same else pads[0] + pads[2])), 11))
    w = draw(st.integers(max(1, ekw - (0 if same else pads[1] + pads[3])), 11))
    if same:
        (pt, pb), (pl, pr) = same_pads(h, ekh, sh), same_pads(w, ekw, sw)
        pads = (pt, pl, pb, pr)
    ceil = draw(st.booleans()) and not same
    include_pad = draw(st.booleans())
    divisor = draw(st.sampled_from([0, 0, 1, 5])) if avg else 0
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), h=h, w=w, k=(kh, kw), stride=(sh, sw),
                pads=pads, dil=(dh, dw), avg=avg, same=same, ceil=ceil, include_pad=include_pad, divisor=divisor,
                seed=draw(st.integers(0, 2**31 - 1)))


@SETTINGS
@given(pool_any_case())
def test_pool_any_forward_backward(case):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, (case["n"], case["c"], case["h"], case["w"]))
    explicit = (0, 0, 0, 0) if case["same"] else case["pads"]
    cfg = np.array([*case["k"], *case["stride"], *explicit, *case["dil"], int(case["avg"]), int(case["include_pad"]),
                    case["divisor"], int(case["same"]), int(case["ceil"]), 0], np.int64)
    ref, backward = pool_any_ref(x, case["k"], case["stride"], case["pads"], case["dil"], case["avg"],
                                 case["ceil"] and not case["same"], case["include_pad"], case["divisor"])
    (y,) = call("PoolForward", [cfg, x], [ref.shape])
    empty = np.isinf(ref)
    assert np.array_equal(np.isinf(y), empty)
    assert_close(np.where(empty, 0, y), np.where(empty, 0, ref))
    dy = normal(rng, y.shape)
    (dx,) = call("PoolBackward", [cfg, dy, x, y], [x.shape])
    assert_close(dx, backward(dy.astype(np.float64)))


def test_global_average_pool_and_ties():
    """A window over the whole map is global average pooling; with ties the first maximum gets the gradient."""
    rng = np.random.default_rng(7)
    x = normal(rng, (3, 5, 7, 6))
    cfg = np.array([7, 6, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], np.int64)
    (y,) = call("PoolForward", [cfg, x], [(3, 5, 1, 1)])
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True))
    xi = ints(rng, (2, 3, 9, 9))  # many ties
    cfg = np.array([3, 3, 2, 2, 1, 1, 1, 1, 2, 1, 0, 1, 0, 0, 1, 0], np.int64)
    ref, backward = pool_any_ref(xi, (3, 3), (2, 2), (1, 1, 1, 1), (2, 1), False, True, True, 0)
    (y,) = call("PoolForward", [cfg, xi], [ref.shape])
    assert_close(y, ref)
    dy = ints(rng, y.shape)
    (dx,) = call("PoolBackward", [cfg, dy, xi, y], [xi.shape])
    assert_close(dx, backward(dy.astype(np.float64)))


def test_pool_any_rejects_bad_arguments():
    x = np.ones((1, 2, 6, 6), np.float32)
    good = np.array([3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0], np.int64)
    call("PoolForward", [good, x], [(1, 2, 3, 3)])
    for index, value, message in [(4, 3, "must be smaller than the 3x3 window"), (10, 2, "mode = 2"),
                                  (8, 2, None), (2, 0, "stride_h = 0")]:
        cfg = good.copy()
        cfg[index] = value
        if message is None:  # average pooling with a dilation
            cfg[10] = 1
            message = "average pooling has no dilation"
        with pytest.raises(Exception, match="PoolForward") as err:
            call("PoolForward", [cfg, x], [(1, 2, 3, 3)])
        assert message in str(err.value)


# ---------------------------------------------------------------- BatchNorm (training and inference)
bn_case = st.fixed_dictionaries(dict(n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 6),
                                     w=st.integers(1, 6), act=st.integers(0, 6),
                                     momentum=st.sampled_from([0.0, 0.9, 0.99]), seed=st.integers(0, 2**31 - 1)))


def bn_ref(x, gamma, beta, mean, var, eps, act):
    xhat = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)
    return ACTS[act](xhat * gamma[None, :, None, None] + beta[None, :, None, None]), xhat


def act_grad_z(act, z):
    if act in GRAD_FROM_Y:
        return GRAD_FROM_Y[act](ACTS[act](z))
    if act == 4:
        return np.where(z <= -3, 0.0, np.where(z >= 3, 1.0, (2 * z + 3) / 6))
    s = 1 / (1 + np.exp(-z))
    return s * (1 + z * (1 - s))


@SETTINGS
@given(bn_case)
def test_batchnorm_train(case):
    """Batch statistics (biased variance), MindSpore's moving-average update (unbiased variance), and the
    gradient through the statistics, for every fused activation."""
    rng = np.random.default_rng(case["seed"])
    C, act, eps, m = case["c"], case["act"], 1e-4, case["momentum"]
    x = (normal(rng, (case["n"], C, case["h"], case["w"])) * 3 + 2).astype(np.float32)
    gamma, beta, mm = normal(rng, (C,)), normal(rng, (C,)), normal(rng, (C,))
    mv = (rng.random(C) + 0.5).astype(np.float32)
    cfg = np.array([act, bits(ALPHA), bits(eps), bits(m), 0, 0, 0, 0], np.int64)
    y, mean, invstd, nmm, nmv = call("BatchNormTrain", [cfg, x, gamma, beta, mm, mv], [x.shape] + [(C,)] * 4)
    x64 = x.astype(np.float64)
    bm, bv = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    M = x.size // C
    ref, xhat = bn_ref(x64, gamma, beta, bm, bv, eps, act)
    assert_close(y, ref)
    assert_close(mean, bm)
    assert_close(invstd, 1 / np.sqrt(bv + eps), 1e-4)
    assert_close(nmm, m * mm + (1 - m) * bm)
    assert_close(nmv, m * mv + (1 - m) * (bv * M / (M - 1) if M > 1 else bv))
    if M < 4:  # with 1-3 values per channel dx cancels to ~0: float32 rounding, not the kernel, decides it
        return
    dy = normal(rng, x.shape)
    z = xhat * gamma[None, :, None, None] + beta[None, :, None, None]
    g = dy * act_grad_z(act, z)
    dbeta, dgamma = g.sum(axis=(0, 2, 3)), (g * xhat).sum(axis=(0, 2, 3))
    k = (gamma / np.sqrt(bv + eps))[None, :, None, None]
    dx_ref = k * (g - dbeta[None, :, None, None] / M - xhat * dgamma[None, :, None, None] / M)
    dx, dg, db = call("BatchNormTrainBackward", [cfg, dy, x, y, gamma, beta, mean, invstd], [x.shape, (C,), (C,)])
    assert_close(dx, dx_ref, 1e-4)
    assert_close(dg, dgamma, 1e-4)
    assert_close(db, dbeta, 1e-4)


@SETTINGS
@given(bn_case)
def test_batchnorm_infer(case):
    rng = np.random.default_rng(case["seed"])
    C, act, eps = case["c"], case["act"], 1e-5
    x = normal(rng, (case["n"], C, case["h"], case["w"]))
    gamma, beta, mean = normal(rng, (C,)), normal(rng, (C,)), normal(rng, (C,))
    var = (rng.random(C) + 0.5).astype(np.float32)
    cfg = np.array([act, bits(ALPHA), bits(eps), bits(0.9), 0, 0, 0, 0], np.int64)
    (y,) = call("BatchNormInfer", [cfg, x, gamma, beta, mean, var], [x.shape])
    ref, xhat = bn_ref(x.astype(np.float64), gamma, beta, mean, var, eps, act)
    assert_close(y, ref)
    dy = normal(rng, x.shape)
    g = dy * act_grad_z(act, xhat * gamma[None, :, None, None] + beta[None, :, None, None])
    dx, dg, db = call("BatchNormInferBackward", [cfg, dy, x, y, gamma, beta, mean, var], [x.shape, (C,), (C,)])
    assert_close(dx, g * (gamma / np.sqrt(var + eps))[None, :, None, None])
    assert_close(dg, (g * xhat).sum(axis=(0, 2, 3)))
    assert_close(db, g.sum(axis=(0, 2, 3)))


def test_batchnorm_rejects_bad_arguments():
    x, c = np.ones((2, 3, 4, 4), np.float32), np.ones(3, np.float32)
    cfg = np.array([0, 0, bits(1e-5), bits(0.9), 0, 0, 0, 0], np.int64)
    call("BatchNormInfer", [cfg, x, c, c, c, c], [x.shape])
    for index, value, message in [(2, bits(0.0), "epsilon must be positive"), (3, bits(1.5), "momentum must be in"),
                                  (0, 7, "is not an activation")]:
        bad = cfg.copy()
        bad[index] = value
        with pytest.raises(Exception, match=message):
            call("BatchNormTrain", [bad, x, c, c, c, c], [x.shape] + [(3,)] * 4)
    with pytest.raises(Exception, match="'gamma' has shape"):
        call("BatchNormInfer", [cfg, x, np.ones(4, np.float32), c, c, c], [x.shape])


# ---------------------------------------------------------------- a training step's gradients (GradNorm, GradClip)
def _random_grads(rng: np.random.Generator) -> List[np.ndarray]:
    """1-6 float32 tensors of ranks 1-4; one often larger than a kernel work item (32,768 elements)."""
    grads = []
    for _ in range(int(rng.integers(1, 7))):
        rank = int(rng.integers(1, 5))
        grads.append((rng.standard_normal(tuple(int(d) for d in rng.integers(1, 9, rank))) *
                      10.0 ** rng.uniform(-3, 2)).astype(np.float32))
    if rng.random() < 0.5:
        grads.insert(int(rng.integers(len(grads) + 1)), rng.standard_normal((70001,)).astype(np.float32))
    return grads


def _norm64(grads: List[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)))


@pytest.mark.parametrize("seed", range(6))
def test_grad_norm_kernel_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grads = _random_grads(rng)
    (stats,) = _library.call("GradNorm", grads, [(2,)])
    assert stats[0] == 1.0
    assert stats[1] == pytest.approx(_norm64(grads), rel=1e-6)
    for bad in (np.inf, -np.inf, np.nan):
        poisoned = [g.copy() for g in grads]
        which = int(rng.integers(len(grads)))
        poisoned[which].reshape(-1)[int(rng.integers(poisoned[which].size))] = bad
        (stats,) = _library.call("GradNorm", poisoned, [(2,)])
        assert stats[0] == 0.0 and not np.isfinite(stats[1])
    huge = [np.full((3, 5), 3e38, np.float32)]  # finite, though the float32 norm overflows
    (stats,) = _library.call("GradNorm", huge, [(2,)])
    assert stats[0] == 1.0


def test_grad_norm_does_not_depend_on_the_thread_count(threads) -> None:
    grads = _random_grads(np.random.default_rng(7)) + [np.random.default_rng(8).standard_normal(200000)
                                                        .astype(np.float32)]
    norms = []
    for count in (1, 2, 3):
        _library.set_num_threads(count)
        norms.append(_library.call("GradNorm", grads, [(2,)])[0][1])
    _library.set_num_threads(threads)
    assert norms[0] == norms[1] == norms[2]


@pytest.mark.parametrize("seed", range(6))
def test_grad_clip_kernel_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grads = _random_grads(rng)
    norm = _norm64(grads)
    for clip in (norm * 0.3, norm * 3.0, norm):
        (stats,) = _library.call("GradNorm", grads, [(2,)])
        cfg = np.array([bits(clip)], np.int64)
        out = _library.call("GradClip", [cfg, stats] + grads, [g.shape for g in grads])
        factor = clip / float(stats[1]) if float(stats[1]) >= clip else None
        for g, o in zip(grads, out):
            if factor is None:
                np.testing.assert_array_equal(o, g)  # at or under the clip: unchanged, bit for bit
            else:
                np.testing.assert_allclose(o, g * np.float32(factor), rtol=1e-6, atol=0)
        clipped = _norm64(out)
        assert clipped == pytest.approx(min(norm, clip), rel=1e-5)
    poisoned = [g.copy() for g in grads]
    poisoned[0].reshape(-1)[0] = np.nan
    (stats,) = _library.call("GradNorm", poisoned, [(2,)])
    out = _library.call("GradClip", [np.array([bits(1e-3)], np.int64), stats] + poisoned, [g.shape for g in grads])
    for g, o in zip(poisoned, out):  # not finite: left as they are for the overflow check to see
        np.testing.assert_array_equal(o, g)


def test_grad_kernels_refuse_bad_tensors() -> None:
    good = [np.ones((2, 3), np.float32), np.ones(4, np.float32)]
    stats = np.array([1.0, 3.0], np.float32)
    cfg = np.array([bits(1.0)], np.int64)
    cases = [
        ("GradNorm", [good[0], np.ones(4, np.float64)], [(2,)], "gradient 1 must be float32"),
        ("GradNorm", good, [(3,)], "output must be float32 of shape [2]"),
        ("GradClip", [cfg, stats] + good, [(2, 3), (5,)], "output 1 must have the shape of gradient 1"),
        ("GradClip", [np.array([bits(0.0)], np.int64), stats] + good, [(2, 3), (4,)], "clip norm must be"),
        ("GradClip", [cfg, stats] + good, [(2, 3)], "expected cfg, stats, n gradients and n outputs"),
    ]
    for entry, inputs, outs, message in cases:
        with pytest.raises(MindplugError, match=message.replace("[", r"\[").replace("]", r"\]")):
            _library.call(entry, inputs, outs)


# ---------------------------------------------------------------- the exception barrier
def test_out_of_memory_is_an_error_not_a_crash(threads):
    """With the address space capped, the im2col buffer cannot be allocated (and worker threads may not
    start): the entry point returns an error with the message instead of letting bad_alloc escape."""
    import os
    import signal

    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer reserves its shadow memory up front: an address-space cap breaks it")
    rng = np.random.default_rng(9)
    x = normal(rng, (2, 64, 96, 96))
    w = normal(rng, (64, 64, 7, 7), 0.01)
    cfg = np.array([1, 1, 3, 3, 3, 3, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0], np.int64)  # im2col: 64*49 x 9216 floats
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)
        code = 5
        try:
            import resource

            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (used + (48 << 20), resource.RLIM_INFINITY))
            try:
                call("ConvForward", [cfg, x, w], [(2, 64, 96, 96)])
                code = 3  # the allocation did not fail: the limit was too generous
            except Exception as err:  # noqa: BLE001 - the error must carry the kernel's message
                code = 0 if "out of memory" in str(err) else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child crashed: status {status}"
    assert os.WEXITSTATUS(status) in (0, 3), f"child exit {os.WEXITSTATUS(status)}"


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


# ---------------------------------------------------------------- bfloat16 GEMMs
BF16_TOL = 2e-2  # bf16 operands (8 significant bits), fp32 accumulation, relative to the output's scale


@pytest.fixture(params=["best", "no-amx"])
def bf16(gemm_backend, request):
    """The kernels switched to bfloat16 GEMMs; yields whether bf16 is in effect (only with oneDNN's GEMM on
    a CPU with AVX512_BF16; the portable GEMM always computes in fp32). On a CPU with AMX, once with its
    tiles and once with the AVX512_BF16 kernel."""
    lib = _library.load()
    if request.param == "no-amx":
        if gemm_backend != "onednn":
            pytest.skip("the portable GEMM has no bf16 kernel to choose")
        if _library.bf16_kernel() != "amx":
            pytest.skip("no AMX here: the AVX512_BF16 kernel is the best one")
        lib.MindplugForceBf16NoAmx(1)
    try:
        effective = _library.set_precision("bfloat16")
        assert _library.get_precision() == effective
        if gemm_backend != "onednn":
            assert effective == "float32", "the portable GEMM has no bf16 path: the request must fall back"
            assert _library.bf16_kernel() == "none"
        elif effective == "bfloat16":
            assert _library.bf16_kernel() == ("avx512_bf16" if request.param == "no-amx" else
                                              ("amx" if _cpu_flags() >= {"amx_bf16", "amx_tile"} else "avx512_bf16"))
        yield effective == "bfloat16"
    finally:
        assert _library.set_precision("float32") == "float32"
        lib.MindplugForceBf16NoAmx(0)


def _cpu_flags() -> set:
    """The CPU's flags as Linux lists them (empty where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="bfloat16"):
        _library.set_precision("bf16")


@SETTINGS
@given(conv_any_case())
def test_conv_any_forward_bf16(bf16, case):
    rng, x, w, extra, cfg = conv_any_setup(case)
    x, w = normal(rng, x.shape), normal(rng, w.shape, 0.5)  # real-valued: bf16 rounding shows
    wf, bf, _ = folded(case, w, extra)
    ref = ACTS[case["act"]](conv_any_ref(x, wf, case["stride"], case["pads"], case["dil"], case["groups"])
                            + bf[None, :, None, None])
    (y,) = call("ConvForward", [cfg, x, w, *extra], [ref.shape])
    assert_close(y, ref, BF16_TOL if bf16 else conv_tolerance(case))


@SETTINGS
@given(conv_any_case())
def test_conv_any_backward_bf16(bf16, case):
    rng, x, w, extra, cfg = conv_any_setup(case, 0)
    case = {**case, "fold": False}
    cfg[11] = 0  # no folded BatchNorm: plain dx, dw (and dbias)
    extra = extra[:1] if case["bias"] else []
    y = (conv_any_ref(x, w.astype(np.float64), case["stride"], case["pads"], case["dil"], case["groups"])
         + (extra[0].astype(np.float64)[None, :, None, None] if extra else 0)).astype(np.float32)
    dy = normal(rng, y.shape)
    dx_ref, dw_ref = conv_any_grad_ref(dy.astype(np.float64), x, w.astype(np.float64), case["stride"],
                                       case["pads"], case["dil"], case["groups"])
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, w, *extra], [x.shape])
    grads = call("ConvBackwardFilter", [cfg, dy, y, x, w, *extra], [w.shape] + [(w.shape[0],)] * len(extra))
    tol = BF16_TOL if bf16 else 2 * conv_tolerance(case)
    assert_close(dx, dx_ref, tol)
    assert_close(grads[0], dw_ref, tol)
    if extra:
        assert_close(grads[1], dy.astype(np.float64).sum(axis=(0, 2, 3)), tol)


def test_bf16_really_rounds_the_gemm_operands(bf16):
    """The GEMM path of a conv and the Inception block, forward and backward, differ from fp32 by bf16's
    rounding (more than fp32's, within bf16's tolerance): the switch reaches the kernels."""
    if not bf16:
        pytest.skip("bf16 is not in effect with this GEMM / CPU")
    rng = np.random.default_rng(11)
    x = normal(rng, (2, 32, 12, 12))
    w = normal(rng, (48, 32, 3, 3), 0.1)
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, bits(ALPHA), bits(1e-3)], np.int64)  # GEMM path
    ref = conv_any_ref(x, w.astype(np.float64), (1, 1), (1, 1, 1, 1))
    (y,) = call("ConvForward", [cfg, x, w], [ref.shape])
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert 1e-4 < err < BF16_TOL, err
    dy = normal(rng, y.shape)
    dx_ref, dw_ref = conv_any_grad_ref(dy.astype(np.float64), x, w.astype(np.float64), (1, 1), (1, 1, 1, 1))
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, w], [x.shape])
    (dw,) = call("ConvBackwardFilter", [cfg, dy, y, x, w], [w.shape])
    for got, want in ((dx, dx_ref), (dw, dw_ref)):
        err = np.abs(got - want).max() / np.abs(want).max()
        assert 1e-4 < err < BF16_TOL, err
    xi = np.maximum(normal(rng, (2, 24, 7, 7)), 0)
    shapes = [(8, 24, 1, 1), (12, 24, 1, 1), (16, 12, 3, 3), (4, 24, 1, 1), (8, 4, 5, 5), (8, 24, 1, 1)]
    ws = [normal(rng, s, float(np.sqrt(2 / np.prod(s[1:])))) for s in shapes]
    iref, _ = inception_ref(xi, ws)
    (yi,) = call("InceptionForward", [xi, *ws], [iref.shape])
    err = np.abs(yi - iref).max() / np.abs(iref).max()
    assert 1e-4 < err < BF16_TOL, err
    # Backward from bf16-exact inputs: the block recomputes its hidden ReLUs from bf16 GEMMs, and against
    # float64 on the unrounded inputs a unit within rounding of 0 could take the other side of its mask.
    xi, ws = to_bf16(xi), [to_bf16(w) for w in ws]
    iref, _ = inception_ref(xi, ws)
    dyi = to_bf16(normal(rng, iref.shape))
    refs = inception_grad_ref(dyi.astype(np.float64), iref.astype(np.float32), xi, ws)
    got = call("InceptionBackward", [dyi, iref.astype(np.float32), xi, *ws], [xi.shape] + [w.shape for w in ws])
    for name, g, r in zip(["dx", "dw1", "dw2a", "dw2b", "dw3a", "dw3b", "dw4"], got, refs):
        assert_close(g, r, BF16_TOL), name


def test_bf16_gemm_panels_cover_every_product_once(bf16):
    """A conv whose GEMMs are larger than the bf16 packing panels (K = 1728 reduction terms, 576 columns
    per image, and the transposed forms of the backward): on bf16-exact inputs the products are exact and
    only fp32 accumulation remains, so a panel lost or counted twice shows far above the tolerance."""
    if not bf16:
        pytest.skip("bf16 is not in effect with this GEMM / CPU")
    rng = np.random.default_rng(12)
    x = to_bf16(normal(rng, (2, 192, 24, 24)))
    w = to_bf16(normal(rng, (40, 192, 3, 3), 0.05))
    cfg = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, bits(ALPHA), bits(1e-3)], np.int64)  # GEMM path
    ref = conv_any_ref(x, w.astype(np.float64), (1, 1), (1, 1, 1, 1))
    (y,) = call("ConvForward", [cfg, x, w], [ref.shape])
    assert np.abs(y - ref).max() / np.abs(ref).max() < 2e-5
    dy = to_bf16(normal(rng, y.shape))
    dx_ref, dw_ref = conv_any_grad_ref(dy.astype(np.float64), x, w.astype(np.float64), (1, 1), (1, 1, 1, 1))
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, w], [x.shape])
    (dw,) = call("ConvBackwardFilter", [cfg, dy, y, x, w], [w.shape])
    for got, want in ((dx, dx_ref), (dw, dw_ref)):
        assert np.abs(got - want).max() / np.abs(want).max() < 2e-5


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 21), st.integers(1, 53), st.integers(3, 13), st.integers(3, 13),
       st.sampled_from([1, 3]), st.data())
def test_bf16_gemm_ragged_shapes_match_float64(bf16, n, c, o, h, w, k, data):
    """The bf16 GEMM at shapes that fill no packing unit (rows not a multiple of 8 or 16, columns of 16, 32 or 48, an
    odd reduction length), forward and both gradients: on bf16-exact inputs only fp32 accumulation remains,
    so a padded row, column or k counted (or a real one dropped) shows far above the tolerance."""
    if not bf16:
        pytest.skip("bf16 is not in effect with this GEMM / CPU")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    x = to_bf16(normal(rng, (n, c, h, w)))
    wt = to_bf16(normal(rng, (o, c, k, k), 0.2))
    pad = k // 2
    cfg = np.array([1, 1, pad, pad, pad, pad, 1, 1, 1, 0, 0, 0, 0, 1, bits(ALPHA), bits(1e-3)], np.int64)
    ref = conv_any_ref(x, wt.astype(np.float64), (1, 1), (pad, pad, pad, pad))
    (y,) = call("ConvForward", [cfg, x, wt], [ref.shape])
    scale = np.abs(ref).max() + 1e-30
    assert np.abs(y - ref).max() / scale < 2e-5
    dy = to_bf16(normal(rng, y.shape))
    dx_ref, dw_ref = conv_any_grad_ref(dy.astype(np.float64), x, wt.astype(np.float64), (1, 1),
                                       (pad, pad, pad, pad))
    (dx,) = call("ConvBackwardData", [cfg, dy, y, x, wt], [x.shape])
    (dw,) = call("ConvBackwardFilter", [cfg, dy, y, x, wt], [wt.shape])
    for got, want in ((dx, dx_ref), (dw, dw_ref)):
        assert np.abs(got - want).max() / (np.abs(want).max() + 1e-30) < 2e-5


def to_bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)


# ---------------------------------------------------------------- colour jitter (data pipeline, uint8)
def jitter_ref(image, steps, factors):
    """Pillow's ImageEnhance in numpy: each step blends with its degenerate image in float32, clips to
    0..255 and truncates; luma is Pillow's L conversion (16-bit fixed point, rounded)."""
    out = image.astype(np.int64)

    def luma(img):
        return (img[..., 0] * 19595 + img[..., 1] * 38470 + img[..., 2] * 7471 + 0x8000) >> 16

    def blend(degenerate, value, f):
        t = np.float32(degenerate) + np.float32(f) * (value - degenerate).astype(np.float32)
        return np.clip(t, 0, 255).astype(np.int64)

    for step, f in zip(steps, factors):
        if step == 0:
            out = blend(np.zeros_like(out), out, f)
        elif step == 1:
            grey = luma(out) if out.shape[2] == 3 else out[..., 0]
            out = blend(np.full_like(out, int(grey.mean() + 0.5)), out, f)
        else:
            out = blend(np.repeat(luma(out)[..., None], 3, axis=2), out, f)
    return out.astype(np.uint8)


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3]), st.data())
def test_color_jitter_matches_numpy_and_pillow(h, w, c, data):
    from PIL import Image, ImageEnhance

    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    choices = [0, 1, 2] if c == 3 else [0, 1]
    steps = [int(s) for s in rng.choice(choices, size=int(rng.integers(0, 5)))]
    factors = [float(np.float32(rng.uniform(0.0, 3.0))) for _ in steps]
    out = _library.color_jitter(image, steps, factors)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, jitter_ref(image, steps, factors))
    pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
    for step, f in zip(steps, factors):
        pil = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[step](pil).enhance(f)
    np.testing.assert_array_equal(out, np.asarray(pil).reshape(image.shape))


@pytest.mark.parametrize("shape, steps, factors, message", [
    ((4, 4, 2), [0], [1.0], "1 or 3 channels"),
    ((4, 4, 1), [2], [1.0], "saturation needs a 3-channel image"),
    ((4, 4, 3), [3], [1.0], "unknown step 3"),
    ((4, 4, 3), [0], [-0.5], "must be finite and >= 0"),
    ((4, 4, 3), [0], [float("nan")], "must be finite and >= 0"),
    ((4, 4, 3), [0] * 17, [1.0] * 17, "step count 17"),
    ((0, 4, 3), [0], [1.0], "out of range"),
])
def test_color_jitter_refuses_bad_arguments(shape, steps, factors, message):

    with pytest.raises(MindplugError, match=message):
        _library.color_jitter(np.zeros(shape, np.uint8), steps, factors)


@SETTINGS
@given(st.integers(0, 5), st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3]), st.integers(1, 2),
       st.data())
def test_color_jitter_images_match_the_single_image_kernel(n, h, w, c, threads, data):
    """The batch call gives each image what the one-image call gives it with that image's own steps."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    batch = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    stride = int(rng.integers(0, 5))
    steps = rng.choice([0, 1, 2] if c == 3 else [0, 1], size=(n, stride)).astype(np.int32)
    factors = rng.uniform(0.0, 3.0, (n, stride)).astype(np.float32)
    counts = rng.integers(0, stride + 1, n).astype(np.int32)
    want = [_library.color_jitter(batch[i], steps[i, :counts[i]].tolist(), factors[i, :counts[i]].tolist())
            for i in range(n)]
    _library.color_jitter_images(batch, steps, factors, counts, threads)
    for i in range(n):
        np.testing.assert_array_equal(batch[i], want[i])


@pytest.mark.parametrize("shape, counts, steps, message", [
    ((2, 4, 4, 3), [1, 3], [[0, 0], [0, 0]], "more than the stride"),
    ((2, 4, 4, 1), [1, 1], [[0], [2]], "saturation needs a 3-channel image"),
    ((1, 4, 4, 3), [1], [[7]], "unknown step 7"),
    ((1, 4, 4, 2), [0], [[0]], "1 or 3 channels"),
])
def test_color_jitter_images_refuse_bad_arguments(shape, counts, steps, message):

    steps = np.array(steps, np.int32)
    with pytest.raises(MindplugError, match=message):
        _library.color_jitter_images(np.zeros(shape, np.uint8), steps, np.ones(steps.shape, np.float32),
                                     np.array(counts, np.int32))
    with pytest.raises(MindplugError, match="uint8 NHWC"):
        _library.color_jitter_images(np.zeros((2, 4, 4, 3), np.float32), steps[:1], np.ones((1, 1)), np.ones(1))


# ---------------------------------------------------------------- batch normalisation (data pipeline)
@SETTINGS
@given(st.integers(0, 4), st.integers(1, 11), st.integers(1, 11), st.integers(1, 5), st.booleans(),
       st.integers(1, 2), st.data())
def test_normalize_images_match_numpy(n, h, w, c, chw, threads, data):
    """(x - mean) / std in float32, as MindSpore's Normalize forms it, in NHWC or NCHW."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    batch = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    mean = rng.uniform(0, 255, c).astype(np.float32)
    std = rng.uniform(0.5, 80, c).astype(np.float32)
    want = (batch.astype(np.float32) - mean) / std
    out = _library.normalize_images(batch, mean.tolist(), std.tolist(), chw, threads)
    np.testing.assert_array_equal(out, want.transpose(0, 3, 1, 2) if chw else want)


def test_normalize_images_decline_and_refuse():

    assert _library.normalize_images(np.zeros((1, 2, 2, 3), np.float32), [0.0] * 3, [1.0] * 3, True) is None
    assert _library.normalize_images(np.zeros((1, 2, 2, 3), np.uint8), [0.0], [1.0], True) is None  # 1 != 3
    with pytest.raises(MindplugError, match="std must be non-zero"):
        _library.normalize_images(np.zeros((1, 2, 2, 1), np.uint8), [0.0], [0.0], True)


# ---------------------------------------------------------------- batch flips (data pipeline)
@SETTINGS
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.sampled_from([0, 1]),
       st.sampled_from(["float32", "uint8", "float64"]), st.booleans(), st.data())
def test_flip_images_matches_numpy(n, channels, rows, cols, axis, dtype, channels_last, data):
    """NCHW and NHWC batches of any item size, rows or columns: the images chosen mirrored, the rest kept."""
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    shape = (n, rows, cols, channels) if channels_last else (n, channels, rows, cols)
    batch = (rng.standard_normal(shape) * 50 + 100).astype(dtype)
    chosen = np.flatnonzero(rng.random(n) < 0.5)
    spatial = (1, 2) if channels_last else (2, 3)
    want = batch.copy()
    want[chosen] = np.flip(want[chosen], axis=spatial[axis])
    assert _library.flip_images(batch, chosen, spatial[axis], channels_last)
    np.testing.assert_array_equal(batch, want)


def test_flip_images_leaves_other_layouts_to_numpy_and_refuses_bad_indices():

    assert not _library.flip_images(np.zeros((2, 4, 4, 3), np.float32), np.array([0]), 1)    # not rows/cols
    assert not _library.flip_images(np.zeros((2, 4, 4, 3), np.uint8), np.array([0]), 3, True)  # the channel axis
    assert not _library.flip_images(np.zeros((2, 3, 4, 8), np.float32)[..., ::2], np.array([0]), 3)  # strided
    with pytest.raises(MindplugError, match="outside the batch"):
        _library.flip_images(np.zeros((2, 3, 4, 4), np.float32), np.array([2]), 3)


# ---------------------------------------------------------------- JPEG crop decode (data pipeline)
def crop_box_ref(width, height, draws, scale, ratio):
    """MindSpore's RandomResizedCrop box (x, y, w, h) from per-attempt numbers (area, log ratio, x, y)."""
    import math

    area, lo, hi = width * height, math.log(ratio[0]), math.log(ratio[1])
    for u in draws:
        r = math.exp(lo + u[1] * (hi - lo))
        cw = round(math.sqrt(area * (scale[0] + u[0] * (scale[1] - scale[0])) * r))
        ch = round(cw / r)
        if 1 <= cw <= width and 1 <= ch <= height:
            x, y = min(width - cw, int(u[2] * (width - cw + 1))), min(height - ch, int(u[3] * (height - ch + 1)))
            return x, y, cw, ch
    w, h = width, height
    if width / height < ratio[0]:
        h = min(max(round(width / ratio[0]), 1), height)
    elif width / height > ratio[1]:
        w = min(max(round(height * ratio[1]), 1), width)
    return (width - w) // 2, (height - h) // 2, w, h


def bilinear_crop_ref(image, box, size):
    """OpenCV's INTER_LINEAR resize of the (possibly fractional) box of ``image`` to ``size`` (h, w): pixel
    centres, clamped to the box's pixels, in float64."""
    x, y, w, h = box
    rows, cols = image.shape[:2]

    def taps(count, origin, extent, lo, hi):
        pos = origin + (np.arange(count) + 0.5) * extent / count - 0.5
        k = np.floor(pos).astype(int)
        frac = pos - k
        frac[k < lo], k[k < lo] = 0, lo
        frac[k >= hi], k[k >= hi] = 0, hi
        return k, np.minimum(k + 1, hi), frac

    xa, xb, xw = taps(size[1], x, w, int(np.floor(x)), min(cols, int(np.ceil(x + w))) - 1)
    ya, yb, yw = taps(size[0], y, h, int(np.floor(y)), min(rows, int(np.ceil(y + h))) - 1)
    img = image.astype(np.float64)
    top = img[ya][:, xa] * (1 - xw[None, :, None]) + img[ya][:, xb] * xw[None, :, None]
    bottom = img[yb][:, xa] * (1 - xw[None, :, None]) + img[yb][:, xb] * xw[None, :, None]
    return top * (1 - yw[:, None, None]) + bottom * yw[:, None, None]


def smooth_rgb(rng, height, width):
    from PIL import Image

    base = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)


def jpeg_bytes(image, **options):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", **options)
    return buffer.getvalue()


needs_jpeg = pytest.mark.skipif(not _library.jpeg_crop_available(), reason="built without libjpeg-turbo")


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 10), st.integers(1, 30), st.integers(1, 30),
       st.data())
def test_crop_resize_rgb_matches_numpy(height, width, attempts, out_h, out_w, data):
    """The box MindSpore's RandomResizedCrop draws and OpenCV's bilinear resize of it, to the rounding."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    lo = float(rng.uniform(0.05, 1.0))
    scale = (lo, float(rng.uniform(lo, 1.0)))
    low_ratio = float(rng.uniform(0.3, 1.5))
    ratio = (low_ratio, low_ratio * float(rng.uniform(1.0, 3.0)))
    draws = rng.random((attempts, 4))
    out = _library.crop_resize_rgb(image, draws, scale, ratio, (out_h, out_w))
    want = bilinear_crop_ref(image, crop_box_ref(width, height, draws, scale, ratio), (out_h, out_w))
    assert out.shape == (out_h, out_w, 3)
    assert np.abs(out - want).max() <= 0.51


@needs_jpeg
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(8, 160), st.integers(8, 160), st.sampled_from(["4:4:4", "4:2:2", "4:2:0", "grey"]),
       st.integers(70, 95), st.booleans(), st.integers(2, 48), st.integers(2, 48), st.integers(1, 3), st.data())
def test_jpeg_crops_match_pillows_decode_and_numpy(height, width, layout, quality, progressive, out_h, out_w, n,
                                                   data):
    """Each crop is Pillow's decode of the file (its draft at the DCT scale the decoder picks for a crop at
    least twice the output) cut to the drawn box and resized bilinearly, to the rounding; baseline and
    progressive, every chroma layout."""
    import io

    from PIL import Image

    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    scale = (0.08, 1.0) if rng.random() < 0.7 else (0.9, 1.0)
    ratio = (3 / 4, 4 / 3)
    files, images = [], []
    for _ in range(n):
        image = smooth_rgb(rng, height, width)
        if layout == "grey":
            encoded = jpeg_bytes(image[:, :, 0], quality=quality, progressive=progressive)
        else:
            encoded = jpeg_bytes(image, quality=quality, progressive=progressive,
                                 subsampling={"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}[layout])
        files.append(np.frombuffer(encoded, np.uint8))
    draws = rng.random((n, 10, 4))
    out, status = _library.decode_crop_jpegs(files, draws, scale, ratio, (out_h, out_w),
                                             threads=int(rng.integers(1, 3)))
    assert status.tolist() == [0] * n
    for i, encoded in enumerate(files):
        x, y, w, h = crop_box_ref(width, height, draws[i], scale, ratio)
        eighths = 1
        while eighths < 8 and (w * eighths < 8 * out_w or h * eighths < 8 * out_h):
            eighths *= 2
        with Image.open(io.BytesIO(encoded.tobytes())) as decoded:
            if eighths < 8:
                decoded.draft(decoded.mode, (max(1, width * eighths // 8), max(1, height * eighths // 8)))
            pixels = np.asarray(decoded.convert("RGB"))
        assert pixels.shape[:2] == (-(-height * eighths // 8), -(-width * eighths // 8))
        s = eighths / 8
        want = bilinear_crop_ref(pixels, (x * s, y * s, w * s, h * s), (out_h, out_w))
        difference = np.abs(out[i] - want)
        assert difference.max() <= 1.0, (i, (x, y, w, h), eighths)
        if layout == "grey":
            assert (out[i] == out[i][:, :, :1]).all()


@needs_jpeg
def test_jpeg_crops_report_files_they_do_not_decode():
    """CMYK is left to the caller (status 1); damaged and truncated files are refused (2); the rest decode."""
    from PIL import Image

    rng = np.random.default_rng(4)
    image = smooth_rgb(rng, 48, 64)
    good = jpeg_bytes(image, quality=90)
    import io

    cmyk = io.BytesIO()
    Image.fromarray(image).convert("CMYK").save(cmyk, "JPEG")
    damaged = bytearray(good)
    start = good.rindex(b"\xff\xda") + 20
    for k in range(start, len(good) - 2, 7):
        damaged[k] = 0xFF if damaged[k] != 0xFF else 0x00
    files = [good, cmyk.getvalue(), bytes(damaged), good[: len(good) // 2], b"\xff\xd8\xff\xe0" + bytes(64), good]
    draws = np.zeros((len(files), 1, 4))  # the whole image (area 1, ratio 3/4 .. 4/3): every row is needed
    out, status = _library.decode_crop_jpegs([np.frombuffer(f, np.uint8) for f in files], draws, (1.0, 1.0),
                                             (0.75, 4 / 3), (24, 32))
    assert status.tolist() == [0, 1, 2, 2, 2, 0]
    np.testing.assert_array_equal(out[0], out[5])


@needs_jpeg
def test_jpeg_crops_refuse_bad_arguments():

    good = np.frombuffer(jpeg_bytes(smooth_rgb(np.random.default_rng(0), 16, 16)), np.uint8)
    with pytest.raises(MindplugError, match=r"must be \(1, attempts, 4\)"):
        _library.decode_crop_jpegs([good], np.zeros((1, 4)), (0.08, 1.0), (0.75, 1.33), (8, 8))
    with pytest.raises(MindplugError, match="out of range"):
        _library.decode_crop_jpegs([good], np.zeros((1, 1, 4)), (0.08, 1.0), (0.75, 1.33), (0, 8))
    with pytest.raises(MindplugError, match="low <= high"):
        _library.decode_crop_jpegs([good], np.zeros((1, 1, 4)), (0.5, 0.1), (0.75, 1.33), (8, 8))
    with pytest.raises(MindplugError, match="not a JPEG file"):
        _library.decode_crop_jpegs([good[:2]], np.zeros((1, 1, 4)), (0.08, 1.0), (0.75, 1.33), (8, 8))
    with pytest.raises(MindplugError, match="HWC x 3"):
        _library.crop_resize_rgb(np.zeros((4, 4), np.uint8), np.zeros((1, 4)), (0.08, 1.0), (0.75, 1.33), (8, 8))
    out, status = _library.decode_crop_jpegs([], np.zeros((0, 1, 4)), (0.08, 1.0), (0.75, 1.33), (8, 8))
    assert out.shape == (0, 8, 8, 3) and status.shape == (0,)
