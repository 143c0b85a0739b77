// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/direct_resource.hpp>

namespace gpulife {

DirectResource::DirectResource(Device device) : DeviceMemoryResource(std::move(device)) {}

void* DirectResource::do_allocate(std::size_t bytes, StreamView /*stream*/) {
  try {
    void* ptr = device().impl().allocate(bytes);
    counters_.on_allocate(bytes);
    return ptr;
  } catch (...) {
    counters_.on_failure();
    throw;
  }
}

void DirectResource::do_deallocate(void* ptr, std::size_t bytes, StreamView /*stream*/) noexcept {
  // cudaFree waits for the whole device, which also orders it after `stream`.
  device().impl().deallocate(ptr, bytes);
  counters_.on_deallocate(bytes);
}

ResourceStatistics DirectResource::do_statistics() const { return counters_.snapshot(); }

// Physical memory for growable ranges: the device's virtual memory management, counted like
// allocations.
std::size_t DirectResource::do_mapping_granularity() const noexcept {
  return device().impl().vmm_granularity();
}

void* DirectResource::do_reserve_range(std::size_t bytes) {
  return device().impl().reserve_address_range(bytes);
}

void DirectResource::do_release_range(void* base, std::size_t bytes) noexcept {
  device().impl().release_address_range(base, bytes);
}

void DirectResource::do_map(void* ptr, std::size_t bytes) {
  try {
    device().impl().map_memory(ptr, bytes);
    counters_.on_allocate(bytes);
  } catch (...) {
    counters_.on_failure();
    throw;
  }
}

void DirectResource::do_unmap(void* ptr, std::size_t bytes) noexcept {
  device().impl().unmap_memory(ptr, bytes);
  counters_.on_deallocate(bytes);
}

}  // namespace gpulife
