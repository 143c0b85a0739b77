// SPDX-License-Identifier: Apache-2.0
#pragma once

// Device memory the host cannot touch (SimOptions::guard_device_memory).
//
// On a GPU, host code that dereferences a device pointer crashes; on the sim device memory is
// host memory, so it would work. With the option on, every device allocation of the sim (the
// upstream allocations and the reserved ranges of its virtual memory management) is mapped on
// its own pages and kept inaccessible (PROT_NONE). The process-wide SIGSEGV handler (installed
// by sim_pinned_guard.cpp, chaining to the previous one) asks `handle_fault`:
//   - a thread that runs queued work (WorkerScope) or does the sim's own host-side work on device
//     memory (DeviceAccessScope: fresh fill, poison, its verification) opens the allocation
//     (mprotect read-write) and remembers it; it is closed again after each queued operation
//     and when the outermost DeviceAccessScope ends;
//   - any other thread is host code: the handler writes one line naming the address and the
//     allocation to stderr, restores the default action and returns, so the access crashes as
//     it would on a GPU.
// mprotect holds for every thread: while a worker has an allocation open, a host access to it
// is not caught (a documented limitation; memory protection keys would close it, but few
// virtual machines expose them). Host functions run on the stream workers, so their accesses
// are not caught either.

#include <cstddef>
#include <cstdint>

namespace gpulife::detail::sim {

/// Marks the calling thread as doing the sim's own work on device memory (nestable). When the
/// outermost scope ends outside a WorkerScope, what the thread opened is closed again.
class DeviceAccessScope {
 public:
  DeviceAccessScope() noexcept;
  ~DeviceAccessScope();
  DeviceAccessScope(const DeviceAccessScope&) = delete;
  DeviceAccessScope& operator=(const DeviceAccessScope&) = delete;
};

namespace device_guard {

/// Guards [base, base + bytes) (page-aligned mmap memory): inaccessible to host threads from
/// now on. False if it could not (the memory then stays accessible).
bool add(void* base, std::size_t bytes) noexcept;
/// Forgets the range at `base` (before it is unmapped or remapped); its protection is left.
void remove(const void* base) noexcept;
/// Closes what the calling thread opened (after each queued operation).
void close_opened() noexcept;
/// For the SIGSEGV handler: true if `addr` lies in a guarded range (the access was then
/// either opened for a worker, or reported and the default action restored).
bool handle_fault(std::uintptr_t addr) noexcept;

}  // namespace device_guard
}  // namespace gpulife::detail::sim
