// The geometry and options of one general convolution (any kernel, stride, dilation, padding, groups,
// bias, folded BatchNorm, fused activation), parsed from the int64 cfg tensor of the Conv* entry points.
//
// cfg (16 entries): [stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w,
//                    groups, act, has_bias, fold_bn, same, algo, bits(act_alpha), bits(bn_eps)]
// same = 1 pads like MindSpore's pad_mode="same" for the actual input size (explicit pads ignored);
// algo: 0 auto, 1 im2col + GEMM, 2 Winograd F(4x4,3x3), 3 Winograd F(2x2,3x3), 4 direct depthwise.
// Inputs after cfg: x, w[, bias][, gamma, beta, mean, var]; with fold_bn the kernels use
//   w' = w * s[o], b' = beta + (bias - mean) * s, s = gamma / sqrt(var + eps)      (BatchNorm in inference).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "act.h"
#include "common.h"

namespace mp {

constexpr int64_t kConvCfg = 16;
enum ConvAlgo : int64_t { kAlgoAuto = 0, kAlgoGemm = 1, kAlgoWino4 = 2, kAlgoWino2 = 3, kAlgoDepthwise = 4 };

struct ConvSpec {
  int64_t N = 0, C = 0, H = 0, W = 0, O = 0, G = 1, Cg = 0, Og = 0, K = 0;  // K = Cg*KH*KW (GEMM depth)
  Geo g{};
  int64_t act = kNone, algo = kAlgoAuto;
  float alpha = 0.f;
  double eps = 0.0;
  bool has_bias = false, fold = false, same = false;
  int64_t extra_inputs() const { return (has_bias ? 1 : 0) + (fold ? 4 : 0); }
  int64_t OHW() const { return g.OH * g.OW; }
  int64_t HW() const { return g.H * g.W; }
  bool depthwise() const { return G == C && Og == 1 && Cg == 1; }
};

// Reads cfg (the first input) and the x / w shapes into s; false (with the message recorded) when any
// entry is out of range or the shapes disagree. The caller has bound x[N,C,H,W] and w[O,C/G,KH,KW].
bool read_conv_spec(const char *fn, const Arg &cfg, const Arg &x, const Arg &w, ConvSpec &s);

// Only cfg first: how many inputs follow x, w (bias, BatchNorm) so the caller can bind them.
bool peek_conv_flags(const char *fn, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                     bool &has_bias, bool &fold);

// The weights and bias the kernels use: w itself, or w * s with BatchNorm folded in; b (or null).
struct ConvWeights {
  const float *w = nullptr, *b = nullptr;
  std::vector<float> wbuf, bbuf, scale;  // scale = s (fold only)
  // extra = the inputs after w (bias, then gamma, beta, mean, var).
  ConvWeights(const ConvSpec &s, const float *w_in, const Arg *extra);
};

// The conv algorithms: y = act(conv(x, wp) + bp) with wp, bp from ConvWeights.
void conv_forward_gemm(const ConvSpec &s, const float *x, const float *wp, const float *bp, float *y);
void conv_forward_depthwise(const ConvSpec &s, const float *x, const float *wp, const float *bp, float *y);
// dx from the output gradient dy masked by the activation's derivative (read from y).
void conv_backward_data_gemm(const ConvSpec &s, const float *dy, const float *y, const float *wp, float *dx);
void conv_backward_data_depthwise(const ConvSpec &s, const float *dy, const float *y, const float *wp, float *dx);
// dw' (the gradient of the weights the kernel used, [O, Cg, KH, KW]) and db' (sum of the masked gradient, [O]).
void conv_backward_filter_gemm(const ConvSpec &s, const float *dy, const float *y, const float *x, float *dw,
                               float *db);
void conv_backward_filter_depthwise(const ConvSpec &s, const float *dy, const float *y, const float *x, float *dw,
                                    float *db);

// db[o] = the sum of the masked output gradient of channel o (the bias gradient).
void masked_channel_sums(const ConvSpec &s, const float *dy, const float *y, float *db);

// Winograd F(m x m, 3 x 3) for stride-1, undilated, ungrouped 3x3 convolutions (winograd.cc).
bool winograd_applicable(const ConvSpec &s);
// Which tile size the cost model picks for this layer (0: im2col + GEMM is cheaper).
int winograd_choice(const ConvSpec &s, bool backward_data);
void conv_forward_winograd(const ConvSpec &s, int m, const float *x, const float *wp, const float *bp, float *y);
// Backward data as a forward Winograd convolution of the masked dy with the flipped, transposed filter.
bool winograd_backward_applicable(const ConvSpec &s);
void conv_backward_data_winograd(const ConvSpec &s, int m, const float *dy, const float *y, const float *wp,
                                 float *dx);
// The weight gradient dw' [O, C, 3, 3] as Winograd's dual: G^T (sum over tiles of (A dy A^T) (B^T x B)) G.
void conv_backward_filter_winograd(const ConvSpec &s, int m, const float *x, const float *dy, const float *y,
                                   float *dw);
// Which tile size the cost model picks for the weight gradient (0: im2col + GEMM).
int winograd_filter_choice(const ConvSpec &s);

}  // namespace mp
