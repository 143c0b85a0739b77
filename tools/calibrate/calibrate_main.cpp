// SPDX-License-Identifier: Apache-2.0
// gpulife_calibrate: measures, on the device Device::select() gives (a GPU when one answers),
// every figure of a DeviceProfile and writes a profile file that the simulated device's time
// model reads (SimOptions::profile, GPULIFE_SIM_PROFILE). scripts/gpu-check.sh runs it on a GPU.
//
//   gpulife_calibrate --out=h200-measured.json [--name=h200-measured] [--quick]
//   gpulife_calibrate --compare=gpu_report.json --predicted=sim_report.json [--tolerance=0.3]
//       the acceptance check: every step time the simulated device predicted (a report run
//       with the calibrated profile and the GPU's model) within the tolerance of the measured
//       one, and the strategies in the same order; exit status 0 when both hold
//
// Every figure is measured with the host clock around gpulife's own calls, a median of several
// runs: bandwidths from a sweep over sizes (the largest size's rate; the smallest size's time
// beyond it is the fixed cost), call costs from back-to-back calls. Each figure's `source` says
// how and where it was measured. On the simulated device the figures are the simulator's host
// figures, written with `calibrated: false`: that run only proves the program works.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/gpulife.hpp>
#include <gpulife/kernels/dense.hpp>
#include <gpulife/kernels/fill.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>

#include "compare.hpp"

