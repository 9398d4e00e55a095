// The conv layers of SML's transfer (paper eqs. 5 and the second conv layer), fused.
//
// Each "vertical convolution" mixes the channels of one column of a row's C x d feature map, and
// every layer is followed by GELU. Done as separate ATen calls, each layer writes and re-reads a
// [C, rows * d] map (10 floats per column for the first layer) and its GELU backward recomputes
// erf and exp from memory: about a third of a training step's time for 2.5% of its multiply-adds.
// Here one pass per row keeps a row's maps (a few KB) in L1: forward writes only the last layer's
// output, already in the channel-major flatten of eq. (6); backward recomputes the row's forward
// and propagates through it. Weight gradients are summed per block of rows in double, then over
// blocks in a fixed order, so results do not depend on the thread count.
//
// Layout: h0 is [3, rows, d] (the stack of eq. 4, channel-outer), weights[l] is
// [C_out, C_in], the output is [rows, C_last * d] with out[b, k * d + m] = H_last[k, m] of row b.
//
// GELU is the exact form, x * Phi(x). In float, erf is the same rational approximation that
// ATen's vectorised CPU GELU uses (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7)
// with an exp written here so that the compiler can vectorise the loops; in double (the tests'
// gradient checks), std::erf and std::exp.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kRowsPerBlock = 16;
constexpr int64_t kMaxDim = 1024;  // rows of at most this many columns (d); checked in shape_of

// Written without floor, fmin or branches on memory so that GCC vectorises the loops that call it.
inline float exp_f(float x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2; degree-6 Taylor on r.
  // Below -87 the result is 0 (exp(-87) is near float's smallest normal), so x * exp(-x^2/2)
  // is 0, not x * 1e-38, for huge |x|.
  const bool underflow = x < -87.0f;
  x = underflow ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return underflow ? 0.0f : p * __builtin_bit_cast(float, bits);
}

// GELU(x) = x * Phi(x) and its derivative Phi(x) + x * phi(x) share exp(-x^2 / 2): erf(x / sqrt 2)
// needs it too, so one exp and one division give both.
inline void gelu_parts(float x, float& cdf, float& pdf) {
  const float u = x * 0.70710678118654752f;
  const float a = u < 0.0f ? -u : u;
  const float t = 1.0f / (0.3275911f * a + 1.0f);
  const float r = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t
                   + 0.254829592f);
  const float e = exp_f(-a * a);  // exp(-x^2 / 2)
  const float erf_abs = 1.0f - r * t * e;
  cdf = 0.5f * (1.0f + (u < 0.0f ? -erf_abs : erf_abs));
  pdf = e * 0.3989422804014327f;
}

inline void gelu_parts(double x, double& cdf, double& pdf) {
  cdf = 0.5 * (1.0 + std::erf(x * 0.7071067811865475244));
  pdf = std::exp(-0.5 * x * x) * 0.3989422804014326779;
}

template <typename T>
inline T gelu(T x) {
  T cdf, pdf;
  gelu_parts(x, cdf, pdf);
  return x * cdf;
}

struct Shape {
  int64_t rows, dim, layers;
  std::vector<int64_t> in_ch, out_ch, w_offset;  // per layer; w_offset into the flat weight grads
  int64_t w_total = 0, max_ch = 3;
};

Shape shape_of(const torch::Tensor& h0, const std::vector<torch::Tensor>& weights) {
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == 3, "h0 must be [3, rows, d]");
  TORCH_CHECK(h0.is_contiguous() && h0.device().is_cpu(), "h0 must be a contiguous CPU tensor");
  TORCH_CHECK(!weights.empty(), "at least one conv layer");
  Shape s;
  s.rows = h0.size(1);
  s.dim = h0.size(2);
  s.layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK(s.dim <= kMaxDim, "the fused conv kernel takes rows of at most ", kMaxDim, " columns");
  int64_t channels = 3;
  for (const auto& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.size(1) == channels && w.is_contiguous(),
                "conv weights must be contiguous [C_out, C_in] matching the previous layer");
    TORCH_CHECK(w.scalar_type() == h0.scalar_type(), "weights and h0 must share a dtype");
    TORCH_CHECK(w.device().is_cpu(), "the fused conv kernel runs on the CPU only");
    s.in_ch.push_back(channels);
    s.out_ch.push_back(w.size(0));
    s.w_offset.push_back(s.w_total);
    s.w_total += w.numel();
    channels = w.size(0);
    if (channels > s.max_ch) s.max_ch = channels;
  }
  return s;
}

