// The fused Inception block (stride 1, "same" padding, ReLU after every conv):
//   branch 1: 1x1            branch 2: 1x1 -> KxK       branch 3: 1x1 -> KxK      branch 4: maxpool 3x3/1 -> 1x1
// The three 1x1 convs that read the block input run as ONE GEMM on the concatenated weights; every
// branch writes its ReLU epilogue straight into its channel slice of the block output (no concat).
// The backward recomputes the two reduced tensors (cheap 1x1 GEMM rows) instead of storing them.
#include <algorithm>
#include <cstring>
#include <vector>

#include "chunks.h"
#include "common.h"
#include "gemm.h"
#include "planes.h"

namespace {

constexpr const char *kFwd = "InceptionForward";
constexpr const char *kBwd = "InceptionBackward";

struct Block {
  int64_t N, C, H, W, HW, c1, c3r, c3, c5r, c5, c4, Ct, R, k2, k3;
  mp::Geo g2, g3, gp;
};

// ws = {w1, w2a, w2b, w3a, w3b, w4}
bool read_block(const char *fn, const mp::Arg &x, const mp::Arg *ws, Block &b) {
  b.N = x.dim(0), b.C = x.dim(1), b.H = x.dim(2), b.W = x.dim(3), b.HW = b.H * b.W;
  b.c1 = ws[0].dim(0), b.c3r = ws[1].dim(0), b.c3 = ws[2].dim(0), b.c5r = ws[3].dim(0), b.c5 = ws[4].dim(0);
  b.c4 = ws[5].dim(0);
  b.k2 = ws[2].dim(2), b.k3 = ws[4].dim(2);
  if (b.k2 % 2 == 0 || b.k3 % 2 == 0) {
    mp::fail(fn, "the branch kernels must be odd for 'same' padding, got %lld and %lld",
             static_cast<long long>(b.k2), static_cast<long long>(b.k3));
    return false;
  }
  if (!mp::expect_shape(fn, ws[0], {b.c1, b.C, 1, 1}) || !mp::expect_shape(fn, ws[1], {b.c3r, b.C, 1, 1}) ||
      !mp::expect_shape(fn, ws[2], {b.c3, b.c3r, b.k2, b.k2}) || !mp::expect_shape(fn, ws[3], {b.c5r, b.C, 1, 1}) ||
      !mp::expect_shape(fn, ws[4], {b.c5, b.c5r, b.k3, b.k3}) || !mp::expect_shape(fn, ws[5], {b.c4, b.C, 1, 1}))
    return false;
  b.Ct = b.c1 + b.c3 + b.c5 + b.c4;
  b.R = b.c1 + b.c3r + b.c5r;
  const int64_t p2 = (b.k2 - 1) / 2, p3 = (b.k3 - 1) / 2;
  b.g2 = mp::Geo::make(b.H, b.W, b.k2, b.k2, 1, 1, p2, p2, p2, p2);
  b.g3 = mp::Geo::make(b.H, b.W, b.k3, b.k3, 1, 1, p3, p3, p3, p3);
  b.gp = mp::Geo::make(b.H, b.W, 3, 3, 1, 1, 1, 1, 1, 1);
  return true;
}

// [w1; w2a; w3a] as one [R, C] matrix: the single GEMM of the three 1x1 convs.
std::vector<float> concat_1x1(const Block &b, const mp::Arg *ws) {
  std::vector<float> w(static_cast<size_t>(b.R * b.C));
  std::memcpy(w.data(), ws[0].f, sizeof(float) * b.c1 * b.C);
  std::memcpy(w.data() + b.c1 * b.C, ws[1].f, sizeof(float) * b.c3r * b.C);
  std::memcpy(w.data() + (b.c1 + b.c3r) * b.C, ws[3].f, sizeof(float) * b.c5r * b.C);
  return w;
}

// The chunk's input as [C][nb*HW]: the NCHW image itself when the chunk is one image.
const float *chunk_input(const Block &b, const float *x, int64_t n0, int64_t nb) {
  const float *xn = x + n0 * b.C * b.HW;
  if (nb == 1) return xn;
  float *buf = mp::scratch(0, b.C * nb * b.HW);
  mp::gather(xn, nullptr, b.C, nb, b.HW, b.C * b.HW, b.HW, buf);
  return buf;
}

}  // namespace