namespace {

using gpulife::CopyKind;
using gpulife::Device;
using gpulife::DeviceProfile;
using Clock = std::chrono::steady_clock;

/// Median of `runs` timings of `fn`, in microseconds.
template <class Fn>
double median_us(int runs, Fn&& fn) {
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// Median of `runs` values that `fn` measures itself (microseconds).
template <class Fn>
double median_of(int runs, Fn&& fn) {
  std::vector<double> values;
  for (int i = 0; i < runs; ++i) values.push_back(fn());
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double since_us(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

struct Sweep {
  double gbps = 0;        // the largest size's rate
  double latency_us = 0;  // the smallest size's time beyond its bytes at that rate
};

class Calibration {
 public:
  Calibration(Device device, bool quick)
      : device_(std::move(device)),
        quick_(quick),
        stream_(device_),
        max_bytes_(device_.kind() == gpulife::BackendKind::cuda && !quick ? std::size_t{256} << 20
                                                                          : std::size_t{16} << 20),
        runs_(quick ? 3 : 7) {}

  DeviceProfile run(const std::string& name) {
    DeviceProfile p;
    p.name = name;
    p.device = device_.name();
    p.calibrated = device_.kind() == gpulife::BackendKind::cuda;
    const std::string where = "measured by gpulife_calibrate on " + p.device + " (" + today() +
                              (p.calibrated ? ")" : "; simulated device: host figures)");
    auto note = [&](const char* figure, double value, const std::string& how) {
      p.sources[figure] = where + ": " + how;
      std::printf("%s=%.4g\n", figure, value);
    };

    gpulife::DirectResource direct(device_);
    auto* dev = static_cast<std::byte*>(direct.allocate(max_bytes_));
    auto* pinned = static_cast<std::byte*>(device_.allocate_pinned(max_bytes_));
    std::vector<std::byte> pageable(max_bytes_, std::byte{1});
    std::memset(pinned, 1, max_bytes_);
    gpulife::kernels::fill(stream_, reinterpret_cast<float*>(dev), max_bytes_ / sizeof(float), 0.F);
    stream_.synchronize();

    // Host costs of the calls first: the sweeps' fixed costs are net of them.
    p.sync_us = median_us(runs_ * 4, [&] { stream_.synchronize(); });
    note("sync_us", p.sync_us, "cudaStreamSynchronize on an idle stream");
    const int batch = quick_ ? 16 : 256;
    p.launch_us =
        median_us(runs_,
                  [&] {
                    for (int i = 0; i < batch; ++i) {
                      gpulife::kernels::fill(stream_, reinterpret_cast<float*>(dev), 1, 0.F);
                    }
                  }) /
        batch;
    stream_.synchronize();
    note("launch_us", p.launch_us,
         "host time of one of " + std::to_string(batch) +
             " back-to-back launches of a one-element kernel");
    p.kernel_min_us = std::max(0.0, median_us(runs_ * 4,
                                              [&] {
                                                gpulife::kernels::fill(
                                                    stream_, reinterpret_cast<float*>(dev), 1, 0.F);
                                                stream_.synchronize();
                                              }) -
                                        p.launch_us - p.sync_us);
    note("kernel_min_us", p.kernel_min_us,
         "a one-element kernel launched and synchronised, less launch_us and sync_us");
    gpulife::Event event(device_);
    p.event_us = median_us(runs_,
                           [&] {
                             for (int i = 0; i < batch; ++i) event.record(stream_);
                           }) /
                 batch;
    stream_.synchronize();
    note("event_us", p.event_us,
         "host time of one of " + std::to_string(batch) + " back-to-back cudaEventRecord calls");
    p.host_function_us = std::max(0.0, median_us(runs_ * 4,
                                                 [&] {
                                                   stream_.view().host_callback([] {});
                                                   stream_.synchronize();
                                                 }) -
                                           p.launch_us - p.sync_us);
    note("host_function_us", p.host_function_us,
         "an empty cudaLaunchHostFunc, synchronised, less launch_us and sync_us");

    // Bandwidths: sweeps over sizes.
    call_us_ = p.launch_us + p.sync_us;
    const Sweep h2d_pinned = sweep("h2d_pinned", [&](std::size_t n) {
      stream_.view().copy(dev, pinned, n, CopyKind::host_to_device);
    });
    const Sweep h2d_pageable = sweep("h2d_pageable", [&](std::size_t n) {
      stream_.view().copy(dev, pageable.data(), n, CopyKind::host_to_device);
    });
    const Sweep d2h_pinned = sweep("d2h_pinned", [&](std::size_t n) {
      stream_.view().copy(pinned, dev, n, CopyKind::device_to_host);
    });
    const Sweep d2h_pageable = sweep("d2h_pageable", [&](std::size_t n) {
      stream_.view().copy(pageable.data(), dev, n, CopyKind::device_to_host);
    });
    const Sweep memory = sweep("memory", [&](std::size_t n) {
      gpulife::kernels::fill(stream_, reinterpret_cast<float*>(dev), n / sizeof(float), 1.F);
    });
    p.h2d_pinned_gbps = h2d_pinned.gbps;
    note("h2d_pinned_gbps", p.h2d_pinned_gbps,
         sweep_how("cudaMemcpyAsync from cudaMallocHost memory"));
    p.h2d_pageable_gbps = h2d_pageable.gbps;
    note("h2d_pageable_gbps", p.h2d_pageable_gbps,
         sweep_how("cudaMemcpyAsync from malloc'd memory"));
    p.d2h_pinned_gbps = d2h_pinned.gbps;
    note("d2h_pinned_gbps", p.d2h_pinned_gbps,
         sweep_how("cudaMemcpyAsync to cudaMallocHost memory"));
    p.d2h_pageable_gbps = d2h_pageable.gbps;
    note("d2h_pageable_gbps", p.d2h_pageable_gbps, sweep_how("cudaMemcpyAsync to malloc'd memory"));
    p.copy_latency_us = h2d_pinned.latency_us;
    note("copy_latency_us", p.copy_latency_us,
         "the smallest pinned host-to-device copy's time beyond its bytes at h2d_pinned_gbps, "
         "less launch_us and sync_us");
    p.memory_gbps = memory.gbps;
    note("memory_gbps", p.memory_gbps, sweep_how("a fill kernel writing every byte"));

    // Arithmetic rate: gpulife's dense kernel at a batch where its multiply-adds, not its bytes,
    // take the time (1024x1024 f32 weights: 4 MiB; 2 FLOPs per weight and row).
    {
      const gpulife::kernels::DenseShape shape{
          .batch = device_.kind() == gpulife::BackendKind::cuda && !quick_ ? 256U : 4U,
          .in = 1024,
          .out = 1024};
      auto* weights = reinterpret_cast<const float*>(dev);
      const float* x = weights + shape.in * shape.out;
      const float* bias = x + shape.batch * shape.in;
      float* y = const_cast<float*>(bias) + shape.out;
      auto run_dense = [&] {
        gpulife::kernels::dense(stream_, shape, weights, x, bias, y,
                                gpulife::kernels::Activation::none);
        stream_.synchronize();
      };
      run_dense();  // warm: the first launch of a kernel loads its module
      const double took_us = std::max(1e-3, median_us(runs_, run_dense) - p.launch_us - p.sync_us);
      const double flops = 2.0 * static_cast<double>(shape.batch * shape.in * shape.out);
      p.compute_gflops = flops / (took_us * 1e3);
      note("compute_gflops", p.compute_gflops,
           "gpulife's dense kernel, f32, " + std::to_string(shape.batch) +
               " rows of 1024 inputs and outputs, synchronised, less launch_us and sync_us");
    }

    // Allocation latencies.
    constexpr std::size_t block = std::size_t{1} << 20;
    p.malloc_us = median_of(runs_, [&] {
      const auto start = Clock::now();
      void* q = direct.allocate(block);
      const double took = since_us(start);
      direct.deallocate(q, block);
      return took;
    });
    p.free_us = median_of(runs_, [&] {
      void* q = direct.allocate(block);
      const auto start = Clock::now();
      direct.deallocate(q, block);
      return since_us(start);
    });
    note("malloc_us", p.malloc_us, "cudaMalloc of 1 MiB");
    note("free_us", p.free_us, "cudaFree of 1 MiB on an idle device");
    gpulife::AsyncResource async(device_);
    async.deallocate(async.allocate(block, stream_), block, stream_);  // the pool holds it now
    stream_.synchronize();
    p.malloc_async_us = median_us(runs_ * 4, [&] {
      void* q = async.allocate(block, stream_);
      async.deallocate(q, block, stream_);
    });
    p.free_async_us = p.malloc_async_us / 2;
    p.malloc_async_us /= 2;
    stream_.synchronize();
    note("malloc_async_us", p.malloc_async_us,
         "half a cudaMallocAsync+cudaFreeAsync pair of 1 MiB served from the warm pool");
    note("free_async_us", p.free_async_us, "the other half of that pair");
    const std::size_t small_pinned = std::size_t{1} << 20;
    const double host_small =
        median_us(runs_, [&] { device_.deallocate_pinned(device_.allocate_pinned(small_pinned)); });
    const double host_large =
        median_us(runs_, [&] { device_.deallocate_pinned(device_.allocate_pinned(max_bytes_)); });
    p.free_host_us = median_of(runs_, [&] {
      void* q = device_.allocate_pinned(small_pinned);
      const auto start = Clock::now();
      device_.deallocate_pinned(q);
      return since_us(start);
    });
    const double gib = static_cast<double>(std::size_t{1} << 30);
    p.malloc_host_us_per_gib = std::max(
        0.0, (host_large - host_small) / (static_cast<double>(max_bytes_ - small_pinned) / gib));
    p.malloc_host_us =
        std::max(0.0, host_small - p.free_host_us -
                          p.malloc_host_us_per_gib * static_cast<double>(small_pinned) / gib);
    note("malloc_host_us", p.malloc_host_us,
         "cudaMallocHost of 1 MiB less the per-GiB part (pairs with cudaFreeHost less "
         "free_host_us)");
    note("malloc_host_us_per_gib", p.malloc_host_us_per_gib,
         "cudaMallocHost of " + std::to_string(max_bytes_ >> 20) + " MiB against 1 MiB");
    note("free_host_us", p.free_host_us, "cudaFreeHost of 1 MiB");

    device_.deallocate_pinned(pinned);
    direct.deallocate(dev, max_bytes_);
    return p;
  }

 private:
  template <class Op>
  Sweep sweep(const char* what, Op&& op) {
    std::vector<std::pair<std::size_t, double>> points;  // bytes, us
    for (std::size_t n = std::size_t{64} << 10; n <= max_bytes_; n *= 4) {
      op(n);  // warm
      stream_.synchronize();
      const double t = median_us(runs_, [&] {
        op(n);
        stream_.synchronize();
      });
      points.emplace_back(n, t);
      std::printf("sweep_%s_%zuKiB_us=%.4g\n", what, n >> 10, t);
    }
    Sweep result;
    const auto& [big, big_us] = points.back();
    result.gbps = static_cast<double>(big) / (big_us * 1e3);  // bytes per ns = GB/s
    const auto& [small, small_us] = points.front();
    result.latency_us =
        std::max(0.0, small_us - static_cast<double>(small) / result.gbps / 1e3 - call_us_);
    return result;
  }
  std::string sweep_how(const char* op) const {
    return op + std::string(", sizes 64 KiB to ") + std::to_string(max_bytes_ >> 20) +
           " MiB by 4x, each synchronised, median of " + std::to_string(runs_) +
           "; the largest size's rate";
  }
  static std::string today() {
    const std::time_t now = std::time(nullptr);
    char text[32];
    std::tm utc{};
    gmtime_r(&now, &utc);
    std::strftime(text, sizeof text, "%Y-%m-%d", &utc);
    return text;
  }

  Device device_;
  bool quick_;
  gpulife::Stream stream_;
  std::size_t max_bytes_;
  int runs_;
  double call_us_ = 0;  // launch_us + sync_us: a sweep point's time that is not the transfer's
};

int usage(const char* argv0, const std::string& why) {
  std::fprintf(
      stderr,
      "%s: %s\nusage: %s --out=FILE [--name=NAME] [--quick]\n"
      "       %s --compare=GPU_REPORT.json --predicted=SIM_REPORT.json [--tolerance=0.3]\n",
      argv0, why.c_str(), argv0, argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  std::string name = "calibrated";
  bool quick = false;
  std::string compare;
  std::string predicted;
  double tolerance = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--compare=")) {
      compare = arg.substr(10);
    } else if (arg.starts_with("--predicted=")) {
      predicted = arg.substr(12);
    } else if (arg.starts_with("--tolerance=")) {
      char* end = nullptr;
      const std::string text(arg.substr(12));
      tolerance = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0') return usage(argv[0], "--tolerance: not a number");
    } else if (arg.starts_with("--out=")) {
      out = arg.substr(6);
    } else if (arg.starts_with("--name=")) {
      name = arg.substr(7);
    } else if (arg == "--quick") {
      quick = true;
    } else {
      return usage(argv[0], "unknown argument '" + std::string(arg) + "'");
    }
  }
  if (!compare.empty() || !predicted.empty()) {
    if (compare.empty() || predicted.empty()) {
      return usage(argv[0], "--compare and --predicted go together");
    }
    try {
      return gpulife::tools::compare_reports(compare, predicted, tolerance);
    } catch (const std::invalid_argument& e) {
      return usage(argv[0], e.what());
    }
  }
  if (out.empty()) return usage(argv[0], "--out=FILE is required");
  if (name.empty()) return usage(argv[0], "--name is empty");
  try {
    const Device device = Device::select();
    std::printf("device=%s\n", device.name().c_str());
    if (device.kind() != gpulife::BackendKind::cuda) {
      std::printf(
          "note=simulated device: these are the simulator's host figures, not a GPU's; "
          "the profile is written with calibrated=false\n");
    }
    const DeviceProfile profile = Calibration(device, quick).run(name);
    {
      std::ofstream file(out, std::ios::binary | std::ios::trunc);
      file << profile.to_json();
      if (!file) throw std::runtime_error("could not write " + out);
    }
    // What was written must be what the simulated device reads.
    const DeviceProfile back = DeviceProfile::load(out);
    gpulife::SimOptions options;
    options.profile = out;
    if (Device::sim(options).time_profile()->name != back.name) {
      throw std::logic_error("the simulated device did not take the profile written");
    }
    std::printf("profile_written=%s\n", out.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife_calibrate: %s\n", e.what());
    return 1;
  }
}
