// SPDX-License-Identifier: Apache-2.0
#pragma once

// What every benchmark binary and the report share: the device they run on, a step timer that
// reads CUDA events on a GPU and the host clock on the simulated device, and the leak check.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife::bench {

inline constexpr std::int64_t KiB = 1024;
inline constexpr std::int64_t MiB = 1024 * KiB;

/// @brief The device every benchmark of the process runs on, chosen once as `Device::select()`
/// chooses (CUDA when a device answers, else the simulated device; GPULIFE_DEVICE=cuda|sim
/// forces one). The simulated device does not poison freed memory here (`bench_sim_options`).
/// @throws what `Device::select` throws, on first use
[[nodiscard]] const Device& bench_device();

/// @return the simulated device's options for benchmarks: the defaults without poisoning, and
/// a time model: GPULIFE_SIM_PROFILE's profile, else the built-in `h100` (see
/// `bench_profile_name`)
[[nodiscard]] SimOptions bench_sim_options();

/// @return the profile under which the simulated device predicts times ("h100" unless
/// GPULIFE_SIM_PROFILE names another)
[[nodiscard]] std::string bench_profile_name();

/// @return e.g. "cuda:0 (NVIDIA H100 80GB HBM3), backend cuda"
[[nodiscard]] std::string describe_device(const Device& device);

/// @brief Times one step of device work ending on one stream.
///
/// On CUDA it records two timing events (created with timing enabled, owned by the timer) around
/// the step and returns the device time between them; host gaps that left the stream idle (a
/// synchronous cudaMalloc or cudaFree) are part of that time. On the simulated device, whose
/// kernels are host loops, it reads the host clock and synchronises the stream at the stop, so
/// that the work the step queued is counted. `stop` always waits for the step's work to finish.
/// Use it with `UseManualTime()`. On a simulated device with a time model it also reads the
/// virtual time (`Device::virtual_time_ns`): `predicted()` is what the profile's GPU would take.
class StepTimer {
 public:
  /// @throws CudaError if the events cannot be created
  explicit StepTimer(const Device& device);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  /// @brief Marks the start of a step on `stream`.
  /// @throws CudaError if recording fails
  void start(StreamView stream);
  /// @brief Marks the end of the step on `stream`, waits for it and returns its duration.
  /// @return seconds
  /// @throws CudaError if recording, waiting or reading the events fails
  double stop(StreamView stream);
  /// @return the predicted seconds of the steps timed so far (0 without a time model)
  [[nodiscard]] double predicted() const noexcept { return predicted_s_; }
  /// @return true when the device has a time model (the simulated device with a profile)
  [[nodiscard]] bool predicts() const noexcept { return predicts_; }

 private:
  Device device_;
  bool predicts_ = false;
  double virtual_start_ns_ = 0;
  double predicted_s_ = 0;
  BackendKind backend_;
  void* start_event_ = nullptr;  // cudaEvent_t on CUDA
  void* stop_event_ = nullptr;
  std::int64_t host_start_ns_ = 0;
};

/// @brief The timed loop of a step benchmark (`UseManualTime`): each iteration runs
/// `runner.step()` between `timer`'s start and stop on `runner.stream()` and reports that time.
/// `Runner` has `step()` and `stream()`.
/// @throws what `runner.step()` and the timer throw
template <class Runner>
void time_steps(benchmark::State& state, StepTimer& timer, Runner& runner) {
  for (auto _ : state) {
    timer.start(runner.stream());
    runner.step();
    state.SetIterationTime(timer.stop(runner.stream()));
  }
}

// ---- leak check ---------------------------------------------------------------------------------

/// @brief What is still alive in `ctx` once a benchmark has dropped everything it made and
/// emptied the cache: the context's leak report (benchmark contexts run in leak mode, so every
/// live tensor is listed with its size, tag and allocation site), or the live-tensor count for a
/// context without leak mode. Empty when nothing leaked. Device violations are checked once per
/// process, in `leak_summary`.
[[nodiscard]] std::string find_leaks(Context& ctx);

/// @brief At the end of a benchmark: empties `ctx`'s cache, synchronises its device and runs
/// `find_leaks`. A finding is written to stderr, shown as the run's label and kept, under the
/// benchmark's name, for `leak_summary`.
void check_for_leaks(Context& ctx, benchmark::State& state, std::string_view benchmark);

/// @brief Records a leak found by a benchmark that has no context (a bare memory resource):
/// written to stderr, shown as the run's label and kept for `leak_summary`.
void record_leak(benchmark::State& state, std::string_view benchmark, std::string_view finding);

/// @brief Synchronises `device` and collects the findings of `check_for_leaks` so far and the
/// simulated device's violations.
/// @return one line per finding; empty means no leaks
[[nodiscard]] std::vector<std::string> leak_summary(const Device& device);

// ---- odds and ends ------------------------------------------------------------------------------

/// @return `bytes` as "4.00 MiB" and the like
[[nodiscard]] std::string format_bytes(double bytes);

/// @brief Sets a counter of bytes that is a plain value per run (bytes per step, device bytes),
/// shown in binary multiples.
inline void set_bytes_counter(benchmark::State& state, const char* name, double value) {
  state.counters[name] =
      benchmark::Counter(value, benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
}

/// @brief Sets `predicted_s`, the predicted seconds per iteration under the simulated device's
/// time model, when `timer` has one (the report shows it as "predicted on <profile>").
inline void set_predicted_counter(benchmark::State& state, const StepTimer& timer) {
  if (!timer.predicts() || state.iterations() == 0) return;
  state.counters["predicted_s"] =
      benchmark::Counter(timer.predicted() / static_cast<double>(state.iterations()));
}

/// @brief Sets a counter of things that is a plain value per run (calls per step).
inline void set_count_counter(benchmark::State& state, const char* name, double value) {
  state.counters[name] = benchmark::Counter(value);
}

}  // namespace gpulife::bench
