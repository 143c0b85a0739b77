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

}  // namespace gpulife
