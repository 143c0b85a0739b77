// SPDX-License-Identifier: Apache-2.0
// The README's quick start, compiled and run by the tests so that it stays true.

#include <cstdio>
#include <span>
#include <vector>

#include <gpulife/gpulife.hpp>
#include <gpulife/kernels/fill.hpp>

int main() {
  using namespace gpulife;
  // --8<-- [quickstart]
  Context ctx;  // CUDA if a GPU answers, else the simulated device
  Stream stream(ctx.device());
  std::vector<float> w(64 * 64, 0.5F);
  DeviceTensor weights = ctx.cache().upload(std::span<const float>(w), {64, 64}, stream, {.tag = "w"});
  DeviceTensor again = ctx.cache().upload(std::span<const float>(w), {64, 64});  // hit: no upload
  DeviceTensor out = ctx.empty({64}, DType::f32, stream, "out");
  kernels::fill(stream, out.data<float>(), 64, 1.0F);  // your kernel, on raw device pointers
  WeakTensor watcher = weights;                        // does not keep the memory alive
  Finalizer note = weights.on_release([](const TensorInfo& t) {
    std::printf("released %s (%zu bytes)\n", t.tag.c_str(), t.bytes);
  });
  weights.reset();
  again.reset();  // the last handle: memory back to the pool in stream order, then `note` runs
  // --8<-- [quickstart]
  const CacheStatistics stats = ctx.cache().statistics();
  std::printf("%s: cache %llu hit, %llu miss; weak reference %s, finalizer %s\n",
              ctx.device().name().c_str(), static_cast<unsigned long long>(stats.hits),
              static_cast<unsigned long long>(stats.misses), watcher.expired() ? "expired" : "ALIVE",
              note.alive() ? "PENDING" : "ran");
  return watcher.expired() && !note.alive() && stats.hits == 1 && stats.misses == 1 ? 0 : 1;
}