// One row's forward. act holds each layer's C_out x d GELU outputs (the last layer's go to `last`);
// with `slope`, also each layer's GELU derivatives, for the backward pass.
template <typename T>
void row_forward(const Shape& s, const std::vector<const T*>& w, const T* const x[3], T* act, T* slope,
                 T* last) {
  const int64_t d = s.dim, stride = s.max_ch * d;
  const T* in = nullptr;
  T pre[kMaxDim];
  for (int64_t l = 0; l < s.layers; ++l) {
    const int64_t cin = s.in_ch[l], cout = s.out_ch[l];
    T* h_l = (l + 1 == s.layers) ? last : act + l * stride;
    for (int64_t j = 0; j < cout; ++j) {
      const T* wj = w[l] + j * cin;
      for (int64_t m = 0; m < d; ++m) pre[m] = T(0);
      for (int64_t c = 0; c < cin; ++c) {
        const T wc = wj[c];
        const T* src = (l == 0) ? x[c] : in + c * d;
        for (int64_t m = 0; m < d; ++m) pre[m] += wc * src[m];
      }
      T* h = h_l + j * d;
      if (slope != nullptr) {
        T* sl = slope + l * stride + j * d;
        for (int64_t m = 0; m < d; ++m) {
          T cdf, pdf;
          gelu_parts(pre[m], cdf, pdf);
          h[m] = pre[m] * cdf;
          sl[m] = cdf + pre[m] * pdf;
        }
      } else {
        for (int64_t m = 0; m < d; ++m) h[m] = gelu(pre[m]);
      }
    }
    in = h_l;
  }
}

template <typename T>
torch::Tensor forward_impl(const torch::Tensor& h0, const std::vector<torch::Tensor>& weights) {
  const Shape s = shape_of(h0, weights);
  const int64_t d = s.dim, rows = s.rows, c_last = s.out_ch.back();
  auto out = torch::empty({rows, c_last * d}, h0.options());
  std::vector<const T*> w;
  for (const auto& t : weights) w.push_back(t.data_ptr<T>());
  const T* base = h0.data_ptr<T>();
  T* out_p = out.data_ptr<T>();
  at::parallel_for(0, rows, kRowsPerBlock, [&](int64_t begin, int64_t end) {
    std::vector<T> act(s.layers * s.max_ch * d);
    for (int64_t b = begin; b < end; ++b) {
      const T* x[3] = {base + b * d, base + (rows + b) * d, base + (2 * rows + b) * d};
      row_forward<T>(s, w, x, act.data(), nullptr, out_p + b * c_last * d);
    }
  });
  return out;
}

