// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Device`: a shared handle to one device of either backend, and backend selection.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/event.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>
#include <gpulife/runtime/sim_options.hpp>
#include <gpulife/runtime/stream.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

/// @brief Why CUDA is or is not usable in this process.
struct CudaProbe {
  bool compiled = false;   ///< the CUDA backend was built into this library
  bool available = false;  ///< a device answered
  int device_count = 0;    ///< CUDA devices that answered
  std::string reason;      ///< when not available: e.g. "cudaErrorInsufficientDriver: ..."
};

/// @brief A shared handle to one device (copies refer to the same device).
///
/// The device lives as long as any handle, stream, event, memory resource or tensor that uses
/// it. All members are thread-safe.
class Device {
 public:
  /// An empty handle.
  Device() noexcept = default;
  /// Wraps a backend device.
  explicit Device(std::shared_ptr<detail::DeviceImpl> impl) noexcept : impl_(std::move(impl)) {}

  /// @brief A new simulated device.
  ///
  /// If `options.delay` is false and the environment variable GPULIFE_SIM_DELAY holds a seed,
  /// the delay is turned on with that seed, so that a whole test run can be repeated with it.
  /// If GPULIFE_SIM_SEED holds `<seed>` or `<policy>:<seed>` (policy `mixed`, `uniform` or
  /// `pct`), the device runs in seeded mode with that seed (and policy), whatever `options` say:
  /// that replays the run a violation's `replay_seed` came from.
  /// GPULIFE_SIM_RACES=0 (or 1) turns race detection (`SimOptions::races`) off (or on) for
  /// every simulated device, whatever the options say; GPULIFE_SIM_GUARD_DEVICE=1 (or 0) does
  /// the same for `SimOptions::guard_device_memory`.
  /// @throws std::invalid_argument if `options.capacity_bytes` is zero,
  ///         `options.faults.probability` is outside [0, 1], or GPULIFE_SIM_SEED is malformed
  [[nodiscard]] static Device sim(SimOptions options = {});
  /// @brief The CUDA device `ordinal`: the same device object for every call while any handle
  /// to it lives (streams and events of one handle work with the other; one device closes once).
  /// @throws CudaError if CUDA is not available or the ordinal is out of range
  [[nodiscard]] static Device cuda(int ordinal = 0);
  /// @brief Probes the CUDA runtime. Never throws: "no device" and "driver insufficient" mean
  /// not available.
  [[nodiscard]] static CudaProbe probe_cuda() noexcept;
  /// @brief The device gpulife uses by default.
  ///
  /// GPULIFE_DEVICE=cuda or sim forces one; otherwise CUDA device 0 when one answers, else a new
  /// simulated device, after one line on stderr that says why.
  /// @throws std::invalid_argument if GPULIFE_DEVICE holds another value
  /// @throws CudaError if GPULIFE_DEVICE=cuda and no CUDA device answers
  [[nodiscard]] static Device select();

  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  /// @return the backend; @throws std::invalid_argument if empty
  [[nodiscard]] BackendKind kind() const { return impl().kind(); }
  /// @return the device's index within its backend; @throws std::invalid_argument if empty
  [[nodiscard]] int ordinal() const { return impl().ordinal(); }
  /// @return e.g. "sim:0 (simulated, 16.0 GiB)" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  [[nodiscard]] std::string name() const { return impl().name(); }
  /// @throws CudaError on backend failure
  [[nodiscard]] MemoryInfo memory_info() const { return impl().memory_info(); }
  /// @brief Blocks until all work on all of the device's streams has executed.
  void synchronize() const { impl().synchronize(); }

  /// @return the device's default stream. On CUDA it is the legacy default stream; gpulife's own
  /// streams are non-blocking, so it does not synchronise with them implicitly.
  [[nodiscard]] StreamView default_stream() const { return StreamView{&impl().default_stream()}; }
  /// @return a new stream from the device's pool
  [[nodiscard]] Stream create_stream() const { return Stream{*this}; }
  /// @return a new event from the device's pool
  [[nodiscard]] Event create_event() const { return Event{*this}; }

