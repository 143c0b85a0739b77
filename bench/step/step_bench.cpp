// SPDX-License-Identifier: Apache-2.0
// One inference step of a small multi-layer model, four ways on the same work (step.hpp):
//
//   step/realloc   allocate, upload the weights, run, free: every step (cudaMalloc/cudaFree)
//   step/async     the same with cudaMallocAsync/cudaFreeAsync
//   step/pool      a pool for every tensor; the weights still uploaded every step
//   step/cache     the pool, and the weights through the TensorCache: uploaded once, hit after
//
// Steady state: one untimed step first fills the pool and the cache. Times are CUDA-event times
// on a GPU and host-clock times (stream synchronised at the end of each step) on the simulated
// device. Counters per step: bytes_uploaded, upstream_allocs (allocations that reached the
// device); device_bytes is the most device memory held at once, device_bytes_held what the
// strategy keeps between steps.

#include <string>

#include <benchmark/benchmark.h>

#include "step/step.hpp"
#include "support/bench_support.hpp"
#include "support/model.hpp"

namespace gpulife::bench {
namespace {

void bm_step(benchmark::State& state, Strategy strategy) {
  const std::string name = "step/" + std::string(to_string(strategy));
  const Device& device = bench_device();
  const HostModel& model = host_model(model_for(device.kind()));
  StepRunner runner(strategy, model, device);
  runner.step();
  if (!model.matches_reference(runner.output())) {
    state.SkipWithError("the step's output differs from the host reference");
  }
  const StepCounters before = runner.counters();
  StepTimer timer(device);
  time_steps(state, timer, runner);
  if (!model.matches_reference(runner.output())) {
    state.SkipWithError("the step's output differs from the host reference");
  }
  const StepCounters after = runner.counters();
  if (after.steps > before.steps) {
    const auto steps = static_cast<double>(after.steps - before.steps);
    set_bytes_counter(state, "bytes_uploaded",
                      static_cast<double>(after.bytes_uploaded - before.bytes_uploaded) / steps);
    set_count_counter(
        state, "upstream_allocs",
        static_cast<double>(after.upstream_allocations - before.upstream_allocations) / steps);
    set_bytes_counter(state, "device_bytes", static_cast<double>(after.device_bytes_peak));
    set_bytes_counter(state, "device_bytes_held", static_cast<double>(after.device_bytes_held));
  }
  state.SetItemsProcessed(state.iterations());  // steps per second
  set_predicted_counter(state, timer);
  check_for_leaks(runner.context(), state, name);
}

void step_settings(benchmark::internal::Benchmark* bench) {
  bench->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(bm_step, realloc, Strategy::realloc)->Name("step/realloc")->Apply(step_settings);
BENCHMARK_CAPTURE(bm_step, async, Strategy::async)->Name("step/async")->Apply(step_settings);
BENCHMARK_CAPTURE(bm_step, pool, Strategy::pool)->Name("step/pool")->Apply(step_settings);
BENCHMARK_CAPTURE(bm_step, cache, Strategy::cache)->Name("step/cache")->Apply(step_settings);

}  // namespace
}  // namespace gpulife::bench
