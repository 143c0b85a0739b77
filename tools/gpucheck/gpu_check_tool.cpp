// SPDX-License-Identifier: Apache-2.0
// gpulife_gpu_check: the measurements and probes of scripts/gpu-check.sh, one mode per argument.
//
//   gpulife_gpu_check probe     which CUDA is there: runtime and driver versions, devices
//   gpulife_gpu_check figures   upload GB/s through the staging ring (pageable source) and from
//                               pinned memory, and the stream-ordered pool's reserved bytes
//                               after a burst and after release_cached()
//   gpulife_gpu_check touch-released-pool-block
//                               launches a kernel on a pool block after its release: under
//                               compute-sanitizer's memcheck it must be reported (the pool's
//                               NVTX registration), without a tool nothing happens
//
// Output is one `key=value` line per figure, for the script's summary. The device is
// Device::select()'s (GPULIFE_DEVICE=cuda|sim forces one); sim figures are host figures.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/gpulife.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/memory/pool_resource.hpp>

#if defined(GPULIFE_HAS_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace {

using gpulife::Device;
using Clock = std::chrono::steady_clock;

int probe() {
  const gpulife::CudaProbe cuda = Device::probe_cuda();
  std::printf("cuda_compiled=%d\ncuda_available=%d\ncuda_devices=%d\n", cuda.compiled ? 1 : 0,
              cuda.available ? 1 : 0, cuda.device_count);
  if (!cuda.available) std::printf("cuda_reason=%s\n", cuda.reason.c_str());
#if defined(GPULIFE_HAS_CUDA)
  int runtime = 0;
  int driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) std::printf("cuda_runtime=%d\n", runtime);
  if (cudaDriverGetVersion(&driver) == cudaSuccess) std::printf("cuda_driver=%d\n", driver);
  if (cuda.available) {
    for (int i = 0; i < cuda.device_count; ++i) {
      std::printf("device_%d=%s\n", i, Device::cuda(i).name().c_str());
    }
  }
#endif
  return 0;
}

/// Median of `runs` timings of `fn`, in seconds.
template <class Fn>
double median_seconds(int runs, Fn&& fn) {
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int figures() {
  const Device device = Device::select();
  const bool cuda = device.kind() == gpulife::BackendKind::cuda;
  std::printf("device=%s\n", device.name().c_str());
  if (!cuda) std::printf("note=simulated device: host figures, not a GPU's\n");
  const std::size_t bytes = cuda ? std::size_t{256} << 20 : std::size_t{32} << 20;
  gpulife::Stream stream(device);
  auto async = std::make_shared<gpulife::AsyncResource>(device);
  void* dst = async->allocate(bytes, stream);

  // Pageable source through the staging ring (the context's default ring: 4 x 4 MiB).
  std::vector<std::byte> pageable(bytes, std::byte{1});
  {
    gpulife::PinnedStagingPool staging(device);
    staging.upload(dst, pageable, stream);  // warm: the ring's buffers
    stream.synchronize();
    const double staged = median_seconds(5, [&] {
      staging.upload(dst, pageable, stream);
      stream.synchronize();
    });
    std::printf("upload_pageable_staged_GBps=%.2f\n", static_cast<double>(bytes) / staged / 1e9);
  }
  // Pageable source copied directly (the driver stages it).
  const double direct = median_seconds(5, [&] {
    stream.view().copy(dst, pageable.data(), bytes, gpulife::CopyKind::host_to_device);
    stream.synchronize();
  });
  std::printf("upload_pageable_direct_GBps=%.2f\n", static_cast<double>(bytes) / direct / 1e9);
  // Pinned source: a block of the device's pinned host cache.
  {
    gpulife::PinnedHostCache& cache = device.pinned_host_cache();
    auto* pinned = static_cast<std::byte*>(cache.allocate(bytes));
    std::memset(pinned, 1, bytes);
    const double from_pinned = median_seconds(5, [&] {
      stream.view().copy(dst, pinned, bytes, gpulife::CopyKind::host_to_device);
      stream.synchronize();
    });
    std::printf("upload_pinned_GBps=%.2f\n", static_cast<double>(bytes) / from_pinned / 1e9);
    (void)cache.record_use(pinned, stream);
    cache.deallocate(pinned);
    std::printf("pinned_cache_bytes_cached=%zu\n", cache.statistics().bytes_cached);
  }
  async->deallocate(dst, bytes, stream);
  stream.synchronize();

  // A burst through the pool over the driver's pool, then release_cached down the stack.
  {
    gpulife::PoolResource pool(async);
    std::vector<void*> blocks;
    const std::size_t piece = std::size_t{64} << 20;
    const std::size_t burst = cuda ? std::size_t{2} << 30 : std::size_t{256} << 20;
    for (std::size_t done = 0; done < burst; done += piece) blocks.push_back(pool.allocate(piece, stream));
    for (void* block : blocks) pool.deallocate(block, piece, stream);
    (void)pool.trim();  // the blocks go back to the driver's pool, which keeps them
    stream.synchronize();
    std::printf("burst_bytes=%zu\n", burst);
    std::printf("mempool_reserved_after_burst=%zu\n", async->pool_reserved_bytes());
    const std::size_t released = pool.release_cached();
    (void)released;
    std::printf("mempool_reserved_after_release_cached=%zu\n", async->pool_reserved_bytes());
  }
  return 0;
}

int touch_released_pool_block() {
  const Device device = Device::select();
  gpulife::Stream stream(device);
  gpulife::PoolResource pool(std::make_shared<gpulife::AsyncResource>(device));
  auto* block = static_cast<float*>(pool.allocate(1 << 20, stream));
  gpulife::kernels::fill(stream, block, (1 << 20) / sizeof(float), 1.0F);  // live: fine
  pool.deallocate(block, 1 << 20, stream);
  // The pool still holds the memory, so CUDA itself sees nothing wrong; the NVTX registration
  // tells compute-sanitizer the block is no longer handed out.
  gpulife::kernels::fill(stream, block, (1 << 20) / sizeof(float), 2.0F);
  stream.synchronize();
  std::printf("touched_released_block=1\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "probe") return probe();
    if (mode == "figures") return figures();
    if (mode == "touch-released-pool-block") return touch_released_pool_block();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife_gpu_check %s: %s\n", argv[1], e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: %s probe|figures|touch-released-pool-block\n", argv[0]);
  return 2;
}
