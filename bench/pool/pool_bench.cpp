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
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/stream.hpp>

#include "replay.hpp"
#include "support/bench_support.hpp"
#include "traces/trace.hpp"

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

// ---------------------------------------------------------------------------------------------
// The pool's own host time and its memory on real-shaped traces, on the replay's model device
// (no memory, no device work: what is measured is the resource's bookkeeping).
//
//   pool/steady_state/{gpulife_pool,v1_pool}   one decode step's tensors of Llama-2-7B at batch 8
//       (per layer the sizes of tools/replay's trace), allocated and freed on one stream, again
//       and again: the fast path of inference. items: allocate+free pairs; upstream_calls: per
//       pass once warm (0 is the goal).
//   pool/replay/<trace>/<policy>   a short version of each standard trace, replayed once:
//       ratio (peak reserved over peak live bytes), upstream_calls, syncs, ns_per_op.

namespace gpulife::bench {
namespace {

std::vector<std::size_t> decode_step_sizes() {
  constexpr std::size_t batch = 8;
  constexpr std::size_t hidden = 4096 * 2;
  constexpr std::size_t mlp = 11008 * 2;
  std::vector<std::size_t> sizes;
  for (int layer = 0; layer < 32; ++layer) {
    for (std::size_t bytes : {batch * hidden, batch * hidden, batch * hidden, batch * hidden,
                              batch * hidden, batch * hidden, batch * hidden, batch * mlp,
                              batch * mlp, batch * mlp, batch * hidden, batch * hidden}) {
      sizes.push_back(bytes);
    }
  }
  return sizes;
}

void bm_steady_state(benchmark::State& state, const char* policy) {
  replay::ModelDevice device(replay::DeviceModel{});
  auto resource = replay::make_policy(policy, device.device());
  const StreamView stream = device.stream(0);
  const std::vector<std::size_t> sizes = decode_step_sizes();
  std::vector<void*> ptrs(sizes.size());
  auto pass = [&] {
    // Freed as soon as the next layer's tensors exist, as a forward pass does.
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      ptrs[i] = resource->allocate(sizes[i], stream);
      if (i >= 4) resource->deallocate(ptrs[i - 4], sizes[i - 4], stream);
    }
    for (std::size_t i = sizes.size() - 4; i < sizes.size(); ++i) {
      resource->deallocate(ptrs[i], sizes[i], stream);
    }
  };
  pass();
  pass();
  const replay::DeviceCounters before = device.counters();
  for (auto _ : state) pass();
  const replay::DeviceCounters after = device.counters();
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(sizes.size()));
  const double passes = static_cast<double>(state.iterations());
  if (passes > 0) {
    set_count_counter(state, "upstream_calls",
                      static_cast<double>(after.allocations + after.maps - before.allocations -
                                          before.maps) /
                          passes);
  }
}

BENCHMARK_CAPTURE(bm_steady_state, gpulife_pool, "v2")
    ->Name("pool/steady_state/gpulife_pool")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_steady_state, v1_pool, "v1")
    ->Name("pool/steady_state/v1_pool")
    ->Unit(benchmark::kMicrosecond);

/// Short versions of the standard traces, so that the report replays them in seconds.
const traces::Trace& short_trace(const std::string& name) {
  static const std::vector<traces::Trace> all = [] {
    std::vector<traces::Trace> t;
    t.push_back(traces::llama_paged(1, 2));
    t.back().name = "llama-paged";
    t.push_back(traces::llama_growing(1, 2));
    t.back().name = "llama-growing";
    t.push_back(traces::random_allocations(std::size_t{64} << 20, 2000));
    t.back().name = "random-64MiB";
    t.push_back(traces::multi_stream(1, 1000));
    t.back().name = "multi-stream";
    return t;
  }();
  for (const auto& t : all) {
    if (t.name == name) return t;
  }
  throw std::invalid_argument("trace: no short trace " + name);
}

void bm_replay(benchmark::State& state, const char* trace, const char* policy) {
  replay::ReplayResult result;
  for (auto _ : state) result = replay::replay(short_trace(trace), policy, replay::DeviceModel{});
  state.counters["ratio"] = result.ratio();
  set_bytes_counter(state, "peak_reserved", static_cast<double>(result.peak_reserved_bytes));
  set_bytes_counter(state, "peak_live", static_cast<double>(result.peak_live_bytes));
  set_count_counter(state, "upstream_calls", static_cast<double>(result.upstream_calls));
  set_count_counter(state, "syncs", static_cast<double>(result.synchronizations));
  state.counters["ns_per_op"] = result.ns_per_operation;
}

void register_replays() {
  for (const char* trace : {"llama-paged", "llama-growing", "random-64MiB", "multi-stream"}) {
    for (const char* policy : {"v2", "v1", "async"}) {
      const std::string name = std::string("pool/replay/") + trace + "/" +
                               (std::string(policy) == "v2"   ? "gpulife_pool"
                                : std::string(policy) == "v1" ? "v1_pool"
                                                              : "async");
      benchmark::RegisterBenchmark(name.c_str(), bm_replay, trace, policy)
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
}

const bool replays_registered = (register_replays(), true);

}  // namespace
}  // namespace gpulife::bench
