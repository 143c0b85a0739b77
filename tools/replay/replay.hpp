// SPDX-License-Identifier: Apache-2.0
#pragma once

// gpulife's replay engine: replays an allocation trace against a memory resource on a model
// device that has no memory at all (a fake address space), so that traces of tens of GiB replay
// on any machine. The model device keeps a virtual clock (one tick per trace operation): work
// queued on a stream at tick t has executed at tick t + lag, or when the host synchronised. Its
// counters are what the replay reports: the most physical memory held at once (segments and
// stream-ordered allocations not yet freed on the device, mapped chunks), the calls that reached
// it, and the host's synchronisations. Every policy sees the same trace, clock and device.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/runtime/device.hpp>

#include "traces/trace.hpp"

namespace gpulife::replay {

/// The model device's settings.
struct DeviceModel {
  std::size_t capacity_bytes = std::size_t{80} * 1000 * 1000 * 1000;  ///< an 80 GB H100
  std::uint64_t lag = 0;  ///< ticks (trace operations) the device runs behind the host
  std::size_t granularity = std::size_t{2} << 20;  ///< of virtual memory mapping; 0: none
};

/// The model device's counters.
struct DeviceCounters {
  std::size_t physical_bytes = 0;       ///< held now
  std::size_t peak_physical_bytes = 0;  ///< held at most
  std::uint64_t allocations = 0;        ///< cudaMalloc and cudaMallocAsync calls
  std::uint64_t frees = 0;              ///< cudaFree and cudaFreeAsync calls
  std::uint64_t maps = 0;               ///< map calls (physical chunks mapped)
  std::uint64_t unmaps = 0;             ///< unmap calls
  std::uint64_t synchronizations = 0;   ///< device, stream and event synchronisations
  std::uint64_t stream_waits = 0;       ///< cudaStreamWaitEvent calls
  std::uint64_t events_recorded = 0;    ///< cudaEventRecord calls
  std::uint64_t out_of_memory = 0;      ///< allocations or maps refused for capacity
};

/// A model device (see the file comment). `set_now` advances its clock.
class ModelDevice {
 public:
  explicit ModelDevice(DeviceModel model);
  ~ModelDevice();
  ModelDevice(const ModelDevice&) = delete;
  ModelDevice& operator=(const ModelDevice&) = delete;

  [[nodiscard]] const Device& device() const noexcept { return device_; }
  /// The stream standing for the trace's stream `index` (made on first use).
  [[nodiscard]] StreamView stream(std::uint32_t index);
  void set_now(std::uint64_t tick) noexcept;
  [[nodiscard]] DeviceCounters counters() const noexcept;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
  Device device_;
  std::vector<Stream> streams_;
};

/// The policies a trace can be replayed with.
///   v2                  PoolResource, default options (expandable segments where supported)
///   v2-segments         PoolResource with segments from upstream (expandable off)
///   v2-completed        PoolResource, CrossStreamReuse::completed
///   v1                  the first PoolResource (size classes, no split), for comparison
///   async               AsyncResource alone (the model device's stream-ordered allocator,
///                       an ideal one: no fragmentation, memory reusable once its free executed)
///   pytorch             a model of PyTorch's caching allocator, default settings (PyTorchModel)
///   pytorch-expandable  the same with expandable_segments:True
///   rmm                 a model of RMM's pool_memory_resource (RmmPoolModel)
std::vector<std::string> policy_names();

/// @throws std::invalid_argument naming `policy` if unknown
std::shared_ptr<DeviceMemoryResource> make_policy(const std::string& policy, const Device& device);

/// What a replay measured.
struct ReplayResult {
  std::string trace;
  std::string policy;
  std::uint64_t lag = 0;
  std::uint64_t operations = 0;
  std::size_t peak_live_bytes = 0;      ///< from the trace: requested bytes live at once
  std::size_t peak_reserved_bytes = 0;  ///< the model device's peak physical bytes
  std::uint64_t upstream_calls = 0;     ///< allocations, frees, maps and unmaps on the device
  std::uint64_t synchronizations = 0;
  std::uint64_t stream_waits = 0;
  std::uint64_t events_recorded = 0;
  std::uint64_t failed_allocations = 0;  ///< allocations that threw (out of memory)
  double ns_per_operation = 0;           ///< host time of the resource calls, per call
  [[nodiscard]] double ratio() const {
    return peak_live_bytes == 0 ? 0.0
                                : static_cast<double>(peak_reserved_bytes) /
                                      static_cast<double>(peak_live_bytes);
  }
};

/// Replays `trace` with `policy` on a model device.
ReplayResult replay(const traces::Trace& trace, const std::string& policy,
                    const DeviceModel& model);

}  // namespace gpulife::replay
