// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DeviceProfile`: the figures from which the simulated device predicts a GPU's time.

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace gpulife {

/// @brief What a GPU takes for each kind of work, as the simulated device's virtual time model
/// uses it (see `SimOptions::profile`).
///
/// A profile is a JSON file: `name`, `device`, `calibrated` (true only when
/// `gpulife_calibrate` measured it), and `figures`, each `{"value": number, "kind": "...",
/// "source": "..."}` where `source` says where the figure comes from. The built-in profiles
/// (`h100`, `h200`) hold published figures and estimates, each with its source; they are not
/// measurements of gpulife's own. A value type, freely copyable.
struct DeviceProfile {
  std::string name;              ///< e.g. "h100"
  std::string device;            ///< the GPU it describes, in words
  bool calibrated = false;       ///< measured on that GPU by gpulife_calibrate
  double h2d_pinned_gbps = 0;    ///< host-to-device copy from page-locked memory, GB/s (1e9)
  double h2d_pageable_gbps = 0;  ///< host-to-device copy from pageable memory, GB/s
  double d2h_pinned_gbps = 0;    ///< device-to-host copy into page-locked memory, GB/s
  double d2h_pageable_gbps = 0;  ///< device-to-host copy into pageable memory, GB/s
  double copy_latency_us = 0;    ///< fixed device time of one copy
  double memory_gbps = 0;        ///< device memory bandwidth a memory-bound kernel reaches, GB/s
  /// arithmetic rate a compute-bound kernel reaches, GFLOP/s (a multiply-add is two FLOPs): what
  /// a kernel's `KernelWork` hint is divided by
  double compute_gflops = 0;
  double kernel_min_us = 0;      ///< device time of the smallest kernel (and memset)
  double launch_us = 0;          ///< host time of a kernel launch, an async copy or a memset
  double malloc_us = 0;          ///< host time of cudaMalloc
  double free_us = 0;            ///< host time of cudaFree after its device synchronisation
  double malloc_async_us = 0;    ///< host time of cudaMallocAsync from the device's pool
  double free_async_us = 0;      ///< host time of cudaFreeAsync
  double malloc_host_us = 0;     ///< host time of cudaMallocHost, fixed part
  double malloc_host_us_per_gib = 0;  ///< host time of cudaMallocHost per GiB
  double free_host_us = 0;            ///< host time of cudaFreeHost
  double event_us = 0;                ///< host time of an event record, wait or query
  double host_function_us = 0;        ///< device time of a host function (cudaLaunchHostFunc)
  double sync_us = 0;                 ///< host time of a synchronisation beyond the wait itself
  /// Figure name (as in the file) to its source; every figure has one.
  std::map<std::string, std::string> sources;

  /// @return the names of the built-in profiles ("h100", "h200")
  [[nodiscard]] static std::vector<std::string> builtin_names();
  /// @brief A built-in profile.
  /// @throws std::invalid_argument naming `name` and the known profiles if there is none
  [[nodiscard]] static DeviceProfile builtin(std::string_view name);
  /// @brief Reads a profile file.
  /// @throws std::invalid_argument naming the file and what is wrong (missing or unreadable
  ///         file, invalid JSON, a missing, negative or non-numeric figure, a bandwidth of 0, a
  ///         figure without a source)
  [[nodiscard]] static DeviceProfile load(const std::string& path);
  /// @brief Parses a profile from JSON text; `origin` names it in errors.
  /// @throws std::invalid_argument as `load`
  [[nodiscard]] static DeviceProfile parse(std::string_view json, std::string_view origin);
  /// @brief A built-in profile's name, or else a file's path.
  /// @throws std::invalid_argument as `builtin` and `load`
  [[nodiscard]] static DeviceProfile select(std::string_view name_or_path);
  /// @return the profile as a JSON document that `parse` reads back
  [[nodiscard]] std::string to_json() const;
};

}  // namespace gpulife
