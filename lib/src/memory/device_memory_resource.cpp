// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/device_memory_resource.hpp>

#include <stdexcept>
#include <string>
#include <utility>

#include <gpulife/error_handler.hpp>

namespace gpulife {

DeviceMemoryResource::DeviceMemoryResource(Device device) : device_(std::move(device)) {
  if (!device_.valid()) throw std::invalid_argument("device: empty Device");
}

void* DeviceMemoryResource::allocate(std::size_t bytes, StreamView stream) {
  if (stream.valid() && &stream.device() != &device_.impl()) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() + ", but " +
                                name() + " allocates on " + device_.name());
  }
  if (bytes == 0) return nullptr;
  const StreamView on = resolve(stream);
  void* ptr = do_allocate(bytes, on);
  // The sim checks accesses against what was asked for, not the resource's rounding.
  device_.impl().mark_requested(ptr, bytes, *on.impl());
  return ptr;
}

void DeviceMemoryResource::deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  if (ptr == nullptr) return;
  do_deallocate(ptr, bytes, resolve(stream));
}

void DeviceMemoryResource::deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                            std::vector<Event> after) noexcept {
  if (ptr == nullptr) return;
  if (after.empty()) {
    do_deallocate(ptr, bytes, resolve(stream));
    return;
  }
  do_deallocate_after(ptr, bytes, resolve(stream), std::move(after));
}

void DeviceMemoryResource::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                               std::vector<Event> after) noexcept {
  for (const Event& event : after) {
    try {
      stream.wait(event);
    } catch (const std::exception& e) {
      // Without the device-side wait the only safe order left is the host's.
      report_error(std::string("deallocate_after: stream wait failed, waiting on the host: ") +
                   e.what());
      try {
        event.synchronize();
      } catch (...) {
        report_error("deallocate_after: event synchronize failed; memory is kept, not freed");
        return;
      }
    }
  }
  do_deallocate(ptr, bytes, stream);
}

void* DeviceMemoryResource::do_reserve_range(std::size_t bytes) {
  (void)bytes;
  throw std::logic_error(name() + " cannot map memory into address ranges");
}

void DeviceMemoryResource::do_release_range(void* base, std::size_t bytes) noexcept {
  (void)base, (void)bytes;
}

void DeviceMemoryResource::do_map(void* ptr, std::size_t bytes) {
  (void)ptr, (void)bytes;
  throw std::logic_error(name() + " cannot map memory into address ranges");
}

void DeviceMemoryResource::do_unmap(void* ptr, std::size_t bytes) noexcept {
  (void)ptr, (void)bytes;
}

}  // namespace gpulife
