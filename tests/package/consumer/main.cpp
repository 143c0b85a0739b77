// SPDX-License-Identifier: Apache-2.0
// An application's view of gpulife: public headers only, run on the simulated device.

#include <cstdio>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include <gpulife/gpulife.hpp>
#include <gpulife/interop/dlpack.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/version.hpp>

#if defined(GPULIFE_CONSUMER_CUDA)
// triple.cu, compiled by nvcc: multiplies the tensor's elements by three with a kernel.
void triple(gpulife::StreamView stream, const gpulife::DeviceTensor& t);
#endif

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "gpulife consumer: FAILED: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() try {
  using namespace gpulife;
  check(std::string_view(GPULIFE_VERSION_STRING) == GPULIFE_CONSUMER_EXPECTED_VERSION,
        "gpulife/version.hpp matches the package version");

  Context ctx;
  check(ctx.device().kind() == BackendKind::sim, "GPULIFE_DEVICE=sim selects the simulated device");
  Stream stream(ctx.device());
  const std::vector<float> host(64, 1.0F);
  DeviceTensor t = ctx.upload(std::span<const float>(host), {8, 8}, stream, "consumer");
  int released = 0;
  const Finalizer note = t.on_release([&](const TensorInfo&) { ++released; });
  const WeakTensor weak = t;

  kernels::fill(stream, t.data<float>(), 32, 2.0F);
  const std::vector<float> back = t.to_host<float>(stream);
  check(std::accumulate(back.begin(), back.end(), 0.0F) == 96.0F, "fill ran on the first half");

#if defined(GPULIFE_CONSUMER_CUDA)
  triple(stream, t);
  const std::vector<float> tripled = t.to_host<float>(stream);
  check(std::accumulate(tripled.begin(), tripled.end(), 0.0F) == 288.0F,
        "the nvcc-compiled kernel ran");
#endif

  DLManagedTensor* lent = to_dlpack(t);
  check(lent->dl_tensor.ndim == 2 && lent->dl_tensor.device.device_type == kDLCPU,
        "the DLPack export describes a 2-d host tensor");
  t.reset();
  check(!weak.expired() && released == 0, "the DLPack consumer keeps the tensor alive");
  lent->deleter(lent);
  check(weak.expired() && released == 1 && !note.alive(), "the deleter released it");

  if (failures != 0) return 1;
  std::printf("gpulife consumer (%s): ok, gpulife %s on %s\n", GPULIFE_CONSUMER_MODE,
              GPULIFE_VERSION_STRING, ctx.device().name().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gpulife consumer: %s\n", e.what());
  return 1;
}
