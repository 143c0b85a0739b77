// SPDX-License-Identifier: Apache-2.0
// What the simulated device itself costs per queued operation, host clock, in each of its
// modes: a worker thread per stream (`threads`), or one seeded scheduler that runs the queues
// on the waiting thread (`seeded`). These are the sim's costs, not a GPU's.
//
//   sim/pageable_upload/<mode>/<bytes>  a copy from pageable memory (staged before it returns),
//                                       a stream synchronisation every 64 copies
//   sim/cross_stream/<mode>             memset on stream a, an event, stream b waits for it,
//                                       memset on b, synchronise b: a handoff between streams
//   sim/delayed_op/<max_us>             threads mode with SimOptions::delay: one queued memset,
//                                       then synchronise; the delay is uniform in [0, max_us]
//                                       µs, so a round costs about max_us / 2 µs plus the sim

#include <cstddef>
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/runtime/device.hpp>

namespace gpulife::bench {
namespace {

SimOptions mode_options(std::int64_t mode) {
  SimOptions options;
  options.schedule = mode == 0 ? SimSchedule::threads : SimSchedule::seeded;
  options.seed = 1;
  return options;
}

const char* mode_name(std::int64_t mode) { return mode == 0 ? "threads" : "seeded"; }

void bm_pageable_upload(benchmark::State& state) {
  const Device device = Device::sim(mode_options(state.range(0)));
  const auto bytes = static_cast<std::size_t>(state.range(1));
  const Stream stream(device);
  void* dst = device.impl().allocate(bytes);
  const std::vector<unsigned char> src(bytes, 7);
  std::int64_t copies = 0;
  for (auto _ : state) {
    stream.view().copy(dst, src.data(), bytes, CopyKind::host_to_device);
    if (++copies % 64 == 0) stream.synchronize();
  }
  stream.synchronize();
  device.impl().deallocate(dst, bytes);
  state.SetItemsProcessed(copies);
  state.SetBytesProcessed(copies * static_cast<std::int64_t>(bytes));
  state.SetLabel(mode_name(state.range(0)));
}

void bm_cross_stream(benchmark::State& state) {
  const Device device = Device::sim(mode_options(state.range(0)));
  const Stream a(device);
  const Stream b(device);
  const Event event(device);
  constexpr std::size_t bytes = 256;
  void* buffer = device.impl().allocate(bytes);
  for (auto _ : state) {
    a.view().memset(buffer, 1, bytes);
    a.view().record(event);
    b.view().wait(event);
    b.view().memset(buffer, 2, bytes);
    b.synchronize();
  }
  device.synchronize();
  device.impl().deallocate(buffer, bytes);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(mode_name(state.range(0)));
}

void bm_delayed_op(benchmark::State& state) {
  SimOptions options;
  options.delay = true;
  options.max_delay_us = static_cast<std::uint32_t>(state.range(0));
  const Device device = Device::sim(options);
  const Stream stream(device);
  constexpr std::size_t bytes = 256;
  void* buffer = device.impl().allocate(bytes);
  for (auto _ : state) {
    stream.view().memset(buffer, 1, bytes);
    stream.synchronize();
  }
  device.impl().deallocate(buffer, bytes);
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(bm_pageable_upload)
    ->Name("sim/pageable_upload")
    ->ArgNames({"seeded", "bytes"})
    ->ArgsProduct({{0, 1}, {256, 4096, 65536}});
BENCHMARK(bm_cross_stream)->Name("sim/cross_stream")->ArgNames({"seeded"})->Arg(0)->Arg(1);
BENCHMARK(bm_delayed_op)->Name("sim/delayed_op")->ArgNames({"max_us"})->Arg(0)->Arg(10)->Arg(40);

}  // namespace
}  // namespace gpulife::bench
