// SPDX-License-Identifier: Apache-2.0
// The main job: allocate, upload, run a kernel and free on the default device, and say what
// happened and where.

#include <cstdio>
#include <exception>
#include <memory>
#include <numeric>
#include <vector>

#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>

int main() try {
  using namespace gpulife;
  const Device device = Device::select();
  std::printf("device: %s (backend %s)\n", device.name().c_str(),
              std::string(to_string(device.kind())).c_str());

  auto pool = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device));
  Stream stream(device);
  constexpr std::size_t n = std::size_t{1} << 20;
  std::vector<float> host(n);
  std::iota(host.begin(), host.end(), 0.0F);

  for (int step = 0; step < 3; ++step) {
    auto* data = static_cast<float*>(pool->allocate(n * sizeof(float), stream));
    stream.view().copy(data, host.data(), n * sizeof(float), CopyKind::host_to_device);
    kernels::fill(stream, data, n / 2, -1.0F);
    std::vector<float> back(n);
    stream.view().copy(back.data(), data, n * sizeof(float), CopyKind::device_to_host);
    stream.synchronize();
    pool->deallocate(data, n * sizeof(float), stream);
    const bool ok = back[0] == -1.0F && back[n / 2 - 1] == -1.0F && back[n / 2] == host[n / 2] &&
                    back[n - 1] == host[n - 1];
    std::printf("step %d: allocated %zu floats, uploaded %zu B, filled half with a kernel, "
                "downloaded: %s\n",
                step, n, n * sizeof(float), ok ? "correct" : "WRONG");
    if (!ok) return 1;
  }
  const ResourceStatistics stats = pool->statistics();
  std::printf("pool: %llu allocations, %llu hits, %llu upstream allocations\n",
              static_cast<unsigned long long>(stats.allocations),
              static_cast<unsigned long long>(stats.hits),
              static_cast<unsigned long long>(stats.upstream_allocations));
  device.synchronize();
  const std::size_t violations = device.violation_count();
  std::printf("simulated-device violations: %zu\n", violations);
  return violations == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gpulife_report: %s\n", e.what());
  return 1;
}