  /// @brief Page-locked host memory (cudaMallocHost); copies from and to it are asynchronous.
  /// @throws OutOfMemoryError when the host cannot provide it
  [[nodiscard]] void* allocate_pinned(std::size_t bytes) const {
    return impl().allocate_pinned(bytes);
  }
  /// @brief Frees memory from `allocate_pinned`.
  void deallocate_pinned(void* ptr) const noexcept { impl().deallocate_pinned(ptr); }
  /// @brief The device's cache of page-locked host blocks, which `HostBuffer::copy_pinned` and
  /// the staging buffers use: blocks given back are reused rather than freed.
  /// @throws std::invalid_argument if empty
  [[nodiscard]] PinnedHostCache& pinned_host_cache() const { return impl().pinned_host_cache(); }

  /// @brief The violations the simulated device has seen since the last call; they are removed.
  /// Always empty on CUDA.
  [[nodiscard]] std::vector<SimViolation> take_violations() const {
    return impl().take_violations();
  }
  /// @return how many violations the simulated device has seen in all (0 on CUDA)
  [[nodiscard]] std::size_t violation_count() const noexcept {
    return impl_ ? impl_->violation_count() : 0;
  }

  /// @brief Replaces the faults the simulated device injects (`SimOptions::faults`): the draws
  /// restart from `faults.seed` and `every_nth` counts from the call after this one. Does
  /// nothing on CUDA.
  /// @throws std::invalid_argument if `faults.probability` is outside [0, 1], or if empty
  void set_faults(const SimFaults& faults) const { impl().set_faults(faults); }
  /// @brief Turns fault injection on or off, keeping the faults chosen (on by default): a test
  /// turns it off around the steps that verify what the faults left behind.
  ///
  /// Takes effect for API calls that start after it returns. Does nothing on CUDA or if empty.
  void set_faults_enabled(bool enabled) const noexcept {
    if (impl_) impl_->set_faults_enabled(enabled);
  }
  /// @return true while the simulated device injects its faults (false on CUDA)
  [[nodiscard]] bool faults_enabled() const noexcept {
    return impl_ ? impl_->faults_enabled() : false;
  }
  /// @return how many faults the simulated device has injected so far (0 on CUDA)
  [[nodiscard]] std::uint64_t injected_faults() const noexcept {
    return impl_ ? impl_->injected_faults() : 0;
  }

  /// @return on a simulated device in seeded mode (`SimSchedule::seeded`), the value of
  /// GPULIFE_SIM_SEED that replays its schedule, e.g. "1234" or "pct:1234"; otherwise "" (also
  /// when empty)
  [[nodiscard]] std::string replay_seed() const { return impl_ ? impl_->replay_seed() : ""; }
  /// @brief Restarts a seeded simulated device's scheduler from `seed` (its policy stays), after
  /// synchronising the device: from here on the device schedules as one created with that seed
  /// would. For programs that reuse a device for many runs (a fuzzer with one context per
  /// process). Does nothing in threads mode or on CUDA.
  /// @throws std::invalid_argument if empty
  void reseed(std::uint64_t seed) const { impl().reseed(seed); }

  /// @return the backend device
  /// @throws std::invalid_argument if empty
  [[nodiscard]] detail::DeviceImpl& impl() const;
  /// @return the shared backend device (null if empty)
  [[nodiscard]] const std::shared_ptr<detail::DeviceImpl>& shared_impl() const noexcept {
    return impl_;
  }

  /// @return true if both handles refer to the same device
  friend bool operator==(const Device& a, const Device& b) noexcept { return a.impl_ == b.impl_; }

 private:
  std::shared_ptr<detail::DeviceImpl> impl_;
};

}  // namespace gpulife
