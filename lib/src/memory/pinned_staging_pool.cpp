// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/pinned_staging_pool.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gpulife/error_handler.hpp>

namespace gpulife {

struct PinnedStagingPool::State {
  struct Buffer {
    std::byte* data = nullptr;
    Event copied;  // recorded behind the buffer's last copy
  };

  Device device;
  StagingOptions options;
  std::mutex mutex;
  std::condition_variable available;
  std::vector<Buffer> buffers;   // allocated on first use
  std::vector<std::size_t> free;  // indices of buffers no upload holds

  Buffer& acquire() {
    std::unique_lock lock(mutex);
    if (buffers.empty()) {
      buffers.reserve(options.buffers);
      free.reserve(options.buffers);
      try {
        for (std::size_t i = 0; i < options.buffers; ++i) {
          Buffer buffer;
          buffer.data = static_cast<std::byte*>(device.allocate_pinned(options.buffer_bytes));
          buffers.push_back(std::move(buffer));
          free.push_back(i);
        }
      } catch (...) {
        for (Buffer& buffer : buffers) device.deallocate_pinned(buffer.data);
        buffers.clear();
        free.clear();
        throw;
      }
    }
    available.wait(lock, [&] { return !free.empty(); });
    Buffer& buffer = buffers[free.back()];
    free.pop_back();
    return buffer;
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
  for (State::Buffer& buffer : state_->buffers) {
    try {
      if (buffer.copied.valid()) buffer.copied.synchronize();  // a DMA may still read it
    } catch (const std::exception& e) {
      report_error(std::string("PinnedStagingPool: waiting for a copy failed: ") + e.what());
    }
    state_->device.deallocate_pinned(buffer.data);
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
      if (buffer.copied.valid()) buffer.copied.synchronize();
      state.device.impl().host_access(buffer.data, bytes, Access::write);
      std::memcpy(buffer.data, src.data() + offset, bytes);
      stream.copy(static_cast<std::byte*>(dst) + offset, buffer.data, bytes,
                  CopyKind::host_to_device);
      if (!buffer.copied.valid()) buffer.copied = Event(state.device);
      stream.record(buffer.copied);
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
