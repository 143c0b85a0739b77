// SPDX-License-Identifier: Apache-2.0
// libgpulife_dlpack_shim: a C interface over gpulife's DLPack interop for the GPU check's round
// trip with the PyTorch found on the GPU machine (tools/gpucheck/dlpack_torch.py, through
// ctypes: nothing is compiled there). It borrows a producer's tensor, copies it into a tensor of
// gpulife's own on the consumer's stream, and lends that back; it counts the deleters that run,
// so that the script can check each side's memory was given back exactly once.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include <dlpack/dlpack.h>

#include <gpulife/gpulife.hpp>
#include <gpulife/interop/dlpack.hpp>

namespace {

std::mutex mutex;
std::unique_ptr<gpulife::Context> context;
std::unique_ptr<gpulife::Stream> work;
// The deleter each counted tensor had; `true`: the producer's, `false`: gpulife's export.
std::unordered_map<DLManagedTensor*, std::pair<void (*)(DLManagedTensor*), bool>> original_deleters;
std::atomic<int> producer_deletes{0};
std::atomic<int> export_deletes{0};

void counting_deleter(DLManagedTensor* managed) {
  std::pair<void (*)(DLManagedTensor*), bool> original{nullptr, false};
  {
    std::scoped_lock lock(mutex);
    auto it = original_deleters.find(managed);
    if (it == original_deleters.end()) {
      std::fprintf(stderr, "gpulife shim: a deleter ran twice, or for an unknown tensor\n");
      return;
    }
    original = it->second;
    original_deleters.erase(it);
  }
  ++(original.second ? producer_deletes : export_deletes);
  original.first(managed);
}

void count(DLManagedTensor* managed, bool producer) {
  std::scoped_lock lock(mutex);
  original_deleters[managed] = {managed->deleter, producer};
  managed->deleter = &counting_deleter;
}

}  // namespace

extern "C" {

/// Makes the context (on Device::select()'s device); 0 on success.
int gpulife_shim_init() {
  try {
    std::scoped_lock lock(mutex);
    if (!context) {
      context = std::make_unique<gpulife::Context>();
      work = std::make_unique<gpulife::Stream>(context->device());
    }
    std::printf("gpulife shim on %s\n", context->device().name().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife shim: %s\n", e.what());
    return 1;
  }
}

/// Borrows `managed` (the producer's, ordered on `stream`, a raw cudaStream_t as the consumer
/// passes it), copies it into a new gpulife tensor and lends that back to the caller for the
/// same stream. Null on failure (then the caller still owns `managed`).
DLManagedTensor* gpulife_shim_round_trip(DLManagedTensor* managed, std::intptr_t stream) {
  try {
    gpulife::Context& ctx = *context;
    // The producer's stream, as it passed it; gpulife's own stream for the copy.
    const std::shared_ptr<gpulife::detail::StreamImpl> theirs =
        ctx.device().impl().native_stream(reinterpret_cast<void*>(stream));
    const gpulife::StreamView producer{theirs.get()};
    const gpulife::StreamView on = *work;
    count(managed, true);
    gpulife::DeviceTensor borrowed;
    try {
      borrowed = gpulife::from_dlpack(ctx, managed, producer, "torch");
    } catch (...) {
      std::scoped_lock lock(mutex);
      managed->deleter = original_deleters[managed].first;
      original_deleters.erase(managed);
      throw;
    }
    gpulife::DeviceTensor copy = ctx.empty(borrowed.shape(), borrowed.dtype(), on, "round trip");
    gpulife::Event ready(ctx.device());
    producer.record(ready);
    on.wait(ready);
    on.copy(copy.data(), borrowed.data(), borrowed.bytes(), gpulife::CopyKind::device_to_device);
    borrowed.record_stream(on);
    borrowed.reset();  // the producer's deleter runs here, once the copy has executed
    DLManagedTensor* lent = gpulife::to_dlpack(copy, gpulife::DLPackStream{stream});
    count(lent, false);
    return lent;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife shim: %s\n", e.what());
    return nullptr;
  }
}

/// Counts the deleters run so far and gpulife's live tensors; destroys the context when
/// `finish` is set.
void gpulife_shim_counts(int* producer, int* exported, long* live_tensors, int finish) {
  *producer = producer_deletes.load();
  *exported = export_deletes.load();
  *live_tensors = context ? static_cast<long>(context->statistics().live_tensors) : -1;
  if (finish != 0) {
    std::scoped_lock lock(mutex);
    work.reset();
    context.reset();
  }
}

}  // extern "C"
