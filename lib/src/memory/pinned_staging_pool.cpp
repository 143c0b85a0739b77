// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/pinned_staging_pool.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>

namespace gpulife {

struct PinnedStagingPool::State {
  struct Buffer {
    std::byte* data = nullptr;
    Event copied;                          // recorded behind the buffer's last copy
    detail::StreamImpl* stream = nullptr;  // of the last copy
  };

  Device device;
  StagingOptions options;
  std::mutex mutex;
  std::condition_variable available;
  std::vector<Buffer> buffers;     // allocated on first use
  std::deque<std::size_t> free;    // buffers no upload holds, least recently used first
  bool allocated = false;

  /// A free buffer, taken in ring order: the one released longest ago, unless a later one has
  /// already finished its DMA while that one has not. The caller then waits for the buffer's
  /// previous copy (the oldest, so the likeliest to be done), but never while another free
  /// buffer's copy has executed: host copies overlap the DMA of earlier chunks.
  Buffer& acquire() {
    std::unique_lock lock(mutex);
    if (!allocated) allocate_buffers();
    for (;;) {
      available.wait(lock, [&] { return !free.empty(); });
      // The events are queried without the lock (device calls). They are made with the
      // buffers and never replaced, so a concurrent record on them is safe.
      const std::vector<std::size_t> candidates(free.begin(), free.end());
      lock.unlock();
      std::size_t chosen = candidates.front();
      for (std::size_t index : candidates) {
        if (buffers[index].copied.query()) {
          chosen = index;
          break;
        }
      }
      lock.lock();
      auto it = std::find(free.begin(), free.end(), chosen);
      if (it == free.end()) {
        if (free.empty()) continue;  // all taken meanwhile: wait again
        it = free.begin();           // taken meanwhile: the oldest still free
      }
      const std::size_t index = *it;
      free.erase(it);
      return buffers[index];
    }
  }

  void allocate_buffers() {  // mutex held
    PinnedHostCache& cache = device.pinned_host_cache();
    buffers.reserve(options.buffers);
    try {
      for (std::size_t i = 0; i < options.buffers; ++i) {
        Buffer buffer;
        buffer.copied = Event(device);
        buffer.data = static_cast<std::byte*>(cache.allocate(options.buffer_bytes));
        buffers.push_back(std::move(buffer));
      }
    } catch (...) {
      for (Buffer& buffer : buffers) cache.deallocate(buffer.data);
      buffers.clear();
      throw;
    }
    for (std::size_t i = 0; i < options.buffers; ++i) free.push_back(i);
    allocated = true;
  }

  void release(Buffer& buffer) {
    {
      std::scoped_lock lock(mutex);
      free.push_back(static_cast<std::size_t>(&buffer - buffers.data()));
    }
    available.notify_one();
  }
};

PinnedStagingPool::PinnedStagingPool(Device device, StagingOptions options)
    : state_(std::make_unique<State>()) {
  if (!device.valid()) throw std::invalid_argument("device: empty Device");
  if (options.buffer_bytes == 0) throw std::invalid_argument("buffer_bytes: must be > 0");
  if (options.buffers == 0) throw std::invalid_argument("buffers: must be > 0");
  state_->device = std::move(device);
  state_->options = options;
}

PinnedStagingPool::~PinnedStagingPool() {
  PinnedHostCache& cache = state_->device.pinned_host_cache();
  for (State::Buffer& buffer : state_->buffers) {
    try {
      // A DMA may still read the buffer: the cache reuses it only after the copy has executed.
      if (buffer.stream != nullptr && !buffer.copied.query()) {
        (void)cache.record_use(buffer.data, StreamView{buffer.stream});
      }
    } catch (const std::exception& e) {
      report_error(std::string("PinnedStagingPool: recording the last copy of a buffer failed, "
                               "waiting for it: ") + e.what());
      try {
        buffer.copied.synchronize();
      } catch (...) {
        report_error("PinnedStagingPool: waiting for a copy failed; the buffer is kept");
        continue;
      }
    }
    cache.deallocate(buffer.data);
  }
}

const StagingOptions& PinnedStagingPool::options() const noexcept { return state_->options; }

void PinnedStagingPool::upload(void* dst, std::span<const std::byte> src, StreamView stream) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  if (&stream.device() != &state_->device.impl()) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() +
                                ", the staging pool to " + state_->device.name());
  }
  if (src.empty()) return;
  if (dst == nullptr) throw std::invalid_argument("dst: null pointer");
  State& state = *state_;
  const std::size_t chunk = state.options.buffer_bytes;
  for (std::size_t offset = 0; offset < src.size(); offset += chunk) {
    const std::size_t bytes = std::min(chunk, src.size() - offset);
    State::Buffer& buffer = state.acquire();
    try {
      // The buffer's previous DMA must be done before it is overwritten.
      buffer.copied.synchronize();
      state.device.impl().host_access(buffer.data, bytes, Access::write);
      std::memcpy(buffer.data, src.data() + offset, bytes);
      stream.copy(static_cast<std::byte*>(dst) + offset, buffer.data, bytes,
                  CopyKind::host_to_device);
      stream.record(buffer.copied);
      buffer.stream = stream.impl();
    } catch (...) {
      // An unrecorded event would let the next user overwrite a buffer a DMA may still read.
      try {
        stream.synchronize();
      } catch (...) {
        report_error("PinnedStagingPool: stream synchronize failed after a failed copy");
      }
      state.release(buffer);
      throw;
    }
    state.release(buffer);
  }
}

}  // namespace gpulife
