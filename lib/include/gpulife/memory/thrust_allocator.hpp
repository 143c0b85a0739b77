// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `ThrustAllocator`: Thrust's temporary storage from a gpulife memory resource.
///
/// The allocator needs no Thrust header, so it lives with the resources; the execution policies
/// that hand it to Thrust are in `gpulife/kernels/thrust_policy.hpp`.

#include <cstddef>
#include <limits>
#include <new>
#include <stdexcept>

#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

/// @brief An allocator that takes memory from a `DeviceMemoryResource` in the order of one
/// stream (RMM's `thrust_allocator`).
///
/// Handed to a Thrust execution policy, it makes the algorithm's temporary storage come from the
/// resource (typically the pool) instead of cudaMalloc: `allocate` calls
/// `resource.allocate(bytes, stream)` and `deallocate` calls `resource.deallocate(p, bytes,
/// stream)`, so the memory is given back in the stream's order after the algorithm's kernels.
/// Pointers are raw device pointers, which Thrust accepts for temporary storage.
///
/// The allocator refers to the resource; the resource must outlive it and every policy that
/// holds a copy.
///
/// @par Thread safety
/// As thread-safe as the resource (every gpulife resource is).
template <class T>
class ThrustAllocator {
 public:
  using value_type = T;                    ///< the element type
  using pointer = T*;                      ///< a device pointer, raw
  using const_pointer = const T*;          ///< a device pointer to const, raw
  using size_type = std::size_t;           ///< element counts
  using difference_type = std::ptrdiff_t;  ///< pointer differences

  /// @param resource where the memory comes from
  /// @param stream   the stream whose order allocation and release follow
  /// @throws std::invalid_argument if `stream` is empty or belongs to another device
  ThrustAllocator(DeviceMemoryResource& resource, StreamView stream)
      : resource_(&resource), stream_(stream) {
    if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
    if (&stream.device() != &resource.device().impl()) {
      throw std::invalid_argument("stream: belongs to another device than resource " +
                                  resource.name());
    }
  }

  /// Rebinding copy: same resource and stream.
  template <class U>
  ThrustAllocator(const ThrustAllocator<U>& other) noexcept  // NOLINT: implicit, as allocators are
      : resource_(&other.resource()), stream_(other.stream()) {}

  /// @brief Allocates room for `n` objects of type `T` on the stream.
  /// @throws std::bad_array_new_length if `n * sizeof(T)` overflows
  /// @throws OutOfMemoryError when the resource has no memory left
  /// @throws CudaError on other device failures
  [[nodiscard]] T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(resource_->allocate(n * sizeof(T), stream_));
  }

  /// @brief Gives back memory from `allocate(n)` once the stream's work so far has executed.
  void deallocate(T* ptr, std::size_t n) noexcept {
    resource_->deallocate(ptr, n * sizeof(T), stream_);
  }

  /// @return the resource
  [[nodiscard]] DeviceMemoryResource& resource() const noexcept { return *resource_; }
  /// @return the stream
  [[nodiscard]] StreamView stream() const noexcept { return stream_; }

  /// Equal when memory from one can be given back through the other: resources that are equal
  /// and the same stream.
  friend bool operator==(const ThrustAllocator& a, const ThrustAllocator& b) noexcept {
    return a.resource().is_equal(b.resource()) && a.stream() == b.stream();
  }

 private:
  DeviceMemoryResource* resource_;
  StreamView stream_;
};

}  // namespace gpulife
