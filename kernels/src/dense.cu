// SPDX-License-Identifier: Apache-2.0
#include <gpulife/kernels/dense.hpp>

#include <limits>
#include <stdexcept>
#include <string>

#include <gpulife/runtime/launch.hpp>

namespace gpulife::kernels {
namespace {

/// `rows * cols * element` in bytes, or std::invalid_argument naming `what` if it overflows.
std::size_t array_bytes(std::size_t rows, std::size_t cols, std::size_t element, const char* what) {
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  if (cols != 0 && rows > max / cols / element) {
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(rows) + " x " +
                                std::to_string(cols) + " elements overflow the address space");
  }
  return rows * cols * element;
}

void require(const void* ptr, const char* name) {
  if (ptr == nullptr) throw std::invalid_argument(std::string(name) + ": null pointer");
}

template <class W, class X>
constexpr const char* kernel_name() {
  if constexpr (sizeof(W) == sizeof(float) && sizeof(X) == sizeof(float)) return "dense_f32";
  if constexpr (sizeof(W) != sizeof(float) && sizeof(X) != sizeof(float)) return "dense_f16";
  return "dense_f16w_f32x";
}

}  // namespace

template <class W, class X>
void dense(StreamView stream, DenseShape shape, const W* weights, const X* x, const W* bias,
           float* y, Activation activation) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  if (shape.in == 0) throw std::invalid_argument("shape.in: a dense layer needs inputs");
  if (shape.out == 0) throw std::invalid_argument("shape.out: a dense layer needs outputs");
  if (activation != Activation::none && activation != Activation::relu &&
      activation != Activation::gelu) {
    throw std::invalid_argument("activation: unknown value " +
                                std::to_string(static_cast<int>(activation)));
  }
  require(weights, "weights");
  require(bias, "bias");
  const std::size_t weight_bytes = array_bytes(shape.out, shape.in, sizeof(W), "weights");
  const std::size_t x_bytes = array_bytes(shape.batch, shape.in, sizeof(X), "x");
  const std::size_t y_bytes = array_bytes(shape.batch, shape.out, sizeof(float), "y");
  if (shape.batch == 0) return;
  require(x, "x");
  require(y, "y");
  for_each_index(
      stream, shape.batch * shape.out,
      DenseBody<W, X>{weights, x, bias, y, shape.in, shape.out, activation},
      {{weights, weight_bytes, Access::read},
       {x, x_bytes, Access::read},
       {bias, shape.out * sizeof(W), Access::read},
       {y, y_bytes, Access::write}},
      kernel_name<W, X>(),
      // a multiply-add per weight and row, for the simulated device's virtual time
      KernelWork{.flops = 2.0 * static_cast<double>(shape.batch) * static_cast<double>(shape.in) *
                          static_cast<double>(shape.out)});
}

template void dense<float, float>(StreamView, DenseShape, const float*, const float*, const float*,
                                  float*, Activation);
template void dense<std::uint16_t, std::uint16_t>(StreamView, DenseShape, const std::uint16_t*,
                                                  const std::uint16_t*, const std::uint16_t*,
                                                  float*, Activation);
template void dense<std::uint16_t, float>(StreamView, DenseShape, const std::uint16_t*,
                                          const float*, const std::uint16_t*, float*, Activation);

}  // namespace gpulife::kernels
