// SPDX-License-Identifier: Apache-2.0
// The README's quick start, compiled and run by the tests so that it stays true.
//
// TODO(cache): upload through the TensorCache once it lands (identical bytes are then uploaded
// once and shared while in use):
//   DeviceTensor weights = ctx.cache().upload(std::as_bytes(std::span(w)), {64, 64}, DType::f32,
//                                             stream);

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
  DeviceTensor weights = ctx.upload(std::span<const float>(w), {64, 64}, stream, "w");
  kernels::fill(stream, weights.data<float>(), 64, 1.0F);  // a kernel on the tensor's memory
  WeakTensor watcher = weights;                            // does not keep the memory alive
  Finalizer note = weights.on_release([](const TensorInfo& t) {
    std::printf("released %s (%zu bytes)\n", t.tag.c_str(), t.bytes);
  });
  weights.reset();  // the last handle: memory back to the pool in stream order, then `note` runs
  // --8<-- [quickstart]
  std::printf("%s: weak reference %s, finalizer %s\n", ctx.device().name().c_str(),
              watcher.expired() ? "expired" : "ALIVE", note.alive() ? "PENDING" : "ran");
  return watcher.expired() && !note.alive() ? 0 : 1;
}
