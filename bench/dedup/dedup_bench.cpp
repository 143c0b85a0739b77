// SPDX-License-Identifier: Apache-2.0
// N instances of the benchmark model (1, 2, 4, 8) load the same weights into one context:
//
//   dedup/load/gpulife_cache   through the TensorCache: the first instance uploads, the others
//                              hit and share its tensors (weak retention: the entries live while
//                              an instance holds them)
//   dedup/load/no_cache        Context::upload for each instance: N copies
//
// The time is that of loading all N (CUDA events on a GPU, host clock on the simulated device).
// device_bytes: device memory owned by live tensors once all N are loaded; bytes_uploaded:
// host-to-device bytes per load of all N.

#include <cstddef>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/bench_support.hpp"
#include "support/model.hpp"

namespace gpulife::bench {
namespace {

void bm_dedup(benchmark::State& state, bool use_cache) {
  const std::string name = std::string("dedup/load/") + (use_cache ? "gpulife_cache" : "no_cache");
  const auto instances = static_cast<std::size_t>(state.range(0));
  const Device& device = bench_device();
  const HostModel& model = host_model(model_for(device.kind()));
  const ModelSpec& spec = model.spec();
  // The default stack (a pool over cudaMallocAsync), in leak mode for the leak check.
  Context ctx({.device = device, .debug = {.leaks = true, .report_when_clean = false}});
  const Stream stream(device);
  StepTimer timer(device);

  auto load = [&](const HostBuffer& host, const Shape& shape, std::uint64_t& uploaded) {
    if (use_cache) return ctx.cache().upload(host, shape, DType::f32, stream, {.tag = "weights"});
    uploaded += host.size();
    return ctx.upload(host.bytes(), shape, DType::f32, stream, "weights");
  };

  std::size_t device_bytes = 0;
  std::uint64_t uploaded_by_context = 0;
  const std::uint64_t cache_uploaded_before = ctx.cache().statistics().bytes_uploaded;
  for (auto _ : state) {
    std::vector<std::vector<DeviceTensor>> loaded(instances);
    timer.start(stream);
    for (auto& instance : loaded) {
      for (std::size_t layer = 0; layer < spec.layers; ++layer) {
        instance.push_back(load(model.weights(layer), model.weight_shape(), uploaded_by_context));
        instance.push_back(load(model.bias(layer), model.bias_shape(), uploaded_by_context));
      }
    }
    state.SetIterationTime(timer.stop(stream));
    device_bytes = ctx.statistics().live_bytes;
    // the instances drop here, untimed
  }
  const std::uint64_t uploaded =
      uploaded_by_context + ctx.cache().statistics().bytes_uploaded - cache_uploaded_before;
  set_count_counter(state, "instances", static_cast<double>(instances));
  set_bytes_counter(state, "device_bytes", static_cast<double>(device_bytes));
  set_bytes_counter(state, "bytes_uploaded",
                    static_cast<double>(uploaded) / static_cast<double>(state.iterations()));
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(instances));
  set_predicted_counter(state, timer);
  check_for_leaks(ctx, state, name);
}

void dedup_settings(benchmark::internal::Benchmark* bench) {
  bench->ArgName("instances")
      ->Arg(1)
      ->Arg(2)
      ->Arg(4)
      ->Arg(8)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(bm_dedup, gpulife_cache, true)
    ->Name("dedup/load/gpulife_cache")
    ->Apply(dedup_settings);
BENCHMARK_CAPTURE(bm_dedup, no_cache, false)->Name("dedup/load/no_cache")->Apply(dedup_settings);

}  // namespace
}  // namespace gpulife::bench
