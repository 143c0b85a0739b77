// SPDX-License-Identifier: Apache-2.0
#pragma once

// A model-checked workload over the whole library, on the simulated device: tensors made,
// uploaded, viewed, copied between streams, shared between threads, watched with weak
// references and finalizers, deduplicated by the tensor cache under every retention policy,
// while the device and the memory resource inject faults. A model follows every handle the
// workload holds; `check()` compares it with what the library says (live tensors and bytes,
// pool blocks, the simulated device's memory, cache tiers, finalizer runs, device contents).
//
// Three programs drive it: the randomised test (tests/reliability), the libFuzzer target
// (tests/fuzz: the choices come from the fuzzer's bytes) and the soak program (tools/soak).
// It is test code: it reads the library's internals (a tensor's memory owner) to name roots.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>

#include <gpulife/context.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/sim_options.hpp>

namespace gpulife::workload {

/// Where the workload's decisions come from.
class Choices {
 public:
  Choices() = default;
  Choices(const Choices&) = delete;
  Choices& operator=(const Choices&) = delete;
  virtual ~Choices() = default;
  /// A value in [0, bound); `bound` is at least 1.
  virtual std::uint64_t below(std::uint64_t bound) = 0;
  /// True once no more decisions are available (a fuzz input ran out).
  [[nodiscard]] virtual bool exhausted() const noexcept { return false; }
  /// True with `percent` per cent.
  bool chance(unsigned percent) { return below(100) < percent; }
};

/// Decisions from a seeded generator: never exhausted.
class RandomChoices final : public Choices {
 public:
  explicit RandomChoices(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t below(std::uint64_t bound) override {
    return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng_);
  }

