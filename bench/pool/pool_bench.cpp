// SPDX-License-Identifier: Apache-2.0
// Allocation and release of mixed sizes, after RMM's random_allocations benchmark: one
// fixed-seed trace of 2000 allocations between 256 B and 4 MiB (log-uniform), at most 64 live,
// each freed at a random later point; the same trace for every resource, on one stream.
//
//   pool/alloc_free/gpulife_pool   PoolResource over cudaMallocAsync
//   pool/alloc_free/direct         cudaMalloc / cudaFree (the simulated device's equivalents)
//   pool/alloc_free/async          cudaMallocAsync / cudaFreeAsync
//
// One untimed pass warms every resource up (the pool fills its free lists, the driver its pool);
// a timed pass is the whole trace plus a stream synchronise, so that stream-ordered work counts.
// items: allocations (each with its free); upstream_allocs: allocations per pass that reached
// the device; device_bytes: the most device memory held at once.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/bench_support.hpp"

namespace gpulife::bench {
namespace {

struct TraceOp {
  std::uint32_t slot = 0;
  bool allocate = false;
  std::size_t bytes = 0;  // of the allocation in `slot`, for frees too
};

struct Trace {
  std::vector<TraceOp> ops;
  std::size_t allocations = 0;
  std::size_t slots = 0;
};

/// xorshift64: the same trace on every platform (std:: distributions are not specified
/// bit for bit).
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }

 private:
  std::uint64_t state_;
};

Trace make_trace(std::uint64_t seed, std::size_t allocations, std::size_t max_live) {
  Trace trace;
  trace.allocations = allocations;
  trace.slots = max_live;
  Random random(seed);
  std::vector<std::uint32_t> live;
  std::vector<std::uint32_t> free_slots;
  std::vector<std::size_t> slot_bytes(max_live);
  for (std::size_t slot = max_live; slot-- > 0;)
    free_slots.push_back(static_cast<std::uint32_t>(slot));
  auto release = [&](std::size_t index) {
    const std::uint32_t slot = live[index];
    live[index] = live.back();
    live.pop_back();
    free_slots.push_back(slot);
    trace.ops.push_back({slot, false, slot_bytes[slot]});
  };
  std::size_t made = 0;
  while (made < allocations) {
    const std::uint64_t r = random.next();
    if (live.empty() || (live.size() < max_live && (r & 1) != 0)) {
      // log-uniform: a power of two from 2^8 to 2^21, then uniform below the next one
      const unsigned shift = 8 + static_cast<unsigned>((r >> 1) % 14);
      const std::size_t bytes =
          (std::size_t{1} << shift) + (random.next() % (std::size_t{1} << shift));
      const std::uint32_t slot = free_slots.back();
      free_slots.pop_back();
      slot_bytes[slot] = bytes;
      live.push_back(slot);
      trace.ops.push_back({slot, true, bytes});
      ++made;
    } else {
      release(static_cast<std::size_t>((r >> 1) % live.size()));
    }
  }
  while (!live.empty()) release(static_cast<std::size_t>(random.next() % live.size()));
  return trace;
}

const Trace& shared_trace() {
  static const Trace trace = make_trace(0x5EED, 2000, 64);
  return trace;
}

void run_trace(DeviceMemoryResource& resource, const Trace& trace, StreamView stream,
               std::vector<void*>& slots) {
  for (const TraceOp& op : trace.ops) {
    if (op.allocate) {
      slots[op.slot] = resource.allocate(op.bytes, stream);
    } else {
      resource.deallocate(slots[op.slot], op.bytes, stream);
    }
  }
}

enum class Kind : unsigned char { gpulife_pool, direct, async };

void bm_alloc_free(benchmark::State& state, Kind kind) {
  const std::string name =
      std::string("pool/alloc_free/") + (kind == Kind::gpulife_pool ? "gpulife_pool"
                                         : kind == Kind::direct     ? "direct"
                                                                    : "async");
  const Device& device = bench_device();
  std::shared_ptr<DeviceMemoryResource> device_resource;
  if (kind == Kind::direct) {
    device_resource = std::make_shared<DirectResource>(device);
  } else {
    device_resource = std::make_shared<AsyncResource>(device);
  }
  std::shared_ptr<DeviceMemoryResource> resource = device_resource;
  if (kind == Kind::gpulife_pool) resource = std::make_shared<PoolResource>(device_resource);
  const Stream stream(device);
  const Trace& trace = shared_trace();
  std::vector<void*> slots(trace.slots);

  run_trace(*resource, trace, stream, slots);
  stream.synchronize();
  const ResourceStatistics before = device_resource->statistics();
  for (auto _ : state) {
    run_trace(*resource, trace, stream, slots);
    stream.synchronize();
  }
  const ResourceStatistics after = device_resource->statistics();
  const ResourceStatistics own = resource->statistics();
  const auto passes = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(trace.allocations));
  if (passes > 0) {
    set_count_counter(
        state, "upstream_allocs",
        static_cast<double>(after.upstream_allocations - before.upstream_allocations) / passes);
  }
  set_bytes_counter(state, "device_bytes", static_cast<double>(after.peak_bytes_in_use));
  if (own.bytes_in_use != 0) {
    record_leak(state, name,
                format_bytes(static_cast<double>(own.bytes_in_use)) + " still allocated from " +
                    resource->name());
  }
}

void pool_settings(benchmark::internal::Benchmark* bench) {
  bench->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(bm_alloc_free, gpulife_pool, Kind::gpulife_pool)
    ->Name("pool/alloc_free/gpulife_pool")
    ->Apply(pool_settings);
BENCHMARK_CAPTURE(bm_alloc_free, direct, Kind::direct)
    ->Name("pool/alloc_free/direct")
    ->Apply(pool_settings);
BENCHMARK_CAPTURE(bm_alloc_free, async, Kind::async)
    ->Name("pool/alloc_free/async")
    ->Apply(pool_settings);

}  // namespace
}  // namespace gpulife::bench
