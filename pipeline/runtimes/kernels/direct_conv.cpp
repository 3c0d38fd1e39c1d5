// k2t::conv2d_direct — a 2-D convolution (groups 1, dilation 1, fp32) computed directly in the channels-last
// layout with AVX-512 register blocking: each output block keeps RB pixels × NV vectors of 16 output channels
// in registers while it runs over the kernel window and the input channels, then adds the bias and, if asked,
// applies ReLU. Built for the batch-1 model of model_aoti.pt2 (pipeline/runtimes/direct_conv.py), where
// oneDNN's per-call set-up and inductor's im2col + GEMM template leave a one-image inference at about half
// ONNX Runtime's speed (docs/speed.md).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_torch/utils.h>

#include <algorithm>

#include <omp.h>

#ifdef __AVX512F__
#include <immintrin.h>

namespace {

// The input (h, w, cin) channels-last and unpadded: a window reaching past its edge (top and left padding,
// and the bottom and right beyond) reads nothing there — the zeros padding would have added.
struct Geometry {
  int64_t h, w, top, left, cin, cout_padded, cout, kh, kw, stride, ho, wo;
};

// A block's accumulators, each starting from the bias of its output channels.
template <int NV, int RB>
inline void start(__m512 (&acc)[RB][NV], const float* bias, int64_t c0) {
  for (int v = 0; v < NV; ++v) {
    const __m512 b = _mm512_loadu_ps(bias + c0 + 16 * v);
    for (int p = 0; p < RB; ++p) acc[p][v] = b;
  }
}

// A block's epilogue: + residual, ReLU, stored (the last vector of the channels masked to those that exist).
template <int NV, int RB>
inline void store(__m512 (&acc)[RB][NV], const float* residual, float* out, const Geometry& g, int64_t oh, int64_t ow,
                  int64_t c0, bool relu, __mmask16 last_mask) {
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

// One block: RB consecutive output pixels of row `oh`, starting at column `ow`, output channels [c0, c0 + 16·NV).
// EDGE: some of its windows reach past the input's left or right edge (checked per pixel only then).
template <int NV, int RB, bool EDGE>
inline void block(const float* in, const float* w, const float* bias, const float* residual, float* out,
                  const Geometry& g, int64_t oh, int64_t ow, int64_t c0, bool relu, __mmask16 last_mask) {
  __m512 acc[RB][NV];
  start<NV, RB>(acc, bias, c0);
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t ih = oh * g.stride + i - g.top;
    if (ih < 0 || ih >= g.h) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t iw0 = ow * g.stride + j - g.left;
      const float* row = in + ih * g.w * g.cin;
      const float* wk = w + (i * g.kw + j) * g.cin * g.cout_padded + c0;
      for (int64_t ci = 0; ci < g.cin; ++ci) {
        __m512 wv[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wk + ci * g.cout_padded + 16 * v);
#pragma GCC unroll 32
        for (int p = 0; p < RB; ++p) {
          const int64_t iw = iw0 + p * g.stride;
          if (EDGE && (iw < 0 || iw >= g.w)) continue;
          const __m512 x = _mm512_set1_ps(row[iw * g.cin + ci]);
#pragma GCC unroll 16
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(x, wv[v], acc[p][v]);
        }
      }
    }
  }
  store<NV, RB>(acc, residual, out, g, oh, ow, c0, relu, last_mask);
}

