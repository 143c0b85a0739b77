// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Options and findings of the simulated device.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace gpulife {

/// @brief A misuse of device memory or of CUDA's API seen by the simulated device.
///
/// Range violations (`use_after_free` to `bad_free`) are found when the queued operation
/// executes; races, API rules and uninitialised reads when the operation is queued, in the
/// order the program queued its work, so that they do not depend on timing.
struct SimViolation {
  /// What was wrong.
  enum class Kind : std::uint8_t {
    use_after_free,  ///< the range lies in memory that was freed (or returned to a sub-allocator)
    unallocated,     ///< the range lies in no allocation, or in part of a pool chunk never handed out
    out_of_bounds,   ///< the range starts in a live block and runs past its requested end
    overlap,         ///< a sub-allocator handed out a block that overlaps a live one
    bad_free,        ///< a free of memory that is not live (double free, foreign pointer)
    race,            ///< two accesses to the same bytes, at least one a write, with no
                     ///< happens-before order between them (`other_*` names the earlier one)
    uninitialized_read,    ///< a read of bytes never written since their allocation
                           ///< (`SimOptions::uninitialized_reads`)
    freed_memory_written,  ///< the poison of freed memory changed before the memory was reused
                           ///< or returned: a write that no operation declared
    api_misuse,            ///< a CUDA API rule was broken; `operation` names the call and `rule`
                           ///< the rule
  };
  Kind kind = Kind::unallocated;  ///< what went wrong
  std::string operation;     ///< e.g. "copy device_to_host", "memset", "kernel fill"
  const void* ptr = nullptr; ///< start of the offending range
  std::size_t bytes = 0;     ///< its length
  std::uint64_t stream_id = 0;  ///< the stream the operation was queued on (0: the host)
  std::string owner;  ///< label of the block the range fell in (a tensor's id and tag in leak mode)
  std::string site;   ///< where the operation was queued, "file:line" ("" when not known)
  std::string other_operation;      ///< race: the earlier operation of the pair
  std::uint64_t other_stream_id = 0;  ///< race: its stream (0: the host)
  std::string other_site;           ///< race: where it was queued
  std::string rule;                 ///< api_misuse: the rule, in words
  /// On a device in seeded mode (`SimSchedule::seeded`): the value of GPULIFE_SIM_SEED that
  /// replays the run, e.g. "1234" or "pct:1234"; empty in threads mode.
  std::string replay_seed{};

  /// @return one line that describes the violation
  [[nodiscard]] std::string message() const;
};

/// @brief Faults the simulated device injects into its API calls.
///
/// A chosen call fails synchronously, before it has any effect: with a CUDA-like `CudaError`
/// whose message says "fault injected", or, for allocations, with `OutOfMemoryError`. Calls that
/// cannot fail in CUDA's API as gpulife uses it (stream-ordered frees, synchronisation, queries)
/// never do. Set at creation (`SimOptions::faults`) or at run time (`Device::set_faults`,
/// `Device::set_faults_enabled`); `Device::injected_faults` counts them.
struct SimFaults {
  std::uint64_t seed = 1;           ///< seeds the probability draws
  double probability = 0.0;         ///< chance in [0, 1] that an eligible call fails
  std::uint64_t every_nth = 0;      ///< when non-zero, every nth eligible call fails
  bool copies = true;               ///< copies may fail (cudaErrorInvalidValue)
  bool memsets = true;              ///< memsets may fail (cudaErrorInvalidValue)
  bool kernels = true;              ///< kernel launches may fail (cudaErrorLaunchOutOfResources)
  bool allocations = false;         ///< device allocations may fail (`OutOfMemoryError`)
  bool stream_operations = false;   ///< event record/wait and host callbacks may fail
                                    ///< (cudaErrorUnknown)
};

/// @brief How the simulated device executes the work queued on its streams.
enum class SimSchedule : std::uint8_t {
  /// Each stream has a worker thread that runs its queue; the operating system decides how the
  /// streams interleave. The default: what concurrency tests (and ThreadSanitizer) need.
  threads,
  /// One scheduler runs the queued work of every stream of the device, choosing the next stream
  /// to advance with a generator seeded by `SimOptions::seed`. Work runs on the host thread that
  /// waits for it (a synchronisation, a copy to pageable memory, a query), not on workers; host
  /// functions run on a host-function thread, as CUDA runs them. With one host thread a run is a
  /// pure function of the seed and the program: the same interleaving, the same violations, the
  /// same bytes.
  seeded,
};

/// @brief How the seeded scheduler chooses the next stream to advance.
enum class SimPolicy : std::uint8_t {
  /// The seed chooses `uniform` or `pct` (and PCT's stretch), so that trying many seeds tries
  /// both and one number replays either.
  mixed,
  /// Every stream that can advance is equally likely to.
  uniform,
  /// PCT-style (probabilistic concurrency testing): each stream gets a random priority and the
  /// highest-priority stream that can advance does; at random change points the stream about to
  /// advance drops to the lowest priority. One stream is delayed for long stretches, the orders
  /// in which missing synchronisation shows.
  pct,
};

