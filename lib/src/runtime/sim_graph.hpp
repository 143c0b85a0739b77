// SPDX-License-Identifier: Apache-2.0
#pragma once

// The simulated device's model of stream capture and CUDA graphs (sim_graph.cpp).
//
// A capture sequence (SimCapture) starts on one stream (its origin, lane 0). Work queued on a
// capturing stream is recorded as a node instead of queued; a stream that waits on an event
// recorded in the capture joins it as a new lane (CUDA's cross-stream capture). Event records
// and waits inside the capture become the graph's edges: each lane keeps a vector of how many
// operations of every lane it depends on, so that `end_capture` can tell whether every joined
// lane was joined back into the origin (cudaErrorStreamCaptureUnjoined otherwise).
//
// Replay (SimGraphExec::launch) re-issues every node, in capture order (a topological order),
// through the ordinary stream calls: lane 0 on the launch stream, the other lanes on streams the
// executable owns, the captured records and waits on events it owns, forked from and joined back
// into the launch stream. Replayed work is therefore checked exactly as live work is: ranges at
// execution, poison, and the race detector's happens-before order at enqueue.
//
// The misuses CUDA refuses during capture fail with CUDA's error codes (CudaError) and, as CUDA
// does, invalidate the capture: synchronising or querying a capturing stream, querying or
// synchronising an event recorded in a capture, synchronising the device, a potentially unsafe
// call (cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost) under the capture modes' rules,
// waiting from a capturing stream on an event recorded outside it or in another capture.
//
// Lock order: SimCaptures::mutex_ before SimCapture::mutex before SimCaptureSlot's and
// SimEvent's locks; end_capture releases the capture's lock before it takes the registry's.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gpulife/runtime/capture_mode.hpp>
#include <gpulife/runtime/detail/backend.hpp>

namespace gpulife::detail::sim {

class SimDevice;
class SimStream;
class SimEvent;
class SimEventNode;

struct SimGraphNode {
  enum class Kind : std::uint8_t { op, record, wait };
  Kind kind = Kind::op;
  std::uint32_t lane = 0;
  std::uint32_t slot = 0;                   // record, wait: the captured event record
  std::function<void(SimStream&)> replay;  // op: issues it again on the lane's stream
};

// One capture sequence. Everything below `mutex` is guarded by it.
class SimCapture {
 public:
  SimCapture(std::uint64_t capture_id, CaptureMode capture_mode, SimStream& origin_stream);

  const std::uint64_t id;
  const CaptureMode mode;
  const std::thread::id thread;  // the thread that began it
  SimStream* const origin;

  std::mutex mutex;
  bool invalidated = false;
  bool ended = false;
  std::vector<SimStream*> lanes;                   // lane 0: the origin
  std::vector<std::vector<std::uint32_t>> seen;    // seen[l][k]: ops of lane k that l follows
  std::vector<std::vector<std::uint32_t>> slots;   // a record's snapshot of its lane's `seen`
  std::vector<SimGraphNode> nodes;

  /// The lane of `stream`, adding it when `join` (mutex held); -1 if absent and not joined.
  int lane_of(const SimStream& stream) const noexcept;
  std::uint32_t join(SimStream& stream);
};

// A stream's membership in a capture. Read on every queued operation: an atomic flag keeps the
// common case (not capturing) free of locks.
class SimCaptureSlot {
 public:
  [[nodiscard]] bool active() const noexcept { return active_.load(std::memory_order_acquire); }
  [[nodiscard]] std::shared_ptr<SimCapture> get() const {
    if (!active()) return nullptr;
    std::scoped_lock lock(mutex_);
    return capture_;
  }
  void set(std::shared_ptr<SimCapture> capture) {
    std::scoped_lock lock(mutex_);
    active_.store(capture != nullptr, std::memory_order_release);
    capture_ = std::move(capture);
  }

 private:
  std::atomic<bool> active_{false};
  mutable std::mutex mutex_;
  std::shared_ptr<SimCapture> capture_;
};

// The device's captures and the checks the stream and memory calls make against them.
class SimCaptures {
 public:
  explicit SimCaptures(SimDevice& device) noexcept : device_(device) {}

  /// True while some capture of this device is under way (the memory calls' fast path).
  [[nodiscard]] bool any() const noexcept { return active_.load(std::memory_order_acquire) > 0; }

  void begin(SimStream& stream, CaptureMode mode);
  std::unique_ptr<GraphImpl> end(SimStream& stream);
  CaptureInfo info(const SimStream& stream) const;

  // ---- hooks of SimStream's calls on a capturing stream ----
  /// Records an operation of `stream` into `capture`. @throws CudaError if invalidated.
  void capture_op(SimCapture& capture, SimStream& stream, const char* call,
                  std::function<void(SimStream&)> replay);
  /// cudaMemcpyAsync: a copy from or to pageable host memory cannot be captured (CUDA stages it
  /// synchronously): cudaErrorStreamCaptureUnsupported, the capture invalidated.
  void capture_copy(SimCapture& capture, SimStream& stream, void* dst, const void* src,
                    std::size_t bytes, CopyKind kind);
  void capture_record(const std::shared_ptr<SimCapture>& capture, SimStream& stream,
                      SimEvent& event);
  /// Handles a wait that involves a capture (the stream captures, or the event was recorded in
  /// a capture); returns false for an ordinary wait, which the stream then queues.
  bool capture_wait(SimStream& stream, SimEvent& event);
  /// cudaStreamSynchronize / cudaStreamQuery: invalid on a capturing stream.
  void stream_sync(const SimStream& stream, const char* call);
  /// cudaEventQuery / cudaEventSynchronize on an event whose latest record was captured:
  /// invalid while that capture lasts; afterwards the record counts as reached.
  void event_host_call(const SimEventNode& node, const char* call);
  /// cudaDeviceSynchronize: invalid while any capture is under way.
  void device_sync(const char* call);
  /// A potentially unsafe call (cudaMalloc...): throws if the capture modes forbid it.
  void unsafe_call(const char* call);
  /// The same for noexcept calls (cudaFree...): reports the misuse, returns true if forbidden.
  bool unsafe_call_reported(const char* call) noexcept;
  /// cudaMallocAsync / cudaFreeAsync on a capturing stream (graph memory nodes): not modelled.
  void stream_ordered_allocation(SimStream& stream, const char* call);
  CaptureMode exchange_mode(CaptureMode mode) noexcept;

  /// cudaFree's own device synchronisation is part of the call, not one of the program's.
  class FreeScope {
   public:
    FreeScope() noexcept;
    ~FreeScope();
    FreeScope(const FreeScope&) = delete;
    FreeScope& operator=(const FreeScope&) = delete;
  };

 private:
  std::vector<std::shared_ptr<SimCapture>> forbidding_unsafe_calls();
  static void invalidate(SimCapture& capture) noexcept;
  void finish(SimCapture& capture);

  SimDevice& device_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<SimCapture>> captures_;  // under way
  std::atomic<std::size_t> active_{0};
};

}  // namespace gpulife::detail::sim
