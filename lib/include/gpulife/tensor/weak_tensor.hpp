// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `WeakTensor`: a reference that does not keep a tensor alive (Python's `weakref.ref`).

#include <functional>
#include <memory>

#include <gpulife/tensor/device_tensor.hpp>

namespace gpulife {

namespace detail {
/// Selects the `WeakTensor` constructor of gpulife's own containers (`WeakKeyMap`,
/// `TensorCache`), whose expiry callbacks are bookkeeping rather than the program's.
struct InternalCallback {
  explicit InternalCallback() = default;
};
}  // namespace detail

/// @brief A weak reference to a tensor.
///
/// `lock()` returns a strong handle while the tensor lives and an empty one afterwards. A lock
/// that races with the last drop on another thread gets one or the other, never a handle to
/// released memory. An optional expiry callback runs once when the tensor dies, under the same
/// rules as finalizers; it is cancelled when the last copy of this weak reference is destroyed
/// first (as a Python weakref's callback is not called once the weakref itself is gone).
///
/// @par Thread safety
/// As for `DeviceTensor`.
class WeakTensor {
 public:
  /// An empty, expired reference.
  WeakTensor() noexcept = default;
  /// @brief Refers to `tensor` (an empty tensor gives an expired reference).
  WeakTensor(const DeviceTensor& tensor) noexcept;  // NOLINT: implicit, like weak_ptr from shared_ptr
  /// @brief Refers to `tensor` and runs `on_expire` when it dies.
  /// @throws std::invalid_argument if `tensor` is empty or `on_expire` is empty
  WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire);
  /// @brief As the constructor above, for gpulife's own containers: the callback is bookkeeping,
  /// neither counted in `ContextStatistics::expiry_callbacks_run` nor reported as a lifetime
  /// event.
  /// @throws std::invalid_argument if `tensor` is empty or `on_expire` is empty
  WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire, detail::InternalCallback);
  /// Refers to the same tensor as `other` and shares its expiry callback (still run once).
  WeakTensor(const WeakTensor& other) noexcept;
  /// Takes `other`'s reference; `other` becomes empty.
  WeakTensor(WeakTensor&& other) noexcept;
  /// Refers to the same tensor as `other`.
  WeakTensor& operator=(const WeakTensor& other) noexcept;
  /// Takes `other`'s reference.
  WeakTensor& operator=(WeakTensor&& other) noexcept;
  ~WeakTensor();

  /// @return a strong handle, or an empty one if the tensor has died
  [[nodiscard]] DeviceTensor lock() const noexcept;
  /// @return true once the tensor has died (or for an empty reference)
  [[nodiscard]] bool expired() const noexcept;
  /// @return a strong handle (the `weakref.proxy` behaviour)
  /// @throws ExpiredTensorError if the tensor has died
  [[nodiscard]] DeviceTensor get() const;
  /// @return the id of the tensor referred to (kept after expiry), 0 for an empty reference
  [[nodiscard]] std::uint64_t id() const noexcept;

  /// True if both refer to the same tensor.
  friend bool operator==(const WeakTensor& a, const WeakTensor& b) noexcept {
    return a.impl_ == b.impl_;
  }

 private:
  struct ExpiryGuard;
  WeakTensor(const DeviceTensor& tensor, FinalizerFunction on_expire, bool internal);
  detail::TensorImpl* impl_ = nullptr;  // holds one weak reference
  std::shared_ptr<ExpiryGuard> expiry_;  // shared by copies; cancels the callback when last
};

}  // namespace gpulife
