// SPDX-License-Identifier: Apache-2.0
// A program that exits with gpulife objects alive while the CUDA runtime shuts down: the default
// context (made after the runtime), a staging ring, a pinned buffer, and a device handle made
// before the runtime initialised, so that it is destroyed after the runtime unloaded. Nothing
// may be reported (CTest fails the run on any "gpulife:" line); exit status 77 when no GPU
// answers (CTest: skipped).

#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include <gpulife/gpulife.hpp>

namespace {

// Constructed before main (empty), assigned once CUDA works: destroyed after the runtime.
gpulife::Device device_made_before_the_runtime;
gpulife::HostBuffer pinned_made_before_the_runtime;

}  // namespace

int main() {
  const gpulife::CudaProbe probe = gpulife::Device::probe_cuda();
  if (!probe.available) {
    std::printf("skipped: no CUDA device (%s)\n", probe.reason.c_str());
    return 77;
  }
  std::shared_ptr<gpulife::Context> ctx = gpulife::default_context();
  device_made_before_the_runtime = ctx->device();
  const std::vector<float> weights(1 << 20, 0.25F);  // 4 MiB: through the staging ring
  gpulife::Stream stream(ctx->device());
  gpulife::DeviceTensor t = ctx->upload(std::span<const float>(weights), {1 << 20}, stream);
  pinned_made_before_the_runtime =
      gpulife::HostBuffer::copy_pinned(ctx->device(), std::as_bytes(std::span(weights)));
  gpulife::DeviceTensor cached =
      ctx->cache().upload(pinned_made_before_the_runtime, {1 << 20}, gpulife::DType::f32, stream,
                          {.retention = gpulife::Retention::pinned});
  if (t.to_host<float>(stream)[12345] != 0.25F) return 1;
  std::puts("exiting with the default context, a pinned buffer and a device handle alive");
  return 0;
}