 private:
  std::mt19937_64 rng_;
};

/// Decisions decoded from bytes (a fuzz input): each takes as few bytes as its bound needs;
/// once the bytes run out every decision is 0 and `exhausted()` is true.
class ByteChoices final : public Choices {
 public:
  explicit ByteChoices(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  std::uint64_t below(std::uint64_t bound) override;
  [[nodiscard]] bool exhausted() const noexcept override { return next_ >= bytes_.size(); }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t next_ = 0;
};

/// How the workload is set up.
struct Config {
  std::uint64_t seed = 1;   ///< seeds the actors' choices (`round`) and the faults
  std::size_t actors = 2;   ///< threads that run operations at once in `round`
  std::size_t streams = 3;  ///< streams besides the default stream
  /// Faults of the simulated device while operations run (off during checks).
  SimFaults device_faults{.probability = 0.02, .allocations = true, .stream_operations = true};
  /// Faults of the `FaultAdaptor` under the pool while operations run (off during checks).
  FaultOptions pool_faults{.probability = 0.1};
  std::size_t capacity_bytes = std::size_t{5} << 20;  ///< of the simulated device
  std::size_t warm_budget_bytes = 48 << 10;           ///< of the tensor cache's warm tier
  std::size_t max_held = 24;                          ///< handles one actor holds at most
  /// How the simulated devices run queued work. Seeded (the default): one scheduler seeded by
  /// `seed` runs every stream of a device, so that with one actor a run is a pure function of
  /// the seed. Threads: a worker thread per stream.
  SimSchedule schedule = SimSchedule::seeded;
  bool sim_delay = false;  ///< threads mode: random delays on the streams (slower; finds races)
  bool verify_contents = true;  ///< `check` compares every held tensor's bytes with the model
  /// Adjusts the context's options before it is made (the workload sets device, resource,
  /// cache, staging and error handler first): debug options, for instance.
  std::function<void(ContextOptions&)> context_options{};
};

/// What the workload has done so far.
struct Counters {
  std::uint64_t operations = 0;         ///< operations run (all actors, exclusive ones included)
  std::uint64_t failed_operations = 0;  ///< operations that threw an expected exception
  std::uint64_t device_faults = 0;      ///< faults the simulated device injected
  std::uint64_t pool_faults = 0;        ///< allocations the FaultAdaptor failed
  std::uint64_t cuda_errors = 0;        ///< `CudaError`s caught
  std::uint64_t out_of_memory = 0;      ///< `OutOfMemoryError`s caught
  std::uint64_t expired = 0;            ///< `ExpiredTensorError`s caught
  std::uint64_t invalid_arguments = 0;  ///< `std::invalid_argument`s caught (bad input on purpose)
  std::uint64_t contained_reports = 0;  ///< errors the library reported instead of throwing
  std::uint64_t tensors_created = 0;    ///< tensors the context made (views included)
  std::uint64_t finalizers_run = 0;     ///< the context's `finalizers_run`
  std::uint64_t expiry_callbacks_run = 0;  ///< the context's `expiry_callbacks_run`
  std::uint64_t cache_hits = 0;         ///< of the tensor cache
  std::uint64_t cache_misses = 0;       ///< of the tensor cache
  std::uint64_t cache_evictions = 0;    ///< warm entries the cache evicted
  std::uint64_t pressure_events = 0;    ///< times the pressure listener was told to give memory up
  std::uint64_t checks = 0;             ///< `check()` calls
  std::uint64_t pool_segments = 0;      ///< segments the pool took from upstream, or mappings
  std::uint64_t pool_splits = 0;        ///< blocks the pool split
  std::uint64_t pool_merges = 0;        ///< free neighbours the pool coalesced
  std::size_t live_tensors = 0;         ///< now
  std::size_t live_bytes = 0;           ///< now
};

/// An invariant did not hold; the message says which, with the numbers.
class InvariantViolation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// The workload. Operations of distinct actors may run concurrently; everything else needs the
/// actors quiescent.
class Workload {
 public:
  /// Makes the device (simulated), the resource stack pool → FaultAdaptor → async, the context,
  /// and routes gpulife's default error handler into the workload until destruction.
  explicit Workload(Config config);
  ~Workload();
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  /// Runs `count` operations of actor `actor` (< config.actors) with `choices`.
  /// @throws InvariantViolation when an operation sees what must not happen
  void run(std::size_t actor, Choices& choices, std::size_t count);
  /// Runs `count` operations that need the actors quiescent: cache erase/clear/clear_warm, pool
  /// trims, fault changes, memory-pressure ballast, mass releases.
  void run_exclusive(Choices& choices, std::size_t count);
  /// One round: every actor runs `count` operations on its own thread with its own seeded
  /// choices, then one exclusive operation; does not check.
  void round(std::size_t count);
  /// Single-threaded: runs operations of actor 0, exclusive operations and checks as
  /// `choices` decide, until they are exhausted or `max_operations` ran (the fuzzer's driver).
  void drive(Choices& choices, std::size_t max_operations);
  /// Synchronises the device with faults off and checks every invariant.
  /// @throws InvariantViolation naming the first that failed
  void check();
  /// Drops every handle and weak reference the actors, the exchange and the pressure listener
  /// hold, then checks: what stays alive is what the cache retains (warm and pinned entries).
  /// @throws InvariantViolation
  void release_all();
  /// `release_all`, then shuts the context down with a few tensors still alive (their
  /// finalizers run at shutdown, once), drops those, and checks that every byte went back to
  /// the device.
  /// @throws InvariantViolation
  void finish();

  /// `release_all`, then empties the cache and trims the pool, and proves the state clean: no
  /// tensor alive, no byte of device memory in use once trimmed. Then returns the pool to a new
  /// pool's state (`PoolResource::reset_if_unused`), so that the next run behaves as on a new
  /// workload. Does nothing after `finish`.
  /// @throws InvariantViolation if something is still alive or in use
  void reset();
  /// Starts another run on the same devices and streams, and the same context unless `finish`
  /// ended it (then a new one), as a new workload with `seed` and these faults would start:
  /// `reset` (unless the last call was a `reset`), then takes the seed and the faults and
  /// reseeds the devices' schedulers. The fuzzer reuses one workload per process this way.
  /// @throws InvariantViolation if `reset` finds something alive or in use
  void restart(std::uint64_t seed, const SimFaults& device_faults, const FaultOptions& pool_faults);

  /// @return the counters so far
  [[nodiscard]] Counters counters() const;
  /// @return one line: operations, faults, failures, checks
  [[nodiscard]] std::string summary() const;
  /// @return the context (valid until `finish`)
  [[nodiscard]] Context& context();
  /// @return the pool under the context
  [[nodiscard]] PoolResource& pool();
  /// @return the simulated device the workload runs on
  [[nodiscard]] const Device& device() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace gpulife::workload
