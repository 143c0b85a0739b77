// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Options and findings of the simulated device.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace gpulife {

/// @brief A misuse of device memory seen by the simulated device when a queued operation ran.
struct SimViolation {
  /// What was wrong with the range.
  enum class Kind : std::uint8_t {
    use_after_free,  ///< the range lies in memory that was freed (or returned to a sub-allocator)
    unallocated,     ///< the range lies in no allocation, or in part of a pool chunk never handed out
    out_of_bounds,   ///< the range starts in a live block and runs past its end
    overlap,         ///< a sub-allocator handed out a block that overlaps a live one
    bad_free,        ///< a free of memory that is not live (double free, foreign pointer)
  };
  Kind kind = Kind::unallocated;  ///< what went wrong
  std::string operation;     ///< e.g. "copy device_to_host", "memset", "kernel fill"
  const void* ptr = nullptr; ///< start of the offending range
  std::size_t bytes = 0;     ///< its length
  std::uint64_t stream_id = 0;  ///< the stream the operation was queued on (0: none)
  std::string owner;  ///< label of the block the range fell in (a tensor's id and tag in leak mode)
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
  /// Freed upstream allocations up to this many bytes in all are kept (poisoned) before their
  /// host memory is returned, so that stale pointers keep pointing at poison rather than at
  /// unrelated new allocations.
  std::size_t quarantine_bytes = std::size_t{64} << 20;
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
  /// Called, on the thread that ran the operation, for each violation. The device also records
  /// every violation (see `Device::take_violations`). Empty: write the violation to the error
  /// handler.
  std::function<void(const SimViolation&)> on_violation{};
};

}  // namespace gpulife
