// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/async_resource.hpp>

namespace gpulife {

AsyncResource::AsyncResource(Device device, AsyncOptions options)
    : DeviceMemoryResource(std::move(device)) {
  if (options.release_threshold) {
    this->device().impl().set_async_release_threshold(*options.release_threshold);
  }
}

void* AsyncResource::do_allocate(std::size_t bytes, StreamView stream) {
  try {
    void* ptr = device().impl().allocate_async(bytes, *stream.impl());
    counters_.on_allocate(bytes);
    return ptr;
  } catch (...) {
    counters_.on_failure();
    throw;
  }
}

void AsyncResource::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  device().impl().deallocate_async(ptr, bytes, *stream.impl());
  counters_.on_deallocate(bytes);
}

ResourceStatistics AsyncResource::do_statistics() const { return counters_.snapshot(); }

// Physical memory for growable ranges: the device's virtual memory management, counted like
// allocations.
std::size_t AsyncResource::do_mapping_granularity() const noexcept {
  return device().impl().vmm_granularity();
}

void* AsyncResource::do_reserve_range(std::size_t bytes) {
  return device().impl().reserve_address_range(bytes);
}

void AsyncResource::do_release_range(void* base, std::size_t bytes) noexcept {
  device().impl().release_address_range(base, bytes);
}

void AsyncResource::do_map(void* ptr, std::size_t bytes) {
  try {
    device().impl().map_memory(ptr, bytes);
    counters_.on_allocate(bytes);
  } catch (...) {
    counters_.on_failure();
    throw;
  }
}

void AsyncResource::do_unmap(void* ptr, std::size_t bytes) noexcept {
  device().impl().unmap_memory(ptr, bytes);
  counters_.on_deallocate(bytes);
}

std::size_t AsyncResource::pool_reserved_bytes() const {
  return device().impl().async_pool_reserved_bytes();
}

std::size_t AsyncResource::do_release_cached() noexcept {
  // The end of the chain: nothing cached here, the driver's pool is.
  return device().impl().trim_async_pool(0);
}

}  // namespace gpulife