// The same block at stride 1 with a KW-wide kernel: each input value is broadcast once and multiplied into
// the KW output pixels it reaches (RB+KW-1 broadcasts and NV·KW weight loads for NV·KW·RB multiply-adds,
// against NV+RB loads for NV·RB above): the narrow layers (16 channels, one vector) are otherwise bound by
// the loads, not the arithmetic.
template <int NV, int RB, int KW, bool EDGE>
inline void block_s1(const float* in, const float* w, const float* bias, const float* residual, float* out,
                     const Geometry& g, int64_t oh, int64_t ow, int64_t c0, bool relu, __mmask16 last_mask) {
  __m512 acc[RB][NV];
  start<NV, RB>(acc, bias, c0);
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t ih = oh + i - g.top;
    if (ih < 0 || ih >= g.h) continue;
    const float* row = in + ih * g.w * g.cin;
    const int64_t iw0 = ow - g.left;
    const float* wk = w + i * KW * g.cin * g.cout_padded + c0;
    for (int64_t ci = 0; ci < g.cin; ++ci) {
      __m512 wv[KW][NV];
#pragma GCC unroll 16
      for (int j = 0; j < KW; ++j)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) wv[j][v] = _mm512_loadu_ps(wk + (j * g.cin + ci) * g.cout_padded + 16 * v);
#pragma GCC unroll 32
      for (int c = 0; c < RB + KW - 1; ++c) {
        if (EDGE && (iw0 + c < 0 || iw0 + c >= g.w)) continue;
        const __m512 x = _mm512_set1_ps(row[(iw0 + c) * g.cin + ci]);
#pragma GCC unroll 16
        for (int j = 0; j < KW; ++j) {
          const int p = c - j;
          if (p < 0 || p >= RB) continue;
#pragma GCC unroll 16
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(x, wv[j][v], acc[p][v]);
        }
      }
    }
  }
  store<NV, RB>(acc, residual, out, g, oh, ow, c0, relu, last_mask);
}

// Blocks of RB pixels, then of RB/2, RB/4 ... down to one, so a short row still runs in wide blocks.
template <int NV, int RB>
inline void row(const float* in, const float* w, const float* bias, const float* residual, float* out,
                const Geometry& g, int64_t oh, int64_t c0, bool relu, __mmask16 last_mask, int64_t ow = 0) {
  for (; ow + RB <= g.wo; ow += RB) {
    const bool edge = ow * g.stride - g.left < 0 || (ow + RB - 1) * g.stride + g.kw - 1 - g.left >= g.w;
    if (g.stride == 1 && g.kw == 3) {
      if (edge) block_s1<NV, RB, 3, true>(in, w, bias, residual, out, g, oh, ow, c0, relu, last_mask);
      else block_s1<NV, RB, 3, false>(in, w, bias, residual, out, g, oh, ow, c0, relu, last_mask);
    } else {
      if (edge) block<NV, RB, true>(in, w, bias, residual, out, g, oh, ow, c0, relu, last_mask);
      else block<NV, RB, false>(in, w, bias, residual, out, g, oh, ow, c0, relu, last_mask);
    }
  }
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
  TORCH_CHECK(!residual.has_value() || residual->scalar_type() == at::kFloat, "conv2d_direct: a float32 residual");
  TORCH_CHECK(stride.size() == 2 && stride[0] == stride[1], "conv2d_direct: one stride for both axes");
  TORCH_CHECK(padding.size() == 2 || padding.size() == 4, "conv2d_direct: padding (rows, columns) or (top, bottom, left, right)");
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t kh = packed.size(0), kw = packed.size(1), cout_padded = packed.size(3);
  TORCH_CHECK(packed.size(2) == cin && bias.numel() == cout_padded && packed.is_contiguous() && bias.is_contiguous() &&
              packed.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat,
              "conv2d_direct: weights packed for another input");
  TORCH_CHECK(cout_padded % 16 == 0 && out_channels > cout_padded - 16 && out_channels <= cout_padded,
              "conv2d_direct: out_channels does not match the packed weights (16 lanes a vector)");
  TORCH_CHECK(stride[0] > 0, "conv2d_direct: a positive stride");
  const bool sides = padding.size() == 4;  // TensorFlow's 'same' pads one side more than the other at stride 2
  const int64_t top = padding[0], bottom = sides ? padding[1] : padding[0];
  const int64_t left = sides ? padding[2] : padding[1], right = sides ? padding[3] : padding[1], s = stride[0];
  TORCH_CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0 && h + top + bottom >= kh && w + left + right >= kw,
              "conv2d_direct: the kernel is larger than the padded input");
  const Geometry g{h, w, top, left, cin, cout_padded, out_channels, kh, kw, s,
                   (h + top + bottom - kh) / s + 1, (w + left + right - kw) / s + 1};
  // Read in place where the input is channels-last already (every convolution's output here is); else one copy.
  const at::Tensor nhwc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({n, g.ho, g.wo, out_channels}, x.options());
  const float* in_ptr = nhwc.data_ptr<float>();
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
  const int64_t rows_out = n * g.ho;
  // Below SERIAL_MACS multiply-adds (ResNet8's 1×1 shortcuts: 131k) waking a second thread costs more than
  // it saves: such a convolution runs on the calling thread alone.
  constexpr int64_t SERIAL_MACS = 200000;
  const int64_t macs = n * g.ho * g.wo * out_channels * kh * kw * cin;
  const int threads = macs < SERIAL_MACS ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows_out)));
  // One OpenMP region a convolution, the output rows split between its threads.
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
    for (int64_t r = rows_out * t / count; r < rows_out * (t + 1) / count; ++r) {
      const int64_t image = r / g.ho, oh = r % g.ho;
      const int64_t offset = image * g.ho * g.wo * out_channels;
      row_any(in_ptr + image * h * w * cin, w_ptr, b_ptr, res_ptr ? res_ptr + offset : nullptr, out_ptr + offset,
              g, oh, relu, last_mask);
    }
  }
  return out.permute({0, 3, 1, 2});
