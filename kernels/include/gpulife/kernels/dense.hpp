// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `dense`: a fully connected layer, y = act(W x + b), over a batch.
///
/// The benchmark's unit of work: one thread per output element with an f32 accumulator. It is
/// simple and correct, not a tuned GEMM.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <gpulife/kernels/half.hpp>
#include <gpulife/runtime/host_device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife::kernels {

/// @brief The activation applied to each output.
enum class Activation : unsigned char {
  none,  ///< identity
  relu,  ///< max(v, 0)
  gelu,  ///< GELU, tanh approximation: v/2 (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
};

/// @brief The sizes of a dense layer.
struct DenseShape {
  std::size_t batch = 0;  ///< rows of x and y
  std::size_t in = 0;     ///< inputs per row: columns of W and x
  std::size_t out = 0;    ///< outputs per row: rows of W, entries of b, columns of y
};

namespace detail {

GPULIFE_HOST_DEVICE inline float load_as_float(float value) { return value; }
GPULIFE_HOST_DEVICE inline float load_as_float(std::uint16_t half) { return half_to_float(half); }

}  // namespace detail

/// @brief `activation` applied to `value`.
GPULIFE_HOST_DEVICE inline float activate(float value, Activation activation) {
  switch (activation) {
    case Activation::none:
      return value;
    case Activation::relu:
      return value > 0.0F ? value : 0.0F;
    case Activation::gelu: {
      constexpr float sqrt_2_over_pi = 0.7978845608028654F;
      const float inner = sqrt_2_over_pi * (value + 0.044715F * value * value * value);
#if defined(__CUDA_ARCH__)
      return 0.5F * value * (1.0F + tanhf(inner));
#else
      return 0.5F * value * (1.0F + std::tanh(inner));
#endif
    }
  }
  return value;
}

/// @brief The kernel body for output element `i` = (row i / out, output i % out).
///
/// `W` is `float` or `std::uint16_t` (f16 bit patterns) for the weights and bias, `X` the same
/// for the input; the accumulation and the output are f32.
template <class W, class X>
struct DenseBody {
  const W* weights;  ///< [out, in], row-major
  const X* x;        ///< [batch, in], row-major
  const W* bias;     ///< [out]
  float* y;          ///< [batch, out], row-major
  std::size_t in;          ///< input features
  std::size_t out;         ///< output features
  Activation activation;   ///< applied to each output

  /// Computes output element `i` (row `i / out`, feature `i % out`).
  GPULIFE_HOST_DEVICE void operator()(std::size_t i) const {
    const std::size_t row = i / out;
    const std::size_t o = i % out;
    const W* w_row = weights + o * in;
    const X* x_row = x + row * in;
    float sum = 0.0F;
    for (std::size_t k = 0; k < in; ++k) {
      sum += detail::load_as_float(w_row[k]) * detail::load_as_float(x_row[k]);
    }
    y[i] = activate(sum + detail::load_as_float(bias[o]), activation);
  }
};

/// @brief Queues y = act(W x + b) on `stream`: for every row r and output o,
/// `y[r, o] = act(sum_k W[o, k] x[r, k] + b[o])`, accumulated in f32.
///
/// Instantiated for (W, X) = (float, float), (std::uint16_t, std::uint16_t) (f16 weights, bias
/// and input) and (std::uint16_t, float) (f16 weights and bias, f32 input, so f32 outputs of
/// one layer feed the next). All four arrays are device memory on the stream's device; the
/// simulated device checks each of them when the kernel runs. A batch of zero queues nothing.
/// @param stream     the stream; the kernel is ordered after the work queued on it
/// @param shape      batch, in and out
/// @param weights    W, [out, in] row-major
/// @param x          the input, [batch, in] row-major
/// @param bias       b, [out]
/// @param y          the output, [batch, out] row-major; must not overlap the inputs
/// @param activation applied to every output
/// @throws std::invalid_argument naming the argument: an empty stream, `shape.in` or
///         `shape.out` zero, sizes whose byte count overflows, or a null pointer
/// @throws CudaError if the launch fails
template <class W, class X>
void dense(StreamView stream, DenseShape shape, const W* weights, const X* x, const W* bias,
           float* y, Activation activation);

}  // namespace gpulife::kernels