// inputs x[N,C,H,W], w1, w2a, w2b, w3a, w3b, w4 (OIHW); output y[N, c1+c3+c5+c4, H, W].
MP_AOT_ENTRY(InceptionForward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kFwd, nparam, params, ndims, shapes, dtypes,
                {"x:f4", "w1:f4", "w2a:f4", "w2b:f4", "w3a:f4", "w3b:f4", "w4:f4", "y:f4"}, a))
    return 1;
  Block b;
  if (!read_block(kFwd, a[0], &a[1], b)) return 1;
  const mp::Arg &x = a[0], &y = a[7];
  if (!mp::expect_shape(kFwd, y, {b.N, b.Ct, b.H, b.W})) return 1;
  const std::vector<float> wcat = concat_1x1(b, &a[1]);
  const float *w2b = a[3].f, *w3b = a[5].f, *w4 = a[6].f;
  const int64_t K2 = b.c3r * b.k2 * b.k2, K3 = b.c5r * b.k3 * b.k3, HW = b.HW;
  mp::for_chunks(b.N, HW, [&](int64_t, int64_t n0, int64_t nb) {
    const int64_t cols = nb * HW;
    float *yn = y.f + n0 * b.Ct * HW;
    const int64_t ycs = HW, ybs = b.Ct * HW;
    const float *xc = chunk_input(b, x.f, n0, nb);
    float *z = mp::scratch(1, b.R * cols);
    mp::sgemm(false, false, b.R, cols, b.C, 1.f, wcat.data(), b.C, xc, cols, 0.f, z, cols);
    mp::scatter(z, b.c1, nb, HW, true, yn, ycs, ybs);
    float *t2 = z + b.c1 * cols, *t3 = t2 + b.c3r * cols;
    mp::relu_inplace(t2, (b.c3r + b.c5r) * cols);
    float *col = mp::scratch(2, std::max(K2, K3) * cols);
    float *out = mp::scratch(3, std::max({b.c3, b.c5, b.c4}) * cols);
    mp::im2col(t2, b.c3r, nb, cols, HW, b.g2, col);
    mp::sgemm(false, false, b.c3, cols, K2, 1.f, w2b, K2, col, cols, 0.f, out, cols);
    mp::scatter(out, b.c3, nb, HW, true, yn + b.c1 * HW, ycs, ybs);
    mp::im2col(t3, b.c5r, nb, cols, HW, b.g3, col);
    mp::sgemm(false, false, b.c5, cols, K3, 1.f, w3b, K3, col, cols, 0.f, out, cols);
    mp::scatter(out, b.c5, nb, HW, true, yn + (b.c1 + b.c3) * HW, ycs, ybs);
    float *p = mp::scratch(4, b.C * cols);
    mp::maxpool_planes(xc, b.C * nb, b.gp, p);
    mp::sgemm(false, false, b.c4, cols, b.C, 1.f, w4, b.C, p, cols, 0.f, out, cols);
    mp::scatter(out, b.c4, nb, HW, true, yn + (b.c1 + b.c3 + b.c5) * HW, ycs, ybs);
  });
  return 0;
}