#else
  TORCH_CHECK(false, "conv2d_direct was built without AVX-512");
#endif
}

bool conv2d_direct_available() {
#ifdef __AVX512F__
  return __builtin_cpu_supports("avx512f");  // this build on this processor (a copy may have travelled)
#else
  return false;
#endif
}

// The C entry point an AOTInductor package calls directly (`aot_inductor.custom_ops_to_c_shims`, declared in
// pipeline/runtimes/direct_conv.py as SHIM), instead of boxing each call's arguments through its proxy
// executor and the dispatcher. Arguments as torchgen's C shims take them: int[] as pointer and length, bool
// as int32, Tensor? as a pointer to a handle (null: none); the output through `ret0`.
extern "C" __attribute__((visibility("default"))) AOTITorchError aoti_torch_cpu_conv2d_direct(
    AtenTensorHandle x, AtenTensorHandle packed, AtenTensorHandle bias, int64_t out_channels, const int64_t* stride,
    int64_t stride_len_, const int64_t* padding, int64_t padding_len_, int32_t relu, AtenTensorHandle* residual,
    AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    using torch::aot_inductor::tensor_handle_to_tensor_pointer;
    std::optional<at::Tensor> added;
    if (residual != nullptr) added = *tensor_handle_to_tensor_pointer(*residual);
    at::Tensor out = conv2d_direct(*tensor_handle_to_tensor_pointer(x), *tensor_handle_to_tensor_pointer(packed),
                                   *tensor_handle_to_tensor_pointer(bias), out_channels, at::IntArrayRef(stride, stride_len_),
                                   at::IntArrayRef(padding, padding_len_), relu != 0, added);
    *ret0 = torch::aot_inductor::new_tensor_handle(std::move(out));
  });
}

TORCH_LIBRARY(k2t, m) {
  m.def("conv2d_direct(Tensor x, Tensor packed, Tensor bias, int out_channels, int[] stride, int[] padding, bool relu, Tensor? residual=None) -> Tensor");
  m.def("conv2d_direct_available() -> bool", &conv2d_direct_available);
}

TORCH_LIBRARY_IMPL(k2t, CPU, m) {
  m.impl("conv2d_direct", &conv2d_direct);
}
