// SPDX-License-Identifier: Apache-2.0
// The simulated device: its lifecycle, stream and event pools, violation reports and injected
// faults. The queues live in sim_stream.cpp, the memory model in sim_memory.cpp.

#include "runtime/sim_device.hpp"

#include "runtime/sim_scheduler.hpp"

namespace gpulife {

namespace {

std::string queue_name(std::uint64_t stream_id) {
  return stream_id == 0 ? std::string("the host") : "stream " + std::to_string(stream_id);
}

}  // namespace

std::string SimViolation::message() const {
  static constexpr const char* kinds[] = {"use after free",
                                          "access to unallocated memory",
                                          "out-of-bounds access",
                                          "overlapping allocation",
                                          "bad free",
                                          "race",
                                          "read of uninitialised memory",
                                          "freed memory was written",
                                          "CUDA API misuse"};
  std::string text = std::string("sim violation: ") + kinds[static_cast<int>(kind)] + ": " +
                     operation + " on " + queue_name(stream_id);
  if (!site.empty()) text += " (queued at " + site + ")";
  if (bytes != 0 || ptr != nullptr) {
    text += ", [" + detail::format_pointer(ptr) + ", +" + std::to_string(bytes) + ")";
  }
  if (!owner.empty()) text += " in " + owner;
  if (kind == Kind::race) {
    text += "; unordered with " + other_operation + " on " + queue_name(other_stream_id);
    if (!other_site.empty()) text += " (queued at " + other_site + ")";
    text += ": no event wait, record_stream or host synchronisation orders them";
  }
  if (!rule.empty()) text += ": " + rule;
  if (!replay_seed.empty()) text += " [sim seed: GPULIFE_SIM_SEED=" + replay_seed + " replays it]";
  return text;
}

namespace detail {
namespace sim {
namespace {

std::atomic<int> next_sim_ordinal{0};

}  // namespace

// ---- SimEvent ----------------------------------------------------------------------------------

bool SimEvent::query() {
  const SimClock::Call vt(device_.clock());
  if (vt.clock()) vt.clock()->charge_us(vt.clock()->profile().event_us);
  const auto node = latest();
  if (!node) return true;
  if (node->capture) return device_.captures().event_host_call(*node, "cudaEventQuery"), true;
  if (!query_node(*node)) return false;  // seeded mode: runs a few steps of the scheduler
  // Done only once the host's virtual clock has passed the record too: what the program decides
  // on a query then follows the profile's GPU, not how fast the simulator ran.
  if (vt.clock() && vt.clock()->now() < node->vtime) return false;
  // The host saw the record reached: it is ordered after the work the record captured.
  if (node->clock) RaceDetector::Step(device_.races()).host_join(*node->clock);
  return true;
}

void SimEvent::synchronize() {
  const auto node = latest();
  if (!node) return;
  if (device_.called_from_host_function("cudaEventSynchronize")) return;  // it may deadlock
  if (node->capture) return device_.captures().event_host_call(*node, "cudaEventSynchronize");
  const SimClock::Call vt(device_.clock());
  wait_node(*node);  // seeded mode: runs the scheduler until the record has executed
  if (vt.clock()) vt.clock()->host_join(node->vtime, vt.clock()->sync_ns());
  if (node->clock) RaceDetector::Step(device_.races()).host_join(*node->clock);
}

// ---- SimDevice ---------------------------------------------------------------------------------

SimDevice::SimDevice(SimOptions options)
    : options_(std::move(options)),
      ordinal_(next_sim_ordinal.fetch_add(1)),
      clock_(options_.profile.empty()
                 ? nullptr
                 : std::make_unique<SimClock>(DeviceProfile::select(options_.profile),
                                              options_.count_host_time)) {
  set_faults(options_.faults);
  if (options_.schedule == SimSchedule::seeded) {
    scheduler_ = std::make_unique<SimScheduler>(options_.seed, options_.policy);
  }
  if (options_.races) {
    races_ = std::make_unique<RaceDetector>(options_.uninitialized_reads, [this](SimViolation v) {
      if (v.owner.empty()) v.owner = owner_of(v.ptr, v.bytes);
      report(std::move(v));
    });
    if (options_.guard_pinned) {
      guard_ = std::make_unique<PinnedGuard>();
      races_->set_use_listener([guard = guard_.get()](const RangeUse& use, std::uint32_t agent,
                                                      std::uint64_t tick,
                                                      const std::shared_ptr<const OpRecord>& op) {
        guard->on_use(use, agent, tick, op);
      });
      races_->set_host_listener(
          [guard = guard_.get()](const VectorClock& host) { guard->on_host(host); });
      races_->set_collector([guard = guard_.get()](std::vector<SimViolation>& found) {
        if (!guard->has_recorded()) return;
        for (SimViolation& v : guard->take_recorded()) found.push_back(std::move(v));
      });
    }
  }
  default_stream_ = std::make_unique<SimStream>(*this, next_stream_id(), 0);
  if (races_) default_stream_->race_agent = races_->add_agent();
}

SimDevice::~SimDevice() {
  called_from_host_function("closing the device (cudaDeviceSynchronize, cudaStreamDestroy)");
  // Drain every queue before the memory the queued work touches goes away.
  if (scheduler_) {
    try {
      scheduler_->run_all();
    } catch (const std::exception& e) {
      report_error(std::string("sim: draining the queues at destruction failed: ") + e.what());
    }
  }
  default_stream_->stop();
  for (auto& stream : streams_) stream->stop();
  streams_.clear();
  default_stream_.reset();
  for (auto it = allocs_.begin(); it != allocs_.end();) {
    auto next = std::next(it);
    drop(it);
    it = next;
  }
  for (auto& [base, bytes] : pinned_) {
    void* ptr = reinterpret_cast<void*>(base);
    if (!guard_ || !guard_->deallocate(ptr)) std::free(ptr);
  }
}

void SimDevice::synchronize() {
  if (called_from_host_function("cudaDeviceSynchronize")) return;  // it would deadlock
  captures_.device_sync("cudaDeviceSynchronize");
  const SimClock::Call vt(clock());
  // The virtual join needs no real wait: the timelines were computed as the work was queued.
  if (clock_) clock_->host_join(clock_->device_ready(), clock_->sync_ns());
  const VectorClock reached = RaceDetector::Step(races()).all_streams();
  if (scheduler_) {
    scheduler_->run_all();
    RaceDetector::Step(races()).host_join(reached);
    return;
  }
  default_stream_->synchronize();
  std::vector<SimStream*> all;
  {
    std::scoped_lock lock(pool_mutex_);
    for (auto& stream : streams_) all.push_back(stream.get());
  }
  for (SimStream* stream : all) stream->synchronize();
  RaceDetector::Step(races()).host_join(reached);
}

StreamImpl& SimDevice::acquire_stream() {
  const SimClock::Call vt(clock());  // creating a worker thread is the simulator's time
  std::scoped_lock lock(pool_mutex_);
  if (!free_streams_.empty()) {
    SimStream* stream = free_streams_.back();
    free_streams_.pop_back();
    return *stream;
  }
  auto stream = std::make_unique<SimStream>(*this, next_stream_id(), streams_.size() + 1);
  if (races_) stream->race_agent = races_->add_agent();
  streams_.push_back(std::move(stream));
  return *streams_.back();
}

std::string SimDevice::replay_seed() const {
  return scheduler_ ? scheduler_->replay_seed() : std::string();
}

void SimDevice::reseed(std::uint64_t seed) {
  if (!scheduler_) return;
  synchronize();
  scheduler_->reseed(seed);
}

void SimDevice::release_stream(StreamImpl& stream) noexcept {
  std::scoped_lock lock(pool_mutex_);
  free_streams_.push_back(&sim_stream(stream));
}

EventImpl& SimDevice::acquire_event() {
  const SimClock::Call vt(clock());
  std::scoped_lock lock(pool_mutex_);
  if (!free_events_.empty()) {
    SimEvent* event = free_events_.back();
    free_events_.pop_back();
    return *event;
  }
  events_.push_back(std::make_unique<SimEvent>(*this));
  return *events_.back();
}

void SimDevice::release_event(EventImpl& event) noexcept {
  auto& sim_event = static_cast<SimEvent&>(event);
  sim_event.reset();  // a pooled event starts out never recorded
  std::scoped_lock lock(pool_mutex_);
  free_events_.push_back(&sim_event);
}

std::shared_ptr<StreamImpl> SimDevice::native_stream(void* native) {
  // A native handle of the sim is the stream itself; only the device's own streams are known.
  std::scoped_lock lock(pool_mutex_);
  StreamImpl* found = native == default_stream_.get() ? default_stream_.get() : nullptr;
  for (const auto& stream : streams_) {
    if (native == stream.get()) found = stream.get();
  }
  if (found == nullptr) {
    throw std::invalid_argument("stream: " + format_pointer(native) + " is not a stream of " +
                                name());
  }
  return std::shared_ptr<StreamImpl>(std::shared_ptr<void>(), found);  // the device owns it
}

std::uint64_t SimDevice::add_owner_resolver(OwnerResolver resolver) {
  std::unique_lock lock(resolver_mutex_);
  const std::uint64_t token = next_resolver_++;
  resolvers_.emplace_back(token, std::move(resolver));
  return token;
}

void SimDevice::remove_owner_resolver(std::uint64_t token) noexcept {
  std::unique_lock lock(resolver_mutex_);
  std::erase_if(resolvers_, [token](const auto& entry) { return entry.first == token; });
}

void SimDevice::report(SimViolation violation) noexcept {
  try {
    if (scheduler_) violation.replay_seed = scheduler_->replay_seed();
    if (violation.owner.empty()) {
      std::shared_lock lock(resolver_mutex_);
      for (const auto& [token, resolve] : resolvers_) {
        violation.owner = resolve(violation.ptr, violation.bytes);
        if (!violation.owner.empty()) break;
      }
    }
    {
      std::scoped_lock lock(violation_mutex_);
      // Keep the first ones: a test that fails on thousands needs only the first few.
      if (violations_.size() < 10000) violations_.push_back(violation);
    }
    violation_count_.fetch_add(1, std::memory_order_acq_rel);
    if (options_.on_violation) {
      options_.on_violation(violation);
    } else {
      report_error(violation.message());
    }
  } catch (...) {
    report_error("sim: a violation handler threw");
  }
}

std::vector<SimViolation> SimDevice::take_violations() {
  if (guard_ && guard_->has_recorded()) RaceDetector::Step{races()};  // reports what it recorded
  std::scoped_lock lock(violation_mutex_);
  return std::exchange(violations_, {});
}

std::size_t SimDevice::violation_count() const noexcept {
  if (guard_ && guard_->has_recorded()) {
    try {
      RaceDetector::Step{const_cast<SimDevice*>(this)->races()};
    } catch (...) {
      // counted at the next call
    }
  }
  return violation_count_.load(std::memory_order_acquire);
}

void SimDevice::set_faults(const SimFaults& faults) {
  if (!(faults.probability >= 0.0 && faults.probability <= 1.0)) {
    throw std::invalid_argument("faults.probability: " + std::to_string(faults.probability) +
                                " is outside [0, 1]");
  }
  std::scoped_lock lock(fault_mutex_);
  faults_ = faults;
  fault_rng_.seed(faults.seed);
  fault_calls_ = 0;
  faults_armed_.store(faults_enabled_.load(std::memory_order_acquire) &&
                          (faults.probability > 0.0 || faults.every_nth != 0),
                      std::memory_order_release);
}

void SimDevice::set_faults_enabled(bool enabled) noexcept {
  std::scoped_lock lock(fault_mutex_);
  faults_enabled_.store(enabled, std::memory_order_release);
  faults_armed_.store(enabled && (faults_.probability > 0.0 || faults_.every_nth != 0),
                      std::memory_order_release);
}

bool SimDevice::fault_chosen(FaultSite site) {
  // Relaxed is enough: a call racing with set_faults may see either setting, as a CUDA call
  // racing with a change of the environment would.
  if (!faults_armed_.load(std::memory_order_relaxed)) return false;
  bool fail = false;
  {
    std::scoped_lock lock(fault_mutex_);
    if (!faults_armed_.load(std::memory_order_relaxed)) return false;
    const SimFaults& faults = faults_;
    bool eligible = false;
    switch (site) {
      case FaultSite::copy:
        eligible = faults.copies;
        break;
      case FaultSite::memset:
        eligible = faults.memsets;
        break;
      case FaultSite::kernel:
        eligible = faults.kernels;
        break;
      case FaultSite::allocation:
        eligible = faults.allocations;
        break;
      case FaultSite::stream_operation:
        eligible = faults.stream_operations;
        break;
    }
    if (!eligible) return false;
    ++fault_calls_;
    if (faults.every_nth != 0 && fault_calls_ % faults.every_nth == 0) fail = true;
    if (faults.probability > 0.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(fault_rng_) < faults.probability) {
      fail = true;
    }
  }
  if (fail) faults_injected_.fetch_add(1, std::memory_order_acq_rel);
  return fail;
}

void SimDevice::throw_fault(FaultSite site, const char* call, std::string_view doing,
                            std::size_t bytes) {
  const std::string what = std::string(doing) + " (fault injected by SimOptions::faults)";
  switch (site) {
    case FaultSite::allocation:
      throw OutOfMemoryError("out of memory: " + std::string(call) + " failed while " + what,
                             bytes);
    case FaultSite::copy:
    case FaultSite::memset:
      throw_cuda_error(1, "cudaErrorInvalidValue", call, what);
    case FaultSite::kernel:
      // A launch error the launch itself reports, which leaves the context usable (unlike
      // cudaErrorLaunchFailure, which is sticky on a real device).
      throw_cuda_error(701, "cudaErrorLaunchOutOfResources", call, what);
    case FaultSite::stream_operation:
      break;
  }
  throw_cuda_error(999, "cudaErrorUnknown", call, what);
}

void SimDevice::maybe_fail(FaultSite site, const char* call, std::string_view doing) {
  if (fault_chosen(site)) throw_fault(site, call, doing);
}

void SimDevice::maybe_fail(FaultSite site, const char* call, std::string_view doing,
                           std::size_t bytes) {
  if (fault_chosen(site)) {
    throw_fault(site, call, std::string(doing) + " " + format_bytes(bytes), bytes);
  }
}

void SimDevice::maybe_fail(FaultSite site, const char* call, std::string_view doing,
                           std::string_view name) {
  if (fault_chosen(site)) throw_fault(site, call, std::string(doing) + " " + std::string(name));
}

}  // namespace sim

std::shared_ptr<DeviceImpl> make_sim_device(SimOptions options) {
  return std::make_shared<sim::SimDevice>(std::move(options));
}

}  // namespace detail
}  // namespace gpulife