template <typename T>
std::vector<torch::Tensor> backward_impl(const torch::Tensor& h0, const std::vector<torch::Tensor>& weights,
                                         const torch::Tensor& grad_out, bool need_input, bool need_weights) {
  const Shape s = shape_of(h0, weights);
  const int64_t d = s.dim, rows = s.rows, c_last = s.out_ch.back(), stride = s.max_ch * d;
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.size(0) == rows && grad_out.size(1) == c_last * d,
              "grad_out must be contiguous [rows, C_last * d]");
  std::vector<const T*> w;
  for (const auto& t : weights) w.push_back(t.data_ptr<T>());
  const T* base = h0.data_ptr<T>();
  const T* g_p = grad_out.data_ptr<T>();
  torch::Tensor grad_h0 = need_input ? torch::empty_like(h0) : torch::Tensor();
  T* gh0 = need_input ? grad_h0.data_ptr<T>() : nullptr;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<double> partial(need_weights ? blocks * s.w_total : 0, 0.0);

  at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    const int64_t maps = s.layers * stride;
    std::vector<T> act(maps), slope(maps), last(c_last * d), grad(stride), grad_in(stride);
    // Weight gradients of a block, per column (summed over columns once per block).
    std::vector<T> dw_cols(need_weights ? s.w_total * d : 0);
    for (int64_t blk = block_begin; blk < block_end; ++blk) {
      std::fill(dw_cols.begin(), dw_cols.end(), T(0));
      const int64_t b_end = std::min(rows, (blk + 1) * kRowsPerBlock);
      for (int64_t b = blk * kRowsPerBlock; b < b_end; ++b) {
        const T* x[3] = {base + b * d, base + (rows + b) * d, base + (2 * rows + b) * d};
        row_forward<T>(s, w, x, act.data(), slope.data(), last.data());
        const T* g_row = g_p + b * c_last * d;
        for (int64_t i = 0; i < c_last * d; ++i) grad[i] = g_row[i];
        for (int64_t l = s.layers - 1; l >= 0; --l) {
          const int64_t cin = s.in_ch[l], cout = s.out_ch[l];
          const T* sl = slope.data() + l * stride;
          for (int64_t i = 0; i < cout * d; ++i) grad[i] *= sl[i];  // at the pre-activations
          const T* in_maps = (l == 0) ? nullptr : act.data() + (l - 1) * stride;
          if (need_weights) {
            T* dw = dw_cols.data() + s.w_offset[l] * d;
            for (int64_t j = 0; j < cout; ++j) {
              const T* g = grad.data() + j * d;
              for (int64_t c = 0; c < cin; ++c) {
                const T* src = (l == 0) ? x[c] : in_maps + c * d;
                T* acc = dw + (j * cin + c) * d;
                for (int64_t m = 0; m < d; ++m) acc[m] += g[m] * src[m];
              }
            }
          }
          if (l == 0 && !need_input) break;
          for (int64_t c = 0; c < cin; ++c) {
            T* gi = grad_in.data() + c * d;
            for (int64_t m = 0; m < d; ++m) gi[m] = T(0);
            for (int64_t j = 0; j < cout; ++j) {
              const T wjc = w[l][j * cin + c];
              const T* g = grad.data() + j * d;
              for (int64_t m = 0; m < d; ++m) gi[m] += wjc * g[m];
            }
          }
          std::swap(grad, grad_in);
        }
        if (need_input) {
          for (int64_t c = 0; c < 3; ++c)
            std::memcpy(gh0 + (c * rows + b) * d, grad.data() + c * d, sizeof(T) * d);
        }
      }
      if (need_weights) {
        double* out = partial.data() + blk * s.w_total;
        for (int64_t k = 0; k < s.w_total; ++k) {
          double sum = 0.0;
          const T* col = dw_cols.data() + k * d;
          for (int64_t m = 0; m < d; ++m) sum += static_cast<double>(col[m]);
          out[k] = sum;
        }
      }
    }
  });

  std::vector<torch::Tensor> result;
  result.push_back(grad_h0);
  for (int64_t l = 0; l < s.layers; ++l) {
    if (!need_weights) {
      result.push_back(torch::Tensor());
      continue;
    }
    auto gw = torch::empty_like(weights[l]);
    T* out = gw.data_ptr<T>();
    const int64_t n = weights[l].numel(), off = s.w_offset[l];
    for (int64_t i = 0; i < n; ++i) {
      double sum = 0.0;
      for (int64_t blk = 0; blk < blocks; ++blk) sum += partial[blk * s.w_total + off + i];
      out[i] = static_cast<T>(sum);
    }
    result.push_back(gw);
  }
  return result;
}

// GELU of a tensor and its derivative at the same points, in one pass: the FC layer's GELU (eq. 6)
// keeps the derivative for backward, which is then one multiplication instead of ATen's
// recomputation of erf and exp.
template <typename T>
std::vector<torch::Tensor> gelu_slope_impl(const torch::Tensor& x) {
  auto y = torch::empty_like(x), slope = torch::empty_like(x);
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  T* sp = slope.data_ptr<T>();
  at::parallel_for(0, x.numel(), 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T cdf, pdf;
      gelu_parts(xp[i], cdf, pdf);
      yp[i] = xp[i] * cdf;
      sp[i] = cdf + xp[i] * pdf;
    }
  });
  return {y, slope};
}

std::vector<torch::Tensor> gelu_slope(const torch::Tensor& x) {
  TORCH_CHECK(x.is_contiguous() && x.device().is_cpu(), "gelu_slope needs a contiguous CPU tensor");
  if (x.scalar_type() == torch::kDouble) return gelu_slope_impl<double>(x);
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "float32 or float64 only");
  return gelu_slope_impl<float>(x);
}

torch::Tensor conv_forward(const torch::Tensor& h0, const std::vector<torch::Tensor>& weights) {
  if (h0.scalar_type() == torch::kDouble) return forward_impl<double>(h0, weights);
  TORCH_CHECK(h0.scalar_type() == torch::kFloat, "float32 or float64 only");
  return forward_impl<float>(h0, weights);
}

std::vector<torch::Tensor> conv_backward(const torch::Tensor& h0, const std::vector<torch::Tensor>& weights,
                                         const torch::Tensor& grad_out, bool need_input, bool need_weights) {
  if (h0.scalar_type() == torch::kDouble)
    return backward_impl<double>(h0, weights, grad_out, need_input, need_weights);
  TORCH_CHECK(h0.scalar_type() == torch::kFloat, "float32 or float64 only");
  return backward_impl<float>(h0, weights, grad_out, need_input, need_weights);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv_forward", &conv_forward, "fused conv + GELU layers of the SML transfer");
  m.def("gelu_slope", &gelu_slope, "GELU and its derivative, elementwise");
  m.def("conv_backward", &conv_backward, "gradients of conv_forward (recomputes the forward per row)");
}
