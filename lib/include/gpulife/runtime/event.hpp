// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Event`: an owning handle to a device event.

#include <memory>

#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

class Device;

/// @brief An owning, move-only handle to a device event (cudaEvent_t, timing disabled).
///
/// Events come from a per-device pool, so creating one in a hot path costs no driver call once
/// the pool is warm. Record with `StreamView::record`, wait with `StreamView::wait`.
class Event {
 public:
  /// An empty handle.
  Event() noexcept = default;
  /// @brief Takes an event from the device's pool.
  /// @throws CudaError if the device cannot create one
  explicit Event(const Device& device);
  /// Takes `other`'s event; `other` becomes empty.
  Event(Event&& other) noexcept;
  /// Returns this handle's event to its pool and takes `other`'s.
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  /// Returns the event to its pool; pending records stay valid for streams that wait on them.
  ~Event();

  /// @return true when the work captured by the latest record has executed, or if never recorded
  /// @throws std::invalid_argument if empty
  [[nodiscard]] bool query() const;
  /// @brief Blocks the host until `query()` would return true.
  /// @throws std::invalid_argument if empty
  void synchronize() const;
  /// @brief Same as `stream.record(*this)`.
  void record(StreamView stream) const { stream.record(*this); }

  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  /// @return the backend event (null if empty)
  [[nodiscard]] detail::EventImpl* impl() const noexcept { return impl_; }
  /// @return the backend device the event belongs to (null if empty)
  [[nodiscard]] detail::DeviceImpl* device_impl() const noexcept { return device_.get(); }

 private:
  std::shared_ptr<detail::DeviceImpl> device_;
  detail::EventImpl* impl_ = nullptr;
};

}  // namespace gpulife
