// SPDX-License-Identifier: Apache-2.0
#pragma once

// The simulated device's virtual time: what a GPU described by a DeviceProfile would take for
// the work the program queues. Independent of how the sim's workers happen to run: every figure
// is computed when the work is queued (on the host thread), from the profile and the order the
// program established, so that it is the same on every run (up to the real host time between
// device calls, which counts only with `count_host_time`).
//
// Timelines (in nanoseconds of virtual time):
//   * one per stream: when the last operation queued on it completes;
//   * one per engine: the host-to-device copy engine, the device-to-host copy engine and the
//     SMs (kernels, memsets and device-to-device copies; memory-bound kernels of several
//     streams share the memory bandwidth, so running them one after the other at full
//     bandwidth takes as long as running them together at a share each);
//   * one per host thread: its clock advances by the real time the thread spends between device
//     calls (its own and gpulife's code) plus the modelled host cost of each call, and jumps
//     forward when the thread waits for the device.
// An operation starts at the latest of its stream, its engine, the host's submission and the
// events its stream waits for; an event carries the virtual time at which its stream reaches
// it.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>

#include <gpulife/runtime/device_profile.hpp>
#include <gpulife/runtime/memory_range.hpp>

namespace gpulife::detail::sim {

class SimClock {
 public:
  enum class Engine : std::uint8_t { h2d, d2h, compute, none };

  /// @param count_host_time add the real host time between device calls to the host clocks
  SimClock(DeviceProfile profile, bool count_host_time);

  [[nodiscard]] const DeviceProfile& profile() const noexcept { return profile_; }

  /// One device call on the calling thread. The outermost one adds to the thread's clock the
  /// real time since the thread's previous call ended (`count_host_time`); the real time spent
  /// inside the call is the sim's, not the GPU's, and is left out. `clock` may be null: then
  /// it does nothing (the device has no time model).
  class Call {
   public:
    explicit Call(SimClock* clock) noexcept;
    ~Call();
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    [[nodiscard]] SimClock* clock() const noexcept { return clock_; }

   private:
    SimClock* clock_;
  };

  // ---- the calls' effects (each takes the clock's lock) ----
  /// Charges `host_ns` to the calling thread, then queues an operation of `device_ns` on
  /// `stream`'s timeline and `engine`'s; returns its completion time.
  double submit(std::uint64_t stream, Engine engine, double host_ns, double device_ns);
  /// Host time only (an allocation, an event call).
  void charge(double host_ns) noexcept;
  /// `charge` in microseconds, as the profile gives them.
  void charge_us(double host_us) noexcept { charge(us(host_us)); }
  /// A queued operation as the API calls make them: the host pays a launch, the operation
  /// runs for `device_ns` on `engine`; when `blocks_host` (a pageable copy), the host waits
  /// for it. Returns its completion time.
  double queue(std::uint64_t stream, Engine engine, double device_ns, bool blocks_host);
  /// An event record: charges the host, returns the time at which the stream reaches it.
  double record(std::uint64_t stream);
  /// The stream's later work waits for `time` (an event's).
  void wait(std::uint64_t stream, double time);
  /// The calling thread waited for work that completes at `time`, then `sync_ns` more (charged
  /// once per API call: the streams a device synchronisation waits for do not add theirs).
  void host_join(double time, double sync_ns);
  /// @return when everything queued on `stream` completes
  [[nodiscard]] double stream_ready(std::uint64_t stream);
  /// @return when everything queued on the device completes
  [[nodiscard]] double device_ready();
  /// @return the calling thread's virtual time (with the real time since its last device call
  /// when `count_host_time`)
  [[nodiscard]] double now();

  // ---- the cost model, from the profile (nanoseconds) ----
  [[nodiscard]] double copy_ns(Engine engine, std::size_t bytes, bool pinned) const noexcept;
  [[nodiscard]] double device_copy_ns(std::size_t bytes) const noexcept;
  [[nodiscard]] double memset_ns(std::size_t bytes) const noexcept;
  /// A kernel (a roofline): the longer of the bytes its ranges declare (read-write counted
  /// twice) over the memory bandwidth and `flops` over the compute rate, and at least the
  /// smallest kernel's time.
  [[nodiscard]] double kernel_ns(std::span<const MemoryRange> ranges,
                                 double flops = 0) const noexcept;
  [[nodiscard]] double us(double micro) const noexcept { return micro * 1e3; }
  [[nodiscard]] double sync_ns() const noexcept { return us(profile_.sync_us); }

 private:
  struct HostState {
    double now = 0;
    std::chrono::steady_clock::time_point last{};
    bool has_last = false;
    int depth = 0;
  };
  HostState& host_locked();  // mutex_ held

  const DeviceProfile profile_;
  const bool count_host_time_;
  std::mutex mutex_;
  std::unordered_map<std::thread::id, HostState> hosts_;
  std::unordered_map<std::uint64_t, double> streams_;
  double engines_[3] = {0, 0, 0};
  double latest_host_ = 0;  // a new host thread starts here: it was created after these calls
};

}  // namespace gpulife::detail::sim
