// SPDX-License-Identifier: Apache-2.0
// What the simulated device's race detection costs per queued operation
// (gpulife_bench_sim_races).
//
// sim_races/queue/<races_off|races_on>
//     two streams, each iteration queues on each a memset, a kernel that reads the buffer and a
//     device-to-device copy of it, and an event record on one that the other waits for: 8
//     operations, with a device synchronisation every 64 iterations. Small buffers (4 KiB), so
//     that the figure is the queue's and the checks', not memcpy's. items_per_second is queued
//     operations per second of wall time; CPU is the queueing thread's.
// sim_races/upload_pinned/<races_off|races_on>
//     a pinned 64 KiB upload and a synchronisation per iteration: the guard of pinned memory
//     (mprotect) is in this path

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstring>

#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/launch.hpp>

namespace gpulife {
namespace {

Device make_device(bool races) {
  SimOptions options;
  options.races = races;
  options.poison = false;  // as the other benchmarks: a memset of every freed byte
  options.fill_fresh = false;
  return Device::sim(options);
}

void queue_ops(benchmark::State& state, bool races) {
  constexpr std::size_t bytes = 4096;
  const Device device = make_device(races);
  Stream a(device);
  Stream b(device);
  Event a_done(device);
  auto* x = static_cast<unsigned char*>(device.impl().allocate(bytes));
  auto* y = static_cast<unsigned char*>(device.impl().allocate(bytes));
  auto* x2 = static_cast<unsigned char*>(device.impl().allocate(bytes));
  auto* y2 = static_cast<unsigned char*>(device.impl().allocate(bytes));
  std::size_t iterations = 0;
  for (auto _ : state) {
    a.view().memset(x, 1, bytes);
    b.view().memset(y, 2, bytes);
    for_each_index(
        a, 1, [x](std::size_t) { benchmark::DoNotOptimize(x[0]); }, {{x, bytes, Access::read}},
        "read_x");
    for_each_index(
        b, 1, [y](std::size_t) { benchmark::DoNotOptimize(y[0]); }, {{y, bytes, Access::read}},
        "read_y");
    a.view().copy(x2, x, bytes, CopyKind::device_to_device);
    b.view().copy(y2, y, bytes, CopyKind::device_to_device);
    a.view().record(a_done);
    b.view().wait(a_done);  // b's next copy reads nothing of a's, but the order is real
    if (++iterations % 64 == 0) device.synchronize();
  }
  device.synchronize();
  state.SetItemsProcessed(static_cast<std::int64_t>(iterations) * 8);
  state.counters["violations"] = static_cast<double>(device.violation_count());
  for (void* p : {x, y, x2, y2}) device.impl().deallocate(p, bytes);
}

void upload_pinned(benchmark::State& state, bool races) {
  constexpr std::size_t bytes = 64 << 10;
  const Device device = make_device(races);
  Stream stream(device);
  auto* pinned = static_cast<unsigned char*>(device.allocate_pinned(bytes));
  std::memset(pinned, 1, bytes);
  void* dst = device.impl().allocate(bytes);
  for (auto _ : state) {
    stream.view().copy(dst, pinned, bytes, CopyKind::host_to_device);
    stream.synchronize();
    pinned[0] = 2;  // the host writes the next batch once the copy is done
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["violations"] = static_cast<double>(device.violation_count());
  device.impl().deallocate(dst, bytes);
  device.deallocate_pinned(pinned);
}

BENCHMARK_CAPTURE(queue_ops, races_off, false)->Name("sim_races/queue/races_off")->UseRealTime();
BENCHMARK_CAPTURE(queue_ops, races_on, true)->Name("sim_races/queue/races_on")->UseRealTime();
BENCHMARK_CAPTURE(upload_pinned, races_off, false)
    ->Name("sim_races/upload_pinned/races_off")
    ->UseRealTime();
BENCHMARK_CAPTURE(upload_pinned, races_on, true)
    ->Name("sim_races/upload_pinned/races_on")
    ->UseRealTime();

}  // namespace
}  // namespace gpulife
