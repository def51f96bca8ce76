// Data movement between NCHW tensors and the GEMM operands. A "batch of planes" is addressed by a
// channel stride cs and an image stride bs, so the same code reads NCHW tensors (cs = H*W,
// bs = C*H*W) and chunk buffers laid out [C][nb][H*W] (cs = nb*H*W, bs = H*W).
#pragma once
#include <cstdint>
#include <vector>

#include "common.h"

namespace mp {

// col[(c*KH + kh)*KW + kw][b*OH*OW + oh*OW + ow] = src(c, b)[ih, iw], zero outside the image.
void im2col(const float *src, int64_t C, int64_t nb, int64_t cs, int64_t bs, const Geo &g, float *col);
// dst(c, b) += the col entries that im2col would have read from it.
void col2im_add(const float *col, int64_t C, int64_t nb, float *dst, int64_t cs, int64_t bs, const Geo &g);

// dst[c][b*HW + p] = src(c, b)[p], times (mask(c, b)[p] > 0) when mask is given.
void gather(const float *src, const float *mask, int64_t C, int64_t nb, int64_t cs, int64_t bs, int64_t HW,
            float *dst);
// dst(c, b)[p] = relu? max(src[c][b*HW + p], 0) : src[...].
void scatter(const float *src, int64_t C, int64_t nb, int64_t HW, bool relu, float *dst, int64_t cs, int64_t bs);

// Max pooling of one plane (padding never wins), separable: row maxima, then column windows.
void maxpool_plane(const float *src, const Geo &g, float *dst);
// Its gradient given the forward output y: each dy goes to the first element of its window (row-major)
// that equals y, i.e. the first maximum.
void maxpool_plane_bwd_add(const float *dy, const float *src, const float *y, const Geo &g, float *dx);

// Max pooling of one plane with the flat index of each window's first maximum (row-major), in one
// separable pass: each input row's window maxima are found once and shared by the output rows.
void maxpool_plane_argmax(const float *src, const Geo &g, float *dst, int32_t *arg);
// dx[arg[i]] += dy[i] for the outputs of one plane.
void scatter_argmax_add(const float *dy, const int32_t *arg, int64_t n, float *dx);

// Small planes (GoogLeNet at 32-48 px: 16x16 down to 1x1): every output's window as a list of flat input
// indices (row-major, padding dropped), built once per call, so a plane costs only its compares; the
// separable per-plane passes above pay a fixed setup per plane that dominates at 4x4 and below.
struct PoolWindows {
  std::vector<int32_t> start, idx;  // output o reads idx[start[o] .. start[o+1])
  explicit PoolWindows(const Geo &g);
};
// Measured crossovers here: the table wins the forward up to 16x16 and the backward up to 32x32.
inline bool small_plane(const Geo &g, bool backward = false) { return g.H * g.W <= (backward ? 1024 : 256); }
// `planes` contiguous planes of H*W -> OH*OW.
void maxpool_planes_small(const float *src, int64_t planes, const Geo &g, const PoolWindows &t, float *dst);
void maxpool_planes_small_argmax(const float *src, int64_t planes, const Geo &g, const PoolWindows &t, float *dst,
                                 int32_t *arg);  // arg: flat index within the plane of the first maximum
// dx (zeroed here) gets each dy at the first element of its window equal to y.
void maxpool_planes_small_bwd(const float *dy, const float *src, const float *y, int64_t planes, const Geo &g,
                              const PoolWindows &t, float *dx);

void relu_inplace(float *x, int64_t n);
void mask_inplace(float *g, const float *y, int64_t n);  // g *= (y > 0)

}  // namespace mp
