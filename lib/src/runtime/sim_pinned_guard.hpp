// SPDX-License-Identifier: Apache-2.0
#pragma once

// Part of the race detector: host accesses to pinned buffers while queued copies use them.
//
// A pinned buffer is mapped twice (one memfd, two shared mappings): the address the user gets,
// and a second one through which the stream workers copy (`device_view`). While a queued copy
// reads the buffer and the host has not synchronised with it, the user's mapping is read-only;
// while one writes it, inaccessible. A host thread that touches it then faults; the handler
// records the access against the copy, lifts the protection (the access then completes, as it
// would on a GPU) and returns. The device reports what the handler recorded at its next call.
//
// Protection is per page and per buffer, the host's view is the detector's (all host threads
// together), and after a reported access the buffer stays open until the next copy or host
// synchronisation that concerns it. mprotect holds for every thread; memory protection keys
// (pkey_mprotect) would let the workers keep access without the second mapping, but few
// virtual machines expose them, and the second mapping works everywhere.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "runtime/sim_races.hpp"

namespace gpulife::detail::sim {

/// Marks the calling thread as one that runs queued work (a stream worker, or a scheduler that
/// runs work inline): its faults on guarded buffers are the device's, not the host's.
class WorkerScope {
 public:
  WorkerScope() noexcept;
  ~WorkerScope();
  WorkerScope(const WorkerScope&) = delete;
  WorkerScope& operator=(const WorkerScope&) = delete;
  [[nodiscard]] static bool active() noexcept;

 private:
  bool was_;
};

/// Installs the process-wide SIGSEGV handler of the pinned and device guards (once; it chains
/// to the handler installed before it).
void install_fault_handler();

class PinnedGuard {
 public:
  PinnedGuard() = default;
  ~PinnedGuard();
  PinnedGuard(const PinnedGuard&) = delete;
  PinnedGuard& operator=(const PinnedGuard&) = delete;

  /// Maps a guarded buffer of at least `bytes`; null when the host cannot (the caller then
  /// allocates an unguarded one). `size` receives the mapped size.
  void* allocate(std::size_t bytes, std::size_t& size) noexcept;
  /// Unmaps a buffer from `allocate`; false if it is not one.
  bool deallocate(void* ptr) noexcept;
  /// The workers' address of `ptr` (itself when it lies in no guarded buffer).
  [[nodiscard]] void* device_view(const void* ptr) const noexcept;

  // Called under the race detector's lock:
  /// A queued operation of `agent` at `tick` uses `use`'s range.
  void on_use(const RangeUse& use, std::uint32_t agent, std::uint64_t tick,
              const std::shared_ptr<const OpRecord>& op);
  /// The host's clock grew: copies it has synchronised with no longer protect their buffers.
  void on_host(const VectorClock& host);

  /// Violations the fault handler recorded since the last call.
  std::vector<SimViolation> take_recorded();
  [[nodiscard]] bool has_recorded() const noexcept {
    return recorded_.load(std::memory_order_acquire) != 0;
  }

 private:
  struct Pending {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    bool writes = false;
    std::uint32_t agent = 0;
    std::uint64_t tick = 0;
    std::shared_ptr<const OpRecord> op;
  };

 public:
  // The process-wide table the fault handler reads; public for the handler in the .cpp only.
  struct Buffer {
    PinnedGuard* guard = nullptr;
    std::size_t size = 0;
    unsigned char* alias = nullptr;
    int protection = 0;  // PROT_* now on the user's mapping
    std::vector<Pending> pending;
  };
  /// The fault handler: a host access at `addr` to `buffer`, recorded if it conflicts with a
  /// pending copy. Allocates nothing and takes no lock.
  void note_fault(std::uintptr_t addr, bool write, const Buffer& buffer) noexcept;

 private:
  struct Slot {
    std::atomic<int> state{0};  // 0 free, 1 being written by the handler, 2 recorded
    std::uintptr_t addr = 0;
    bool write = false;
    bool other_writes = false;
    std::shared_ptr<const OpRecord> op;
  };
  void protect(std::uintptr_t base, Buffer& buffer);  // table lock held
  std::array<Slot, 64> slots_{};
  std::atomic<std::size_t> recorded_{0};
  std::atomic<std::size_t> lost_{0};
};

}  // namespace gpulife::detail::sim