/// @brief Options of a simulated device.
struct SimOptions {
  /// Capacity the device pretends to have; allocations beyond it fail with out-of-memory.
  std::size_t capacity_bytes = std::size_t{16} << 30;
  /// Threads mode: when true, each stream worker sleeps a random time before every queued
  /// operation, which exposes missing synchronisation. The environment variable
  /// GPULIFE_SIM_DELAY=`<seed>` turns it on for devices created with default options.
  bool delay = false;
  /// Seeds the delays: stream k of a device (the default stream is 0, then in order of
  /// creation) draws the same delays in every run, whichever tests ran before in the process.
  std::uint64_t delay_seed = 1;
  std::uint32_t max_delay_us = 200;     ///< upper bound of one sleep
  /// Fill freed memory with a poison pattern (0xDB bytes).
  bool poison = true;
  /// Fill fresh allocations with a pattern (0xCF bytes) instead of what the host left there, so
  /// that code which reads memory it never wrote sees garbage, as on a GPU, and not zeros.
  /// With it on, the device backs new memory with host pages freed memory held before (up to
  /// 64 MiB of them kept, and unmapped chunks of reserved ranges up to the capacity): faulting
  /// in new pages costs more than the simulated work. Off, new memory is the host's zero pages.
  bool fill_fresh = true;
  /// Freed upstream allocations up to this many bytes in all are kept (poisoned) before their
  /// host memory is returned (or, see `fill_fresh`, moved to back a later allocation at other
  /// addresses), so that stale pointers keep pointing at poison rather than at unrelated new
  /// allocations. The poison is verified when memory leaves the quarantine.
  std::size_t quarantine_bytes = std::size_t{64} << 20;
  /// Allocations larger than the quarantine, and those leaving it, keep their addresses out of
  /// reuse (reserved, inaccessible, holding no memory) until this many bytes of addresses are
  /// held, so that a stale pointer into a freed large allocation faults rather than reaching
  /// new data.
  std::size_t address_quarantine_bytes = std::size_t{64} << 30;
  /// Happens-before race detection: every queued copy, memset and kernel (through its
  /// declared ranges), every allocation and free, and gpulife's own host accesses are checked
  /// when they are queued against the order the program established (stream order, event
  /// record and wait, host synchronisation), so that a missing event, wait or `record_stream`
  /// is reported on every run whatever the timing. See the README for what it covers.
  bool races = true;
  /// With `races`: pinned buffers from `allocate_pinned` become read-only (a queued copy reads
  /// them) or inaccessible (a queued copy writes them) to the host until the host has
  /// synchronised with that copy, so that host code that touches them too early is reported.
  /// The stream workers keep access.
  bool guard_pinned = true;
  /// With `races`: report reads (copy sources, kernel ranges declared `Access::read`) of bytes
  /// never written since they were allocated, as compute-sanitizer's initcheck does.
  bool uninitialized_reads = false;
  /// Make device memory inaccessible to host threads, as on a GPU: every device allocation (and
  /// every reserved virtual range) gets pages of its own, kept inaccessible except to the stream
  /// workers while queued work runs, so host code that dereferences a device pointer crashes
  /// (SIGSEGV) after one line on stderr naming the address and the allocation. Costs a page per
  /// allocation and a fault plus two `mprotect` calls per allocation a queued operation touches.
  /// The environment variable GPULIFE_SIM_GUARD_DEVICE=1 (or 0) turns it on (or off) for every
  /// simulated device. Not caught: a host access while a queued operation has the allocation
  /// open, and accesses by host functions (they run on the stream workers).
  bool guard_device_memory = false;
  /// Run at most one host function (`host_callback`) at a time on the device, as CUDA may: a
  /// host function that waits for another stream's host function then deadlocks in tests too.
  bool serialize_host_functions = false;
  /// Granularity of the simulated virtual memory management (cuMemMap and friends, which pools
  /// with expandable segments use); its mapped chunks count against `capacity_bytes`. 0: the
  /// device has none, as a GPU without VMM support.
  std::size_t vmm_granularity = std::size_t{2} << 20;
  /// Injected faults; none by default.
  SimFaults faults{};
  /// How queued work executes. The environment variable GPULIFE_SIM_SEED=`<seed>` (or
  /// `<policy>:<seed>`, policy `uniform`, `pct` or `mixed`) makes every simulated device run
  /// seeded with that seed, whatever its options say, so that a run can be replayed from the
  /// seed a violation names.
  SimSchedule schedule = SimSchedule::threads;
  std::uint64_t seed = 1;               ///< seeds the scheduler in seeded mode
  SimPolicy policy = SimPolicy::mixed;  ///< of the seeded scheduler
  /// Virtual device time: the name of a built-in `DeviceProfile` ("h100", "h200") or the path
  /// of a profile file. The device then predicts what that GPU would take for the work queued
  /// on it (`Device::virtual_time_ns`, `Device::time_profile`). Empty: the environment variable
  /// GPULIFE_SIM_PROFILE, if set, else no time model (it costs a lock per device call).
  std::string profile{};
  /// With a `profile`: the host clocks advance by the real time the host spends between device
  /// calls as well as by the modelled cost of each call. Off, only the modelled costs count,
  /// which makes virtual time a pure function of the program's calls (tests).
  bool count_host_time = true;
  /// Called, on the thread that ran the operation, for each violation. The device also records
  /// every violation (see `Device::take_violations`). Empty: write the violation to the error
  /// handler.
  std::function<void(const SimViolation&)> on_violation{};
};

}  // namespace gpulife
