// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Stream`: an owning handle to a device stream.

#include <memory>

#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

class Device;

/// @brief An owning, move-only handle to a non-blocking device stream.
///
/// Streams come from a per-device pool. Destroying a `Stream` does not wait: work already queued
/// still executes (as with cudaStreamDestroy), and the queue returns to the pool for reuse, so
/// a tensor whose release is ordered on it never lands on a destroyed stream.
class Stream {
 public:
  /// An empty handle.
  Stream() noexcept = default;
  /// @brief Takes a stream from the device's pool.
  /// @throws CudaError if the device cannot create one
  explicit Stream(const Device& device);
  /// Takes `other`'s stream; `other` becomes empty.
  Stream(Stream&& other) noexcept;
  /// Returns this handle's stream to its pool and takes `other`'s.
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  /// @return a view of the stream (empty if this handle is empty)
  [[nodiscard]] StreamView view() const noexcept { return StreamView{impl_}; }
  /// @return `view()`: a `Stream` converts implicitly, like RMM's `cuda_stream`
  operator StreamView() const noexcept { return view(); }  // NOLINT: implicit, like RMM's
  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }

  /// Shorthands for the view's operations.
  void synchronize() const { view().synchronize(); }
  /// @return the stream's process-unique id (0 if empty)
  [[nodiscard]] std::uint64_t id() const noexcept { return view().id(); }

 private:
  std::shared_ptr<detail::DeviceImpl> device_;
  detail::StreamImpl* impl_ = nullptr;
};

}  // namespace gpulife
