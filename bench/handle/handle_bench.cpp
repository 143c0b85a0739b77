// SPDX-License-Identifier: Apache-2.0
// Copying and dropping a tensor handle, against the same with std::shared_ptr:
//
//   handle/copy_drop/gpulife          DeviceTensor copy + drop (one atomic increment, one
//                                     decrement)
//   handle/copy_drop/std_shared_ptr   std::shared_ptr copy + drop of a plain tensor description
//
// On one thread, and on two threads sharing the one handle: the second run measures what the
// contended reference count costs (its cache line moves between the cores).

#include <cstddef>
#include <memory>
#include <optional>

#include <benchmark/benchmark.h>

#include <gpulife/context.hpp>

#include "support/bench_support.hpp"

namespace gpulife::bench {
namespace {

/// What the std::shared_ptr baseline points at: a tensor's description, without device memory.
struct PlainTensor {
  void* data = nullptr;
  std::size_t bytes = 0;
  Shape shape{};
};

// Made by thread 0 before the benchmark loop and dropped after it: Google Benchmark starts and
// ends the loop of all threads together, so no thread sees them half made.
std::optional<Context> shared_context;
DeviceTensor shared_tensor;
std::shared_ptr<PlainTensor> shared_plain;

void bm_copy_drop_gpulife(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_context.emplace(ContextOptions{.device = bench_device()});
    shared_tensor = shared_context->empty({256}, DType::f32, {}, "shared");
  }
  for (auto _ : state) {
    DeviceTensor copy = shared_tensor;
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    shared_tensor.reset();
    check_for_leaks(*shared_context, state, "handle/copy_drop/gpulife");
    shared_context.reset();
  }
}

void bm_copy_drop_shared_ptr(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_plain = std::make_shared<PlainTensor>(PlainTensor{nullptr, 1024, Shape{256}});
  }
  for (auto _ : state) {
    std::shared_ptr<PlainTensor> copy = shared_plain;
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) shared_plain.reset();
}

BENCHMARK(bm_copy_drop_gpulife)
    ->Name("handle/copy_drop/gpulife")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(bm_copy_drop_shared_ptr)
    ->Name("handle/copy_drop/std_shared_ptr")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace gpulife::bench
