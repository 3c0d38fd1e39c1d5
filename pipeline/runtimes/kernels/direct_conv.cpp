// k2t::conv2d_direct — a 2-D convolution (groups 1, dilation 1, fp32) computed directly in the channels-last
// layout with AVX-512 register blocking: each output block keeps RB pixels × NV vectors of 16 output channels
// in registers while it runs over the kernel window and the input channels, then adds the bias and, if asked,
// applies ReLU. Built for the batch-1 model of model_aoti.pt2 (pipeline/runtimes/direct_conv.py), where
// oneDNN's per-call set-up and inductor's im2col + GEMM template leave a one-image inference at about half
// ONNX Runtime's speed (README, "Speed").
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#ifdef __AVX512F__
#include <immintrin.h>

namespace {

struct Geometry {
  int64_t hp, wp, cin, cout_padded, cout, kh, kw, stride, ho, wo;
};

// One block: RB consecutive output pixels of row `oh`, starting at column `ow`, output channels [c0, c0 + 16·NV).
template <int NV, int RB>
inline void block(const float* in, const float* w, const float* bias, const float* residual, float* out,
                  const Geometry& g, int64_t oh, int64_t ow, int64_t c0, bool relu, __mmask16 last_mask) {
  __m512 acc[RB][NV];
  for (int v = 0; v < NV; ++v) {
    const __m512 b = _mm512_loadu_ps(bias + c0 + 16 * v);
    for (int p = 0; p < RB; ++p) acc[p][v] = b;
  }
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < g.kw; ++j) {
      const float* row = in + ((oh * g.stride + i) * g.wp + ow * g.stride + j) * g.cin;
      const float* wk = w + (i * g.kw + j) * g.cin * g.cout_padded + c0;
      for (int64_t ci = 0; ci < g.cin; ++ci) {
        __m512 wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + ci * g.cout_padded + 16 * v);
        for (int p = 0; p < RB; ++p) {
          const __m512 x = _mm512_set1_ps(row[p * g.stride * g.cin + ci]);
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(x, wv[v], acc[p][v]);
        }
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  const bool ends = c0 + 16 * NV >= g.cout_padded;  // this block holds the last (maybe partial) vector
  for (int p = 0; p < RB; ++p) {
    const int64_t at = ((oh * g.wo) + ow + p) * g.cout + c0;
    for (int v = 0; v < NV; ++v) {
      const bool partial = ends && v == NV - 1;
      __m512 r = acc[p][v];
      if (residual) {
        r = _mm512_add_ps(r, partial ? _mm512_maskz_loadu_ps(last_mask, residual + at + 16 * v)
                                     : _mm512_loadu_ps(residual + at + 16 * v));
      }
      if (relu) r = _mm512_max_ps(r, zero);
      if (partial) _mm512_mask_storeu_ps(out + at + 16 * v, last_mask, r);
      else _mm512_storeu_ps(out + at + 16 * v, r);
    }
  }
}

// Output row `oh`, channels [c0, c0 + 16·NV): blocks of RB pixels, the rest one pixel at a time.
// Blocks of RB pixels, then of RB/2, RB/4 ... down to one, so a short row still runs in wide blocks.
template <int NV, int RB>
inline void row(const float* in, const float* w, const float* bias, const float* residual, float* out,
                const Geometry& g, int64_t oh, int64_t c0, bool relu, __mmask16 last_mask, int64_t ow = 0) {
  for (; ow + RB <= g.wo; ow += RB) block<NV, RB>(in, w, bias, residual, out, g, oh, ow, c0, relu, last_mask);
  if constexpr (RB > 1) {
    if (ow < g.wo) row<NV, RB / 2>(in, w, bias, residual, out, g, oh, c0, relu, last_mask, ow);
  }
}

// Register blocking per output-channel width: NV·RB accumulators + NV weights within the 32 registers.
inline void row_any(const float* in, const float* w, const float* bias, const float* residual, float* out,
                    const Geometry& g, int64_t oh, bool relu, __mmask16 last_mask) {
  for (int64_t c0 = 0; c0 < g.cout_padded; c0 += 64) {
    switch (std::min<int64_t>(4, (g.cout_padded - c0) / 16)) {
      case 1: row<1, 16>(in, w, bias, residual, out, g, oh, c0, relu, last_mask); break;
      case 2: row<2, 8>(in, w, bias, residual, out, g, oh, c0, relu, last_mask); break;
      case 3: row<3, 6>(in, w, bias, residual, out, g, oh, c0, relu, last_mask); break;
      default: row<4, 4>(in, w, bias, residual, out, g, oh, c0, relu, last_mask); break;
    }
  }
}

}  // namespace
#endif

