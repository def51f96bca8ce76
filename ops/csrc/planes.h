// Data movement between NCHW tensors and the GEMM operands. A "batch of planes" is addressed by a
// channel stride cs and an image stride bs, so the same code reads NCHW tensors (cs = H*W,
// bs = C*H*W) and chunk buffers laid out [C][nb][H*W] (cs = nb*H*W, bs = H*W).
#pragma once
#include <cstdint>

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

// Undilated max pooling of `planes` contiguous planes of H*W -> OH*OW (padding never wins), by whichever
// of the paths in planes.cc is fastest for the geometry.
void maxpool_planes(const float *src, int64_t planes, const Geo &g, float *dst);
// The same with the flat index within the plane of each window's first maximum (row-major; -1 for a
// window without a pixel).
void maxpool_planes_argmax(const float *src, int64_t planes, const Geo &g, float *dst, int32_t *arg);
// dx (zeroed here) gets each dy at its window's first maximum; y is the forward output.
void maxpool_planes_bwd(const float *dy, const float *src, const float *y, int64_t planes, const Geo &g, float *dx);

void relu_inplace(float *x, int64_t n);
void mask_inplace(float *g, const float *y, int64_t n);  // g *= (y > 0)

}  // namespace mp
