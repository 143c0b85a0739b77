// SPDX-License-Identifier: Apache-2.0
#include "support/bench_support.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>

#if defined(GPULIFE_HAS_CUDA)
#include <cuda_runtime_api.h>

#include <gpulife/errors.hpp>
#endif

namespace gpulife::bench {
namespace {

std::int64_t host_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

#if defined(GPULIFE_HAS_CUDA)
/// Every CUDA call of the benchmarks goes through here: a failure becomes `CudaError` with the
/// call and what the benchmark was doing.
void check_cuda(cudaError_t err, const char* call, const char* doing) {
  if (err != cudaSuccess) {
    detail::throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), call, doing);
  }
}

cudaEvent_t as_event(void* event) { return static_cast<cudaEvent_t>(event); }
cudaStream_t as_stream(StreamView stream) {
  return static_cast<cudaStream_t>(stream.native_handle());
}
#endif

struct LeakLog {
  std::mutex mutex;
  std::vector<std::string> findings;
};

LeakLog& leak_log() {
  static LeakLog log;
  return log;
}

}  // namespace

SimOptions bench_sim_options() {
  SimOptions options;
  // Poisoning memsets every freed byte (and a pool block at each release): on the allocation
  // trace that is about 0.9 GB per pass, which would swamp what the benchmarks compare. The
  // range checks, which catch use after free and missing synchronisation, stay on.
  options.poison = false;
  // Virtual device time: what the profile's GPU would take, beside the host figures.
  options.profile = bench_profile_name();
  return options;
}

std::string bench_profile_name() {
  const char* profile = std::getenv("GPULIFE_SIM_PROFILE");
  return profile != nullptr && *profile != '\0' ? profile : "h100";
}

namespace {

Device select_bench_device() {
  // Device::select(), with the simulated device's options above.
  const char* forced = std::getenv("GPULIFE_DEVICE");
  const std::string choice = forced != nullptr ? forced : "";
  if (choice == "sim") return Device::sim(bench_sim_options());
  if (!choice.empty()) return Device::select();  // cuda, or its error for another value
  const CudaProbe probe = Device::probe_cuda();
  if (probe.available) return Device::cuda(0);
  std::fprintf(stderr, "gpulife: no CUDA device (%s); using the simulated device\n",
               probe.reason.c_str());
  return Device::sim(bench_sim_options());
}

}  // namespace

const Device& bench_device() {
  // Chosen once: every benchmark of the process, and the report's header, see the same device.
  static const Device device = select_bench_device();
  return device;
}

std::string describe_device(const Device& device) {
  return device.name() + ", backend " + std::string(to_string(device.kind()));
}

std::string format_bytes(double bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while ((bytes >= 1024.0 || bytes <= -1024.0) && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%.0f B", bytes);
  } else {
    std::snprintf(text, sizeof text, "%.2f %s", bytes, units[unit]);
  }
  return text;
}

// ---- StepTimer ----------------------------------------------------------------------------------

StepTimer::StepTimer(const Device& device)
    : device_(device),
      predicts_(device.kind() == BackendKind::sim && device.virtual_time_ns().has_value()),
      backend_(device.kind()) {
  if (backend_ != BackendKind::cuda) return;
#if defined(GPULIFE_HAS_CUDA)
  check_cuda(cudaSetDevice(device.ordinal()), "cudaSetDevice", "selecting the benchmark's GPU");
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  // Default flags: timing enabled (gpulife's own events disable it, so the timer has its own).
  check_cuda(cudaEventCreate(&start), "cudaEventCreate", "creating a timing event");
  start_event_ = start;
  const cudaError_t err = cudaEventCreate(&stop);
  if (err != cudaSuccess) {
    cudaEventDestroy(start);
    check_cuda(err, "cudaEventCreate", "creating a timing event");
  }
  stop_event_ = stop;
#endif
}

StepTimer::~StepTimer() {
#if defined(GPULIFE_HAS_CUDA)
  // Destruction must not throw; an event that fails to go is reported and left behind.
  for (void* event : {start_event_, stop_event_}) {
    if (event == nullptr) continue;
    if (const cudaError_t err = cudaEventDestroy(as_event(event)); err != cudaSuccess) {
      std::fprintf(stderr, "gpulife bench: cudaEventDestroy failed: %s\n", cudaGetErrorName(err));
    }
  }
#endif
}

void StepTimer::start(StreamView stream) {
  if (backend_ == BackendKind::cuda) {
#if defined(GPULIFE_HAS_CUDA)
    check_cuda(cudaEventRecord(as_event(start_event_), as_stream(stream)), "cudaEventRecord",
               "recording the start of a timed step");
#endif
    return;
  }
  (void)stream;
  if (predicts_) virtual_start_ns_ = *device_.virtual_time_ns();
  host_start_ns_ = host_now_ns();
}

double StepTimer::stop(StreamView stream) {
  if (backend_ == BackendKind::cuda) {
#if defined(GPULIFE_HAS_CUDA)
    check_cuda(cudaEventRecord(as_event(stop_event_), as_stream(stream)), "cudaEventRecord",
               "recording the end of a timed step");
    check_cuda(cudaEventSynchronize(as_event(stop_event_)), "cudaEventSynchronize",
               "waiting for the end of a timed step");
    float ms = 0.0F;
    check_cuda(cudaEventElapsedTime(&ms, as_event(start_event_), as_event(stop_event_)),
               "cudaEventElapsedTime", "reading the time of a step");
    return static_cast<double>(ms) * 1e-3;
#else
    return 0.0;  // unreachable: a CUDA device needs the CUDA backend
#endif
  }
  stream.synchronize();
  const double host_s = static_cast<double>(host_now_ns() - host_start_ns_) * 1e-9;
  if (predicts_) predicted_s_ += (*device_.virtual_time_ns() - virtual_start_ns_) * 1e-9;
  return host_s;
}

// ---- leak check ---------------------------------------------------------------------------------

std::string find_leaks(Context& ctx) {
  const LeakReport report = ctx.leak_report();
  if (report.tracking) return report.has_leaks() ? report.to_text() : std::string{};
  // A context made without leak mode can only count what is alive.
  const ContextStatistics stats = ctx.statistics();
  if (stats.live_tensors == 0) return {};
  return std::to_string(stats.live_tensors) + " tensors still alive (" +
         format_bytes(static_cast<double>(stats.live_bytes)) + ") on " + ctx.device().name();
}

void check_for_leaks(Context& ctx, benchmark::State& state, std::string_view benchmark) {
  // The cache's warm and pinned entries are the context's own references, not leaks.
  ctx.cache().clear();
  ctx.device().synchronize();
  const std::string found = find_leaks(ctx);
  if (!found.empty()) record_leak(state, benchmark, found);
}

void record_leak(benchmark::State& state, std::string_view benchmark, std::string_view finding) {
  state.SetLabel("LEAK: " + std::string(finding));
  std::string line = std::string(benchmark) + ": " + std::string(finding);
  std::fprintf(stderr, "gpulife bench: leak in %s\n", line.c_str());
  LeakLog& log = leak_log();
  std::scoped_lock lock(log.mutex);
  log.findings.push_back(std::move(line));
}

std::vector<std::string> leak_summary(const Device& device) {
  std::vector<std::string> summary;
  {
    LeakLog& log = leak_log();
    std::scoped_lock lock(log.mutex);
    summary = log.findings;
  }
  device.synchronize();
  for (const SimViolation& violation : device.take_violations()) {
    summary.push_back("device violation: " + violation.message());
  }
  return summary;
}

}  // namespace gpulife::bench
