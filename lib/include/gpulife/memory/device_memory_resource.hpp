// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DeviceMemoryResource`: the interface of every stream-ordered device memory resource.

#include <cstddef>
#include <string>
#include <vector>

#include <gpulife/memory/resource_statistics.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/event.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

/// @brief A source of stream-ordered device memory (the shape of RMM's device memory resources).
///
/// `allocate(bytes, s)` returns memory usable by work on `s` from now on; `deallocate(p, bytes, s)`
/// gives it back once the work queued on `s` so far has executed. Memory is 256-byte aligned.
/// Public members validate their arguments and call the private virtuals; a new resource
/// implements those. Adaptors wrap an upstream resource and add one thing each.
///
/// @par Thread safety
/// Every resource in gpulife is safe to use from several threads at once.
class DeviceMemoryResource {
 public:
  /// @param device the device whose memory this resource hands out
  explicit DeviceMemoryResource(Device device);
  DeviceMemoryResource(const DeviceMemoryResource&) = delete;
  DeviceMemoryResource& operator=(const DeviceMemoryResource&) = delete;
  virtual ~DeviceMemoryResource() = default;

  /// @brief Allocates `bytes` bytes usable on `stream` in stream order.
  /// @param bytes  size; zero returns nullptr
  /// @param stream the stream that will use the memory first (empty: the device's default)
  /// @return a 256-byte aligned device pointer
  /// @throws std::invalid_argument if `stream` belongs to another device
  /// @throws OutOfMemoryError when the memory cannot be had
  /// @throws CudaError on other device failures
  [[nodiscard]] void* allocate(std::size_t bytes, StreamView stream = {});

  /// @brief Returns memory once the work queued on `stream` so far has executed.
  ///
  /// Never throws: a failure (a foreign pointer, a device error) goes to the error handler.
  /// @param ptr    a pointer from `allocate` on this resource (nullptr is ignored)
  /// @param bytes  the size that was requested
  /// @param stream the stream whose order the release follows (empty: the device's default)
  void deallocate(void* ptr, std::size_t bytes, StreamView stream = {}) noexcept;

  /// @brief Like `deallocate`, and the memory is also not reused before every event in `after`
  /// has completed: the events mark work on other streams that still uses the memory
  /// (`DeviceTensor::record_stream`). The default makes `stream` wait for the events; a pool
  /// instead keeps the block aside until they complete, adding no dependency between streams.
  void deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                        std::vector<Event> after) noexcept;

  /// @return true if memory from one can be deallocated by the other
  [[nodiscard]] bool is_equal(const DeviceMemoryResource& other) const noexcept {
    return this == &other || do_is_equal(other);
  }
  /// @return a short name such as "pool(async)"
  [[nodiscard]] std::string name() const { return do_name(); }
  /// @return a snapshot of the counters
  [[nodiscard]] ResourceStatistics statistics() const { return do_statistics(); }
  /// @brief Gives cached free memory back (the first step of the memory-pressure chain), down
  /// the whole stack.
  ///
  /// The contract every resource keeps: a resource that caches gives its cached memory back to
  /// its upstream and then calls `release_cached()` on the upstream, so that one call at the top
  /// of a stack (pool over adaptors over `AsyncResource`) reaches the driver: `AsyncResource`
  /// synchronises the device and trims its stream-ordered pool, so that the memory is usable by
  /// every `cudaMalloc` in the process (cuBLAS, NCCL, PyTorch). An adaptor that caches nothing
  /// forwards the call. May synchronise the device.
  /// @return the bytes this resource released: what it gave upstream, or for a resource over
  ///         the driver what the driver took back (the levels are not summed)
  std::size_t release_cached() noexcept { return do_release_cached(); }
  /// @return the device
  [[nodiscard]] const Device& device() const noexcept { return device_; }

  /// @name Physical memory for growable address ranges (virtual memory management)
  /// A pool with expandable segments takes its memory through these: it reserves an address
  /// range and maps physical memory into it in chunks of `mapping_granularity()` as it grows.
  /// Resources that hand out device memory directly implement them with the device's virtual
  /// memory management (the CUDA driver's cuMemAddressReserve, cuMemCreate, cuMemMap,
  /// cuMemSetAccess, cuMemUnmap, cuMemRelease; the simulated device's model of them); adaptors
  /// forward them. Mapped bytes count as the resource's bytes in use.
  /// @{
  /// @return the granularity of `map`, or 0 if this resource cannot map memory
  [[nodiscard]] std::size_t mapping_granularity() const noexcept {
    return do_mapping_granularity();
  }
  /// @brief Reserves `bytes` (a multiple of the granularity) of device address space.
  /// @throws std::logic_error if the resource cannot map memory
  /// @throws OutOfMemoryError when the address space is exhausted
  [[nodiscard]] void* reserve_range(std::size_t bytes) { return do_reserve_range(bytes); }
  /// @brief Frees a range from `reserve_range`; nothing may be mapped in it any more.
  void release_range(void* base, std::size_t bytes) noexcept { do_release_range(base, bytes); }
  /// @brief Maps physical memory at `[ptr, ptr + bytes)` (granularity-aligned, inside a reserved
  /// range). Synchronous: usable by every stream when it returns.
  /// @throws OutOfMemoryError when the device has no memory left
  void map(void* ptr, std::size_t bytes) { do_map(ptr, bytes); }
  /// @brief Unmaps whole mapped chunks at `[ptr, ptr + bytes)` and frees their memory. Not
  /// stream-ordered: no queued work may use them any more.
  void unmap(void* ptr, std::size_t bytes) noexcept { do_unmap(ptr, bytes); }
  /// @}

 protected:
  /// @return `stream`, or the device's default stream when it is empty
  [[nodiscard]] StreamView resolve(StreamView stream) const noexcept {
    return stream.valid() ? stream : device_.default_stream();
  }

 private:
  virtual void* do_allocate(std::size_t bytes, StreamView stream) = 0;
  virtual void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept = 0;
  virtual void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                   std::vector<Event> after) noexcept;
  virtual bool do_is_equal(const DeviceMemoryResource& other) const noexcept {
    (void)other;
    return false;
  }
  virtual std::string do_name() const = 0;
  virtual ResourceStatistics do_statistics() const = 0;
  virtual std::size_t do_release_cached() noexcept { return 0; }
  virtual std::size_t do_mapping_granularity() const noexcept { return 0; }
  virtual void* do_reserve_range(std::size_t bytes);
  virtual void do_release_range(void* base, std::size_t bytes) noexcept;
  virtual void do_map(void* ptr, std::size_t bytes);
  virtual void do_unmap(void* ptr, std::size_t bytes) noexcept;

  Device device_;
};

}  // namespace gpulife
