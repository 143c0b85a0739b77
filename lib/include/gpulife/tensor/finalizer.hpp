// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Finalizer`: the handle of a callback that runs once when a tensor's memory is released
/// (Python's `weakref.finalize`).

#include <functional>
#include <memory>
#include <optional>

#include <gpulife/tensor/tensor_info.hpp>

namespace gpulife {

namespace detail {
struct CallbackState;
}

/// @brief The function a finalizer runs. It receives a description, never the tensor.
using FinalizerFunction = std::function<void(const TensorInfo&)>;

/// @brief Handle of a callback registered with `DeviceTensor::on_release`.
///
/// The callback runs exactly once: on the thread that drops the tensor's last reference, after
/// the memory has been given back (stream-ordered), or at context shutdown if the tensor is still
/// alive then (unless `atexit(false)`). Dropping the handle does not cancel it. Copies refer to
/// the same callback.
///
/// @par Thread safety
/// All members may be called from any thread, concurrently with the tensor's release.
class Finalizer {
 public:
  /// An empty handle: `alive()` is false.
  Finalizer() noexcept = default;
  /// Wraps a registered callback; made by `DeviceTensor::on_release`.
  explicit Finalizer(std::shared_ptr<detail::CallbackState> state) noexcept
      : state_(std::move(state)) {}

  /// @return true while the callback has neither run nor been detached
  [[nodiscard]] bool alive() const noexcept;
  /// @brief Cancels the callback.
  /// @return true if it was pending (and will now never run)
  bool detach() noexcept;
  /// @return the description the callback will receive, while it is alive; empty afterwards
  [[nodiscard]] std::optional<TensorInfo> peek() const;
  /// @return whether the callback runs at context shutdown if the tensor is still alive
  [[nodiscard]] bool atexit() const noexcept;
  /// @brief Chooses whether the callback runs at context shutdown (default true).
  void set_atexit(bool value) noexcept;

 private:
  std::shared_ptr<detail::CallbackState> state_;
};

}  // namespace gpulife
