// SPDX-License-Identifier: Apache-2.0
// What leak mode costs on the allocation path, and that it costs nothing when off.
//
// Every family makes a tensor and drops it. The memory comes from a host-side free list that
// never calls the device, so the figures are those of gpulife's own path (control block, counters,
// hooks) and not of the simulated device's queues.
//
// debug/create_drop/<mode>        Context::empty + drop of a 4 KiB tensor, per debug mode
// debug/create_drop_empty/<mode>  the same with a zero-byte tensor: no memory at all, the
//                                 smallest path there is, so a fixed cost shows most
// debug/arena_create_drop/<obs>   the tensor arena's own create + release with no observer and
//                                 with an observer whose hooks do nothing: "tracking_off" pays
//                                 the untaken branch of the first, the second bounds what any
//                                 installed hook machinery costs (two taken branches and two
//                                 virtual calls per tensor)

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gpulife/context.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

/// Fixed-size host blocks from a free list: a stand-in for a pool hit that makes no device call.
class HostFreeListResource final : public DeviceMemoryResource {
 public:
  explicit HostFreeListResource(Device device) : DeviceMemoryResource(std::move(device)) {}

 private:
  static constexpr std::size_t block = 4096;
  void* do_allocate(std::size_t bytes, StreamView) override {
    if (bytes > block) throw std::bad_alloc();
    std::scoped_lock lock(mutex_);
    if (free_.empty()) {
      storage_.push_back(std::make_unique<std::byte[]>(block));
      return storage_.back().get();
    }
    void* ptr = free_.back();
    free_.pop_back();
    return ptr;
  }
  void do_deallocate(void* ptr, std::size_t, StreamView) noexcept override {
    std::scoped_lock lock(mutex_);
    free_.push_back(ptr);  // capacity: at most as many blocks as were handed out
  }
  std::string do_name() const override { return "host-free-list"; }
  ResourceStatistics do_statistics() const override { return {}; }

  std::mutex mutex_;
  std::vector<std::unique_ptr<std::byte[]>> storage_;
  std::vector<void*> free_;
};

enum class Mode { tracking_off, tracking_on, tracking_on_stacks, timeline };

DebugOptions options_for(Mode mode) {
  DebugOptions debug;
  debug.use_environment = false;  // the figures are for the mode named, whatever the shell says
  debug.leaks = mode == Mode::tracking_on || mode == Mode::tracking_on_stacks;
  debug.stacks = mode == Mode::tracking_on_stacks;
  debug.timeline = mode == Mode::timeline;
  return debug;
}

/// One context per mode, shared by the threads of a multi-threaded run.
Context& context_for(Mode mode) {
  static std::mutex mutex;
  static std::map<Mode, std::unique_ptr<Context>> contexts;
  std::scoped_lock lock(mutex);
  auto& context = contexts[mode];
  if (!context) {
    Device device = Device::sim();
    auto resource = std::make_shared<HostFreeListResource>(device);
    context = std::make_unique<Context>(
        ContextOptions{.device = device, .resource = resource, .debug = options_for(mode)});
  }
  return *context;
}

void create_drop(benchmark::State& state, Mode mode, std::int64_t elements) {
  Context& ctx = context_for(mode);
  const Shape shape{elements};
  for (auto _ : state) {
    DeviceTensor t = ctx.empty(shape, DType::u8);
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(create_drop, tracking_off, Mode::tracking_off, 4096)
    ->Name("debug/create_drop/tracking_off");
BENCHMARK_CAPTURE(create_drop, tracking_on, Mode::tracking_on, 4096)
    ->Name("debug/create_drop/tracking_on");
BENCHMARK_CAPTURE(create_drop, tracking_on_stacks, Mode::tracking_on_stacks, 4096)
    ->Name("debug/create_drop/tracking_on_stacks");
BENCHMARK_CAPTURE(create_drop, timeline, Mode::timeline, 4096)->Name("debug/create_drop/timeline");
BENCHMARK_CAPTURE(create_drop, tracking_off_2_threads, Mode::tracking_off, 4096)
    ->Name("debug/create_drop/tracking_off")
    ->Threads(2)
    ->UseRealTime();
BENCHMARK_CAPTURE(create_drop, tracking_on_2_threads, Mode::tracking_on, 4096)
    ->Name("debug/create_drop/tracking_on")
    ->Threads(2)
    ->UseRealTime();

BENCHMARK_CAPTURE(create_drop, empty_tracking_off, Mode::tracking_off, 0)
    ->Name("debug/create_drop_empty/tracking_off");
BENCHMARK_CAPTURE(create_drop, empty_tracking_on, Mode::tracking_on, 0)
    ->Name("debug/create_drop_empty/tracking_on");

/// Hooks that do nothing: what an installed observer costs before it does any work.
class NoopObserver final : public detail::TensorObserver {
 public:
  void on_create(detail::TensorImpl&, const SourceLocation&) noexcept override {}
  void on_release(detail::TensorImpl&) noexcept override {}
  void on_event(LifetimeEvent, std::uint64_t, std::size_t, std::string_view,
                std::uint64_t) noexcept override {}
};

void arena_create_drop(benchmark::State& state, bool observer) {
  Device device = Device::sim();
  detail::TensorArena* arena =
      detail::TensorArena::create({device, std::make_shared<HostFreeListResource>(device), {}});
  if (observer) arena->set_observer(std::make_shared<NoopObserver>());
  detail::StreamImpl& stream = device.impl().default_stream();
  const Shape shape{4096};
  for (auto _ : state) {
    detail::TensorImpl* impl =
        arena->create(shape, DType::u8, stream, {}, SourceLocation::current());
    benchmark::DoNotOptimize(impl);
    detail::drop_strong(impl);
  }
  state.SetItemsProcessed(state.iterations());
  arena->unref();
}

BENCHMARK_CAPTURE(arena_create_drop, no_observer, false)
    ->Name("debug/arena_create_drop/no_observer");
BENCHMARK_CAPTURE(arena_create_drop, noop_observer, true)
    ->Name("debug/arena_create_drop/noop_observer");

}  // namespace
}  // namespace gpulife

BENCHMARK_MAIN();