// x (N, Cin, H, W) in any layout; packed (kh, kw, Cin, Cout rounded up to 16) and bias (Cout rounded up) from
// pipeline/runtimes/direct_conv.py's `pack`; returns (N, Cout, Ho, Wo) in the channels-last layout:
// conv + bias (+ residual, a tensor of the output's shape) (then ReLU where `relu`).
at::Tensor conv2d_direct(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias, int64_t out_channels,
                         at::IntArrayRef stride, at::IntArrayRef padding, bool relu,
                         const std::optional<at::Tensor>& residual) {
#ifdef __AVX512F__
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && packed.dim() == 4, "conv2d_direct: a 4-D float32 input");
  TORCH_CHECK(stride.size() == 2 && stride[0] == stride[1] && padding.size() == 2, "conv2d_direct: one stride for both axes");
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t kh = packed.size(0), kw = packed.size(1), cout_padded = packed.size(3);
  TORCH_CHECK(packed.size(2) == cin && bias.numel() == cout_padded && packed.is_contiguous() && bias.is_contiguous(),
              "conv2d_direct: weights packed for another input");
  const int64_t ph = padding[0], pw = padding[1], s = stride[0];
  const Geometry g{h + 2 * ph, w + 2 * pw, cin, cout_padded, out_channels, kh, kw, s,
                   (h + 2 * ph - kh) / s + 1, (w + 2 * pw - kw) / s + 1};
  // The input channels-last with its zero border, written here in one pass (ATen's permute, pad and
  // contiguous would be three calls, each a dispatch and an allocation, on tensors of a few kB).
  const float* in_ptr;
  at::Tensor staged;
  if (!ph && !pw && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    in_ptr = x.data_ptr<float>();
  } else {
    staged = at::empty({n, g.hp, g.wp, cin}, x.options());
    float* dst = staged.data_ptr<float>();
    const float* src = x.data_ptr<float>();
    const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
    for (int64_t image = 0; image < n; ++image)
      for (int64_t r = 0; r < g.hp; ++r) {
        float* line = dst + (image * g.hp + r) * g.wp * cin;
        const int64_t ih = r - ph;
        if (ih < 0 || ih >= h) { std::fill(line, line + g.wp * cin, 0.0f); continue; }
        std::fill(line, line + pw * cin, 0.0f);
        std::fill(line + (pw + w) * cin, line + g.wp * cin, 0.0f);
        float* px = line + pw * cin;
        const float* base = src + image * sn + ih * sh;
        if (sc == 1) {
          for (int64_t c = 0; c < w; ++c) std::copy(base + c * sw, base + c * sw + cin, px + c * cin);
        } else {
          for (int64_t c = 0; c < w; ++c)
            for (int64_t ci = 0; ci < cin; ++ci) px[c * cin + ci] = base[c * sw + ci * sc];
        }
      }
    in_ptr = dst;
  }
  at::Tensor out = at::empty({n, g.ho, g.wo, out_channels}, x.options());
  const float* w_ptr = packed.data_ptr<float>();
  const float* b_ptr = bias.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  at::Tensor added;  // the residual, channels-last like the output (a copy only where it is not already)
  if (residual.has_value()) {
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == n && residual->size(1) == out_channels &&
                residual->size(2) == g.ho && residual->size(3) == g.wo, "conv2d_direct: the residual's shape is not the output's");
    added = residual->contiguous(at::MemoryFormat::ChannelsLast);
  }
  const float* res_ptr = residual.has_value() ? added.data_ptr<float>() : nullptr;
  const int tail = static_cast<int>(out_channels - (cout_padded - 16));
  const __mmask16 last_mask = static_cast<__mmask16>((1u << tail) - 1u);
  at::parallel_for(0, n * g.ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / g.ho, oh = r % g.ho;
      const int64_t offset = image * g.ho * g.wo * out_channels;
      row_any(in_ptr + image * g.hp * g.wp * cin, w_ptr, b_ptr, res_ptr ? res_ptr + offset : nullptr, out_ptr + offset,
              g, oh, relu, last_mask);
    }
  });
  return out.permute({0, 3, 1, 2});
#else
  TORCH_CHECK(false, "conv2d_direct was built without AVX-512");
#endif
}

bool conv2d_direct_available() {
#ifdef __AVX512F__
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(k2t, m) {
  m.def("conv2d_direct(Tensor x, Tensor packed, Tensor bias, int out_channels, int[] stride, int[] padding, bool relu, Tensor? residual=None) -> Tensor");
  m.def("conv2d_direct_available() -> bool", &conv2d_direct_available);
}

TORCH_LIBRARY_IMPL(k2t, CPU, m) {
  m.impl("conv2d_direct", &conv2d_direct);
}