// inputs dy, y (forward output), x, w1, w2a, w2b, w3a, w3b, w4; outputs dx, dw1, dw2a, dw2b, dw3a, dw3b, dw4.
MP_AOT_ENTRY(InceptionBackward) {
  std::vector<mp::Arg> a;
  if (!mp::bind(kBwd, nparam, params, ndims, shapes, dtypes,
                {"dy:f4", "y:f4", "x:f4", "w1:f4", "w2a:f4", "w2b:f4", "w3a:f4", "w3b:f4", "w4:f4", "dx:f4",
                 "dw1:f4", "dw2a:f4", "dw2b:f4", "dw3a:f4", "dw3b:f4", "dw4:f4"},
                a))
    return 1;
  Block b;
  if (!read_block(kBwd, a[2], &a[3], b)) return 1;
  const mp::Arg &dy = a[0], &y = a[1], &x = a[2], &dx = a[9];
  if (!mp::expect_shape(kBwd, dy, {b.N, b.Ct, b.H, b.W}) || !mp::expect_shape(kBwd, y, {b.N, b.Ct, b.H, b.W}) ||
      !mp::expect_shape(kBwd, dx, {b.N, b.C, b.H, b.W}))
    return 1;
  for (int k = 0; k < 6; ++k)
    if (!mp::expect_shape(kBwd, a[10 + k], {a[3 + k].dim(0), a[3 + k].dim(1), a[3 + k].dim(2), a[3 + k].dim(3)}))
      return 1;
  const std::vector<float> wcat = concat_1x1(b, &a[3]);
  const float *w2b = a[5].f, *w3b = a[7].f, *w4 = a[8].f;
  const int64_t K2 = b.c3r * b.k2 * b.k2, K3 = b.c5r * b.k3 * b.k3, HW = b.HW, C = b.C;
  // accumulator layout: dWcat [R*C] | dw2b [c3*K2] | dw3b [c5*K3] | dw4 [c4*C]
  const int64_t o2b = b.R * C, o3b = o2b + b.c3 * K2, o4 = o3b + b.c5 * K3, total = o4 + b.c4 * C;
  const mp::ChunkPlan plan(b.N, HW);
  mp::GradAccum acc(total, plan.chunks);
  plan.run([&](int64_t ci, int64_t n0, int64_t nb) {
    const int64_t cols = nb * HW;
    float *dW = acc.of(ci);  // every segment below is written exactly once per chunk (beta = 0)
    float *G = mp::scratch(5, b.Ct * cols);
    mp::gather(dy.f + n0 * b.Ct * HW, y.f + n0 * b.Ct * HW, b.Ct, nb, HW, b.Ct * HW, HW, G);
    const float *G2 = G + b.c1 * cols, *G3 = G2 + b.c3 * cols, *G4 = G3 + b.c5 * cols;
    const float *xc = chunk_input(b, x.f, n0, nb);
    // recompute the reduced tensors t2, t3 (post-ReLU)
    const int64_t r23 = b.c3r + b.c5r;
    float *t = mp::scratch(1, r23 * cols);
    mp::sgemm(false, false, r23, cols, C, 1.f, wcat.data() + b.c1 * C, C, xc, cols, 0.f, t, cols);
    mp::relu_inplace(t, r23 * cols);
    float *t2 = t, *t3 = t + b.c3r * cols;
    float *dz = mp::scratch(6, b.R * cols);
    std::memcpy(dz, G, sizeof(float) * b.c1 * cols);
    float *dt2 = dz + b.c1 * cols, *dt3 = dt2 + b.c3r * cols;
    std::fill(dt2, dt2 + r23 * cols, 0.f);
    float *col = mp::scratch(2, std::max(K2, K3) * cols);
    // branch 2 (KxK on t2)
    mp::im2col(t2, b.c3r, nb, cols, HW, b.g2, col);
    mp::sgemm(false, true, b.c3, K2, cols, 1.f, G2, cols, col, cols, 0.f, dW + o2b, K2);
    mp::sgemm(true, false, K2, cols, b.c3, 1.f, w2b, K2, G2, cols, 0.f, col, cols);
    mp::col2im_add(col, b.c3r, nb, dt2, cols, HW, b.g2);
    // branch 3
    mp::im2col(t3, b.c5r, nb, cols, HW, b.g3, col);
    mp::sgemm(false, true, b.c5, K3, cols, 1.f, G3, cols, col, cols, 0.f, dW + o3b, K3);
    mp::sgemm(true, false, K3, cols, b.c5, 1.f, w3b, K3, G3, cols, 0.f, col, cols);
    mp::col2im_add(col, b.c5r, nb, dt3, cols, HW, b.g3);
    mp::mask_inplace(dt2, t, r23 * cols);
    // branch 4 (maxpool -> 1x1)
    // the pooled input and each window's first maximum, in one pass
    float *p = mp::scratch(4, C * cols);
    static thread_local std::vector<int32_t> arg_buf;
    if (static_cast<int64_t>(arg_buf.size()) < C * cols) arg_buf.resize(static_cast<size_t>(C * cols));
    int32_t *arg = arg_buf.data();
    mp::maxpool_planes_argmax(xc, C * nb, b.gp, p, arg);
    mp::sgemm(false, true, b.c4, C, cols, 1.f, G4, cols, p, cols, 0.f, dW + o4, C);
    float *dp = mp::scratch(3, C * cols);
    mp::sgemm(true, false, C, cols, b.c4, 1.f, w4, C, G4, cols, 0.f, dp, cols);
    float *dxn = dx.f + n0 * C * HW;
    float *dxc = nb == 1 ? dxn : mp::scratch(7, C * cols);
    std::fill(dxc, dxc + C * cols, 0.f);
    for (int64_t i = 0; i < C * nb; ++i) {
      const float *d = dp + i * HW;
      const int32_t *ai = arg + i * HW;
      float *o = dxc + i * HW;
      for (int64_t q = 0; q < HW; ++q) o[ai[q]] += d[q];  // arg >= 0: a stride-1 'same' window is never empty
    }
    // the fused 1x1 GEMM's gradients
    mp::sgemm(false, true, b.R, C, cols, 1.f, dz, cols, xc, cols, 0.f, dW, C);
    mp::sgemm(true, false, C, cols, b.R, 1.f, wcat.data(), C, dz, cols, 1.f, dxc, cols);
    if (nb != 1) mp::scatter(dxc, C, nb, HW, false, dxn, HW, C * HW);
  });
  acc.reduce_into(a[10].f, 0, b.c1 * C);
  acc.reduce_into(a[11].f, b.c1 * C, b.c3r * C);
  acc.reduce_into(a[13].f, (b.c1 + b.c3r) * C, b.c5r * C);
  acc.reduce_into(a[12].f, o2b, b.c3 * K2);
  acc.reduce_into(a[14].f, o3b, b.c5 * K3);
  acc.reduce_into(a[15].f, o4, b.c4 * C);
  return 0;
}
