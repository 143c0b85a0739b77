// SPDX-License-Identifier: Apache-2.0
// A consumer's own kernel over a gpulife tensor, compiled by nvcc (C++20, through the package).

#include <gpulife/runtime/launch.hpp>
#include <gpulife/tensor/device_tensor.hpp>

namespace {

struct Triple {
  float* data;
  GPULIFE_HOST_DEVICE void operator()(std::size_t i) const { data[i] *= 3.0F; }
};

}  // namespace

void triple(gpulife::StreamView stream, const gpulife::DeviceTensor& t) {
  float* data = t.data<float>();
  gpulife::for_each_index(stream, static_cast<std::size_t>(t.numel()), Triple{data},
                          {{data, t.bytes()}}, "triple");
}
