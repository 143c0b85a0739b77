// SPDX-License-Identifier: Apache-2.0
#include <gpulife/kernels/fill.hpp>

#include <stdexcept>

#include <gpulife/runtime/launch.hpp>

namespace gpulife::kernels {

template <class T>
void fill(StreamView stream, T* data, std::size_t n, T value) {
  if (n == 0) return;
  if (data == nullptr) throw std::invalid_argument("data: null pointer for fill of n > 0");
  for_each_index(stream, n, FillBody<T>{data, value}, {{data, n * sizeof(T), Access::write}},
                 "fill");
}

template void fill<float>(StreamView, float*, std::size_t, float);
template void fill<double>(StreamView, double*, std::size_t, double);
template void fill<std::int8_t>(StreamView, std::int8_t*, std::size_t, std::int8_t);
template void fill<std::uint8_t>(StreamView, std::uint8_t*, std::size_t, std::uint8_t);
template void fill<std::int32_t>(StreamView, std::int32_t*, std::size_t, std::int32_t);
template void fill<std::int64_t>(StreamView, std::int64_t*, std::size_t, std::int64_t);
template void fill<std::uint16_t>(StreamView, std::uint16_t*, std::size_t, std::uint16_t);

}  // namespace gpulife::kernels
