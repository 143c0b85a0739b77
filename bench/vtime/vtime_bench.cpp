// SPDX-License-Identifier: Apache-2.0
// Device-dependent behaviour measured in the simulated device's virtual time: what the GPU of
// the profile (GPULIFE_SIM_PROFILE, default h100) would take. Each benchmark runs on a simulated
// device of its own, whatever device the process has, and its time is virtual time
// (`UseManualTime`): the modelled device and call costs plus the real host time between device
// calls (gpulife's own host code, on this machine).
//
//   vtime/staging/{ring,one_buffer,direct}
//       64 MiB uploaded from pageable memory through the staging ring (4 x 4 MiB), through a
//       ring of one buffer, and as one pageable cudaMemcpyAsync; counter GBps
//   vtime/pool_cross_stream/{completed,wait_before_growing,wait,own_stream}
//       stream A reads an 8 MiB block back to the host and frees it, stream B then takes 8 MiB
//       and uploads into it: does B wait for A's copy (serialised) or take new memory
//       (overlapped)? counters peak_reserved, stream_waits
//   vtime/oom_path/{fits,out_of_memory}
//       a 40 MiB allocation on a 64 MiB device while another stream's freed 40 MiB block is
//       still cached: with room it fits; without, the pool's out-of-memory path gives memory
//       back, synchronises the device and retries; counters device_syncs, oom_retries

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/bench_support.hpp"

namespace gpulife::bench {
namespace {

Device timed_device(std::size_t capacity = std::size_t{16} << 30) {
  SimOptions options = bench_sim_options();
  options.capacity_bytes = capacity;
  return Device::sim(options);
}

/// Virtual seconds of `fn`, which ends with its work synchronised.
template <class Fn>
double virtual_seconds(const Device& device, Fn&& fn) {
  const double start = *device.virtual_time_ns();
  fn();
  return (*device.virtual_time_ns() - start) * 1e-9;
}

enum class Staging { ring, one_buffer, direct };

void bm_staging(benchmark::State& state, Staging how) {
  const Device device = timed_device();
  constexpr std::size_t bytes = std::size_t{64} << 20;
  std::vector<std::byte> source(bytes, std::byte{1});
  Stream stream(device);
  auto async = std::make_shared<AsyncResource>(device);
  void* dst = async->allocate(bytes, stream);
  PinnedStagingPool staging(
      device, how == Staging::one_buffer ? StagingOptions{.buffers = 1} : StagingOptions{});
  auto upload = [&] {
    if (how == Staging::direct) {
      stream.view().copy(dst, source.data(), bytes, CopyKind::host_to_device);
    } else {
      staging.upload(dst, source, stream);
    }
    stream.synchronize();
  };
  upload();  // warm: the ring's buffers
  double total = 0;
  for (auto _ : state) {
    const double s = virtual_seconds(device, upload);
    total += s;
    state.SetIterationTime(s);
  }
  state.counters["GBps"] = benchmark::Counter(
      static_cast<double>(bytes) * static_cast<double>(state.iterations()) / total / 1e9);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  async->deallocate(dst, bytes, stream);
  stream.synchronize();
}

void bm_cross_stream(benchmark::State& state, CrossStreamReuse policy) {
  const Device device = timed_device();
  constexpr std::size_t bytes = std::size_t{8} << 20;
  Stream a(device), b(device);
  void* host = device.allocate_pinned(2 * bytes);
  auto pool = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device),
                                             PoolOptions{.cross_stream = policy});
  auto round = [&] {
    void* x = pool->allocate(bytes, a);
    a.view().copy(host, x, bytes, CopyKind::device_to_host);  // A reads it back
    pool->deallocate(x, bytes, a);
    void* y = pool->allocate(bytes, b);  // A's block, or new memory
    b.view().copy(y, static_cast<std::byte*>(host) + bytes, bytes, CopyKind::host_to_device);
    pool->deallocate(y, bytes, b);
    a.synchronize();
    b.synchronize();
  };
  for (auto _ : state) state.SetIterationTime(virtual_seconds(device, round));
  const PoolStatistics stats = pool->memory_stats();
  set_bytes_counter(state, "peak_reserved", static_cast<double>(stats.total.peak_reserved_bytes));
  set_count_counter(state, "stream_waits", static_cast<double>(stats.stream_waits));
  pool.reset();
  device.synchronize();
  device.deallocate_pinned(host);
}

void bm_oom_path(benchmark::State& state, bool out_of_memory) {
  constexpr std::size_t block = std::size_t{40} << 20;
  const Device device = timed_device(out_of_memory ? std::size_t{64} << 20 : std::size_t{1} << 30);
  Stream a(device), b(device);
  void* host = device.allocate_pinned(block);
  double total = 0;
  std::uint64_t syncs = 0;
  std::uint64_t retries = 0;
  for (auto _ : state) {
    state.PauseTiming();
    PoolResource pool(std::make_shared<AsyncResource>(device),
                      PoolOptions{.cross_stream = CrossStreamReuse::own_stream});
    void* x = pool.allocate(block, a);
    a.view().copy(host, x, block, CopyKind::device_to_host);  // still running on A
    pool.deallocate(x, block, a);                             // cached for A
    state.ResumeTiming();
    void* y = nullptr;
    const double s = virtual_seconds(device, [&] { y = pool.allocate(block, b); });
    total += s;
    state.SetIterationTime(s);
    state.PauseTiming();
    pool.deallocate(y, block, b);
    const PoolStatistics stats = pool.memory_stats();
    syncs += stats.device_synchronizations;
    retries += stats.oom_retries;
    device.synchronize();
    state.ResumeTiming();
  }
  const auto n = static_cast<double>(state.iterations());
  set_count_counter(state, "device_syncs", static_cast<double>(syncs) / n);
  set_count_counter(state, "oom_retries", static_cast<double>(retries) / n);
  (void)total;
  device.deallocate_pinned(host);
}

void settings(benchmark::internal::Benchmark* bench) {
  bench->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(bm_staging, ring, Staging::ring)->Name("vtime/staging/ring")->Apply(settings);
BENCHMARK_CAPTURE(bm_staging, one_buffer, Staging::one_buffer)
    ->Name("vtime/staging/one_buffer")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_staging, direct, Staging::direct)
    ->Name("vtime/staging/direct")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_cross_stream, completed, CrossStreamReuse::completed)
    ->Name("vtime/pool_cross_stream/completed")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_cross_stream, wait_before_growing, CrossStreamReuse::wait_before_growing)
    ->Name("vtime/pool_cross_stream/wait_before_growing")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_cross_stream, wait, CrossStreamReuse::wait)
    ->Name("vtime/pool_cross_stream/wait")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_cross_stream, own_stream, CrossStreamReuse::own_stream)
    ->Name("vtime/pool_cross_stream/own_stream")
    ->Apply(settings);
BENCHMARK_CAPTURE(bm_oom_path, fits, false)->Name("vtime/oom_path/fits")->Apply(settings);
BENCHMARK_CAPTURE(bm_oom_path, out_of_memory, true)
    ->Name("vtime/oom_path/out_of_memory")
    ->Apply(settings);

}  // namespace
}  // namespace gpulife::bench
