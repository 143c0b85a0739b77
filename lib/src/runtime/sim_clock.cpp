// SPDX-License-Identifier: Apache-2.0
// The simulated device's virtual time (sim_clock.hpp).

#include "runtime/sim_clock.hpp"

#include <algorithm>

namespace gpulife::detail::sim {

namespace {

// GB/s (1e9 bytes per second) to nanoseconds for `bytes`.
double transfer_ns(std::size_t bytes, double gbps) noexcept {
  return static_cast<double>(bytes) / gbps;
}

}  // namespace

SimClock::SimClock(DeviceProfile profile, bool count_host_time)
    : profile_(std::move(profile)), count_host_time_(count_host_time) {}

SimClock::HostState& SimClock::host_locked() {
  auto [it, inserted] = hosts_.try_emplace(std::this_thread::get_id());
  if (inserted) it->second.now = latest_host_;
  return it->second;
}

SimClock::Call::Call(SimClock* clock) noexcept : clock_(clock) {
  if (clock_ == nullptr) return;
  const auto real = std::chrono::steady_clock::now();
  try {
    std::scoped_lock lock(clock_->mutex_);
    HostState& host = clock_->host_locked();
    if (host.depth++ == 0 && clock_->count_host_time_ && host.has_last) {
      host.now += static_cast<double>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(real - host.last).count());
    }
  } catch (...) {
    clock_ = nullptr;  // no memory for this thread's clock: the call goes untimed
  }
}

SimClock::Call::~Call() {
  if (clock_ == nullptr) return;
  std::scoped_lock lock(clock_->mutex_);  // the thread's entry exists: nothing allocates
  HostState& host = clock_->host_locked();
  if (--host.depth == 0) {
    host.last = std::chrono::steady_clock::now();
    host.has_last = true;
  }
  clock_->latest_host_ = std::max(clock_->latest_host_, host.now);
}

double SimClock::submit(std::uint64_t stream, Engine engine, double host_ns, double device_ns) {
  std::scoped_lock lock(mutex_);
  HostState& host = host_locked();
  host.now += host_ns;
  double& stream_time = streams_[stream];
  double start = std::max(stream_time, host.now);
  if (engine != Engine::none) start = std::max(start, engines_[static_cast<int>(engine)]);
  const double end = start + device_ns;
  stream_time = end;
  if (engine != Engine::none) engines_[static_cast<int>(engine)] = end;
  return end;
}

double SimClock::queue(std::uint64_t stream, Engine engine, double device_ns, bool blocks_host) {
  const double end = submit(stream, engine, us(profile_.launch_us), device_ns);
  if (blocks_host) host_join(end, 0);
  return end;
}

void SimClock::charge(double host_ns) noexcept {
  // Within a Call the thread's entry exists, so nothing here allocates.
  std::scoped_lock lock(mutex_);
  hosts_[std::this_thread::get_id()].now += host_ns;
}

double SimClock::record(std::uint64_t stream) {
  std::scoped_lock lock(mutex_);
  HostState& host = host_locked();
  host.now += us(profile_.event_us);
  // A record completes when the stream reaches it, and not before it was queued.
  double& stream_time = streams_[stream];
  stream_time = std::max(stream_time, host.now);
  return stream_time;
}

void SimClock::wait(std::uint64_t stream, double time) {
  std::scoped_lock lock(mutex_);
  HostState& host = host_locked();
  host.now += us(profile_.event_us);
  double& stream_time = streams_[stream];
  stream_time = std::max({stream_time, time, host.now});
}

void SimClock::host_join(double time, double sync_ns) {
  std::scoped_lock lock(mutex_);
  HostState& host = host_locked();
  host.now = std::max(host.now, time) + (host.depth <= 1 ? sync_ns : 0);
}

double SimClock::stream_ready(std::uint64_t stream) {
  std::scoped_lock lock(mutex_);
  const auto it = streams_.find(stream);
  return it == streams_.end() ? 0.0 : it->second;
}

double SimClock::device_ready() {
  std::scoped_lock lock(mutex_);
  double ready = 0;
  for (const auto& [id, time] : streams_) ready = std::max(ready, time);
  for (double engine : engines_) ready = std::max(ready, engine);
  return ready;
}

double SimClock::now() {
  const auto real = std::chrono::steady_clock::now();
  std::scoped_lock lock(mutex_);
  const HostState& host = host_locked();
  double now = host.now;
  if (count_host_time_ && host.has_last && host.depth == 0) {
    now += static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(real - host.last).count());
  }
  return now;
}

double SimClock::copy_ns(Engine engine, std::size_t bytes, bool pinned) const noexcept {
  const double gbps = engine == Engine::h2d
                          ? (pinned ? profile_.h2d_pinned_gbps : profile_.h2d_pageable_gbps)
                          : (pinned ? profile_.d2h_pinned_gbps : profile_.d2h_pageable_gbps);
  return us(profile_.copy_latency_us) + transfer_ns(bytes, gbps);
}

double SimClock::device_copy_ns(std::size_t bytes) const noexcept {
  // Read and write every byte.
  return std::max(us(profile_.kernel_min_us), transfer_ns(2 * bytes, profile_.memory_gbps));
}

double SimClock::memset_ns(std::size_t bytes) const noexcept {
  return std::max(us(profile_.kernel_min_us), transfer_ns(bytes, profile_.memory_gbps));
}

double SimClock::kernel_ns(std::span<const MemoryRange> ranges, double flops) const noexcept {
  std::size_t bytes = 0;
  for (const MemoryRange& range : ranges) {
    bytes += range.mode == Access::read_write ? 2 * range.bytes : range.bytes;
  }
  const double compute_ns = flops / profile_.compute_gflops;  // GFLOP/s: flops per ns
  return std::max({us(profile_.kernel_min_us), transfer_ns(bytes, profile_.memory_gbps), compute_ns});
}

}  // namespace gpulife::detail::sim
