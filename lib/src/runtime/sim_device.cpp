// SPDX-License-Identifier: Apache-2.0
// The simulated device: device memory is host memory, every stream is an in-order queue run by
// its own worker thread, and every queued access is checked against the allocation state at the
// moment it executes. It is the only device the test suites see, so it follows CUDA's stream
// semantics rather than what would be convenient.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"
#include "runtime/backends.hpp"
#include "runtime/stream_ids.hpp"

namespace gpulife {

std::string SimViolation::message() const {
  static constexpr const char* kinds[] = {"use after free", "access to unallocated memory",
                                          "out-of-bounds access", "overlapping allocation",
                                          "bad free"};
  std::string text = std::string("sim violation: ") + kinds[static_cast<int>(kind)] + " by " +
                     operation + " on stream " + std::to_string(stream_id) + ": [" +
                     detail::format_pointer(ptr) + ", +" + std::to_string(bytes) + ")";
  if (!owner.empty()) text += " in " + owner;
  return text;
}

namespace detail {
namespace {

constexpr unsigned char poison_value = 0xDB;
constexpr std::size_t sim_alignment = 256;

std::atomic<int> next_sim_ordinal{0};

std::size_t round_up(std::size_t bytes) {
  return (bytes + sim_alignment - 1) / sim_alignment * sim_alignment;
}

std::uintptr_t address(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr); }

class SimDevice;

// One record of an event. Streams that wait hold the node, so re-recording the event (or
// returning it to the pool) never changes what an earlier wait waits for, as in CUDA.
class SimEventNode {
 public:
  // Continuations run before `done` becomes visible: whoever observes completion also observes
  // their effects (the deferred poisoning of `mark_freed` relies on it).
  void complete() {
    std::vector<std::function<void()>> continuations;
    {
      std::scoped_lock lock(mutex_);
      completing_ = true;
      continuations.swap(continuations_);
    }
    for (auto& fn : continuations) fn();
    done_.store(true, std::memory_order_release);
    done_.notify_all();
  }

  void on_complete(std::function<void()> fn) {
    {
      std::scoped_lock lock(mutex_);
      if (!completing_) {
        continuations_.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }

  [[nodiscard]] bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  void wait() const noexcept { done_.wait(false, std::memory_order_acquire); }

 private:
  std::mutex mutex_;
  bool completing_ = false;
  std::vector<std::function<void()>> continuations_;
  std::atomic<bool> done_{false};
};

class SimEvent final : public EventImpl {
 public:
  std::shared_ptr<SimEventNode> latest() {
    std::scoped_lock lock(mutex_);
    return latest_;
  }
  std::shared_ptr<SimEventNode> begin_record() {
    auto node = std::make_shared<SimEventNode>();
    std::scoped_lock lock(mutex_);
    latest_ = node;
    return node;
  }
  void reset() {
    std::scoped_lock lock(mutex_);
    latest_.reset();
  }

  bool query() override {
    const auto node = latest();
    return !node || node->done();
  }
  void synchronize() override {
    if (const auto node = latest()) node->wait();
  }
  void* native_handle() noexcept override { return this; }

 private:
  std::mutex mutex_;
  std::shared_ptr<SimEventNode> latest_;
};

enum class FaultSite { copy, memset, kernel, allocation, stream_operation };

class SimStream final : public StreamImpl {
 public:
  SimStream(SimDevice& device, std::uint64_t id);
  ~SimStream() override;

  DeviceImpl& device() noexcept override;
  std::uint64_t id() const noexcept override { return id_; }
  void* native_handle() noexcept override { return this; }

  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void memset(void* dst, int value, std::size_t bytes) override;
  void host_callback(std::function<void()> fn) override;
  void record(EventImpl& event) override;
  void wait(EventImpl& event) override;
  void synchronize() override;
  bool query() override;
  void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                          std::function<void()> body) override;

  /// Queues `op`; returns its ticket (1-based position in the stream).
  std::uint64_t enqueue(std::function<void()> op);
  /// Queues an operation that only updates the device's bookkeeping (an event record, a
  /// liveness mark, a stream-ordered free). When nothing is queued before it and the delay
  /// option is off it runs at once on the calling thread: that is exactly when the worker would
  /// run it, and it saves waking the worker for a few instructions.
  void enqueue_bookkeeping(std::function<void()> op);
  /// Blocks until the op with `ticket` has executed.
  void wait_for(std::uint64_t ticket);
  /// Stops the worker after the queued work has executed.
  void stop();

 private:
  void run();

  SimDevice& device_;
  const std::uint64_t id_;
  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<std::function<void()>> queue_;
  std::uint64_t submitted_ = 0;
  std::uint64_t completed_ = 0;
  std::size_t waiters_ = 0;
  bool idle_ = false;
  bool stop_ = false;
  // delay state: only the worker touches it
  bool delay_;
  std::uint32_t max_delay_us_;
  std::mt19937_64 rng_;
  std::thread worker_;
};

class SimDevice final : public DeviceImpl {
 public:
  explicit SimDevice(SimOptions options);
  ~SimDevice() override;

  BackendKind kind() const noexcept override { return BackendKind::sim; }
  int ordinal() const noexcept override { return ordinal_; }
  std::string name() const override {
    return "sim:" + std::to_string(ordinal_) + " (simulated, " +
           format_bytes(options_.capacity_bytes) + ")";
  }
  MemoryInfo memory_info() override {
    std::shared_lock lock(memory_mutex_);
    return {options_.capacity_bytes - used_, options_.capacity_bytes};
  }
  void synchronize() override;

  StreamImpl& default_stream() noexcept override { return *default_stream_; }
  StreamImpl& acquire_stream() override;
  void release_stream(StreamImpl& stream) noexcept override;
  EventImpl& acquire_event() override;
  void release_event(EventImpl& event) noexcept override;

  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr, std::size_t bytes) noexcept override;
  void* allocate_async(std::size_t bytes, StreamImpl& stream) override;
  void deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
  void* allocate_pinned(std::size_t bytes) override;
  void deallocate_pinned(void* ptr) noexcept override;

  void mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
  void mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                  std::span<EventImpl* const> after) noexcept override;
  void label(const void* ptr, std::string label, StreamImpl& stream) noexcept override;
  bool register_external(const void* ptr, std::size_t bytes) noexcept override;
  void unregister_external(const void* ptr) noexcept override;
  std::uint64_t add_owner_resolver(OwnerResolver resolver) override;
  void remove_owner_resolver(std::uint64_t token) noexcept override;
  std::vector<SimViolation> take_violations() override;
  std::size_t violation_count() const noexcept override {
    return violation_count_.load(std::memory_order_acquire);
  }

  // ---- used by the streams ----
  const SimOptions& options() const noexcept { return options_; }
  /// Checks, as a queued operation executes, that [ptr, ptr + bytes) is live device memory.
  bool check(const void* ptr, std::size_t bytes, std::string_view operation,
             std::uint64_t stream_id) noexcept;
  bool is_pinned(const void* ptr, std::size_t bytes) override;
  /// Throws the injected fault if `faults_` chooses this call; `bytes` is an allocation's size.
  void maybe_fail(FaultSite site, const char* call, std::string_view doing, std::size_t bytes = 0);

  void set_faults(const SimFaults& faults) override;
  void set_faults_enabled(bool enabled) noexcept override;
  bool faults_enabled() const noexcept override {
    return faults_enabled_.load(std::memory_order_acquire);
  }
  std::uint64_t injected_faults() const noexcept override {
    return faults_injected_.load(std::memory_order_acquire);
  }

 private:
  struct Block {
    std::size_t size = 0;
    bool live = true;
    std::string label;
  };
  enum class AllocState { pending, live, freed };
  struct Alloc {
    std::size_t size = 0;
    unsigned char* host = nullptr;
    AllocState state = AllocState::live;
    bool free_queued = false;
    bool sub = false;  // liveness is tracked per block handed out by a sub-allocator
    bool external = false;  // lent by another owner (register_external): never freed here
    std::size_t external_refs = 0;  // registrations of ranges inside it
    std::map<std::uintptr_t, Block> blocks;
    std::string label;
  };
  using AllocMap = std::map<std::uintptr_t, Alloc>;

  AllocMap::iterator find_alloc(std::uintptr_t addr);  // memory_mutex_ held
  void* reserve(std::size_t bytes, AllocState state, const char* call);
  void release(std::uintptr_t base) noexcept;  // memory_mutex_ held exclusively
  void poison_block(const void* ptr, std::size_t bytes) noexcept;
  void report(SimViolation violation) noexcept;
  SimStream& sim_stream(StreamImpl& stream) noexcept { return static_cast<SimStream&>(stream); }

  const SimOptions options_;
  const int ordinal_;

  mutable std::shared_mutex memory_mutex_;
  AllocMap allocs_;
  std::size_t used_ = 0;
  std::deque<std::uintptr_t> quarantine_;
  std::size_t quarantined_bytes_ = 0;
  std::map<std::uintptr_t, std::size_t> pinned_;

  // Shared while a report asks the resolvers, so that removing one waits for those reports.
  std::shared_mutex resolver_mutex_;
  std::vector<std::pair<std::uint64_t, OwnerResolver>> resolvers_;
  std::uint64_t next_resolver_ = 1;

  std::mutex violation_mutex_;
  std::vector<SimViolation> violations_;
  std::atomic<std::size_t> violation_count_{0};

  // Faults change at run time (set_faults, set_faults_enabled). `faults_armed_` is the fast path
  // every API call reads: false unless some fault is configured and injection is enabled.
  std::mutex fault_mutex_;
  SimFaults faults_;               // guarded by fault_mutex_
  std::mt19937_64 fault_rng_;      // guarded by fault_mutex_
  std::uint64_t fault_calls_ = 0;  // eligible calls since the faults were set; fault_mutex_
  std::atomic<bool> faults_enabled_{true};
  std::atomic<bool> faults_armed_{false};
  std::atomic<std::uint64_t> faults_injected_{0};

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<SimStream>> streams_;
  std::vector<SimStream*> free_streams_;
  std::vector<std::unique_ptr<SimEvent>> events_;
  std::vector<SimEvent*> free_events_;
  std::unique_ptr<SimStream> default_stream_;
};

// ---- SimStream ---------------------------------------------------------------------------------

SimStream::SimStream(SimDevice& device, std::uint64_t id)
    : device_(device),
      id_(id),
      delay_(device.options().delay),
      max_delay_us_(device.options().max_delay_us),
      rng_(device.options().delay_seed * 0x9E3779B97F4A7C15ULL + id) {
  worker_ = std::thread([this] { run(); });
}

SimStream::~SimStream() { stop(); }

void SimStream::stop() {
  {
    std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

DeviceImpl& SimStream::device() noexcept { return device_; }

std::uint64_t SimStream::enqueue(std::function<void()> op) {
  std::uint64_t ticket = 0;
  bool wake = false;
  {
    std::scoped_lock lock(mutex_);
    queue_.push_back(std::move(op));
    ticket = ++submitted_;
    wake = idle_;  // a busy worker finds the op on its own; waking it costs a system call
  }
  if (wake) work_cv_.notify_one();
  return ticket;
}

void SimStream::enqueue_bookkeeping(std::function<void()> op) {
  if (!delay_) {
    std::scoped_lock lock(mutex_);
    if (queue_.empty() && completed_ == submitted_) {
      // Held under the stream's lock so that no later operation of this stream overtakes it.
      // The operation takes only the memory lock and event-node locks, never a stream's.
      ++submitted_;
      try {
        op();
      } catch (const std::exception& e) {
        report_error(std::string("sim stream ") + std::to_string(id_) +
                     ": queued operation threw: " + e.what());
      }
      ++completed_;
      return;
    }
  }
  enqueue(std::move(op));
}

void SimStream::wait_for(std::uint64_t ticket) {
  std::unique_lock lock(mutex_);
  ++waiters_;
  done_cv_.wait(lock, [&] { return completed_ >= ticket; });
  --waiters_;
}

void SimStream::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (!stop_ && queue_.empty()) {
      idle_ = true;
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      idle_ = false;
    }
    if (queue_.empty()) return;  // stopped and drained
    std::function<void()> op = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (delay_ && max_delay_us_ > 0) {
      std::uniform_int_distribution<std::uint32_t> pick(0, max_delay_us_);
      std::this_thread::sleep_for(std::chrono::microseconds(pick(rng_)));
    }
    try {
      op();
    } catch (const std::exception& e) {
      report_error(std::string("sim stream ") + std::to_string(id_) +
                   ": queued operation threw: " + e.what());
    } catch (...) {
      report_error("sim stream " + std::to_string(id_) + ": queued operation threw");
    }
    op = nullptr;  // release what the op captured before the stream counts it as done
    lock.lock();
    ++completed_;
    if (waiters_ > 0) done_cv_.notify_all();
  }
}

void SimStream::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  device_.maybe_fail(FaultSite::copy, "cudaMemcpyAsync", "copying " + format_bytes(bytes));
  switch (kind) {
    case CopyKind::host_to_device: {
      if (device_.is_pinned(src, bytes)) {
        enqueue([this, dst, src, bytes] {
          if (device_.check(dst, bytes, "copy host_to_device (dst)", id_))
            std::memcpy(dst, src, bytes);
        });
        return;
      }
      // Pageable source: CUDA stages it before returning, so the caller may reuse the buffer
      // at once. Stage it here too.
      std::shared_ptr<unsigned char[]> staged(new unsigned char[bytes]);
      std::memcpy(staged.get(), src, bytes);
      enqueue([this, dst, staged, bytes] {
        if (device_.check(dst, bytes, "copy host_to_device (dst)", id_))
          std::memcpy(dst, staged.get(), bytes);
      });
      return;
    }
    case CopyKind::device_to_host: {
      const std::uint64_t ticket = enqueue([this, dst, src, bytes] {
        if (device_.check(src, bytes, "copy device_to_host (src)", id_))
          std::memcpy(dst, src, bytes);
      });
      // To pageable memory CUDA returns only once the copy has completed.
      if (!device_.is_pinned(dst, bytes)) wait_for(ticket);
      return;
    }
    case CopyKind::device_to_device:
      enqueue([this, dst, src, bytes] {
        const bool src_ok = device_.check(src, bytes, "copy device_to_device (src)", id_);
        const bool dst_ok = device_.check(dst, bytes, "copy device_to_device (dst)", id_);
        if (src_ok && dst_ok) std::memmove(dst, src, bytes);
      });
      return;
  }
}

void SimStream::memset(void* dst, int value, std::size_t bytes) {
  device_.maybe_fail(FaultSite::memset, "cudaMemsetAsync", "setting " + format_bytes(bytes));
  enqueue([this, dst, value, bytes] {
    if (device_.check(dst, bytes, "memset", id_)) std::memset(dst, value, bytes);
  });
}

void SimStream::host_callback(std::function<void()> fn) {
  device_.maybe_fail(FaultSite::stream_operation, "cudaLaunchHostFunc", "queueing a host callback");
  enqueue(std::move(fn));
}

void SimStream::record(EventImpl& event) {
  device_.maybe_fail(FaultSite::stream_operation, "cudaEventRecord", "recording an event");
  auto node = static_cast<SimEvent&>(event).begin_record();
  enqueue_bookkeeping([node = std::move(node)] { node->complete(); });
}

void SimStream::wait(EventImpl& event) {
  device_.maybe_fail(FaultSite::stream_operation, "cudaStreamWaitEvent", "waiting on an event");
  auto node = static_cast<SimEvent&>(event).latest();
  if (!node || node->done()) return;  // nothing recorded, or already reached: no dependency
  enqueue([node = std::move(node)] { node->wait(); });
}

void SimStream::synchronize() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  ++waiters_;
  done_cv_.wait(lock, [&] { return completed_ >= target; });
  --waiters_;
}

bool SimStream::query() {
  std::scoped_lock lock(mutex_);
  return completed_ == submitted_;
}

void SimStream::launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                   std::function<void()> body) {
  device_.maybe_fail(FaultSite::kernel, "cudaLaunchKernel", "launching kernel " + std::string(name));
  enqueue([this, operation = "kernel " + std::string(name),
           checked = std::vector<MemoryRange>(ranges.begin(), ranges.end()),
           body = std::move(body)] {
    bool ok = true;
    for (const MemoryRange& range : checked) {
      ok = device_.check(range.ptr, range.bytes, operation, id_) && ok;
    }
    if (ok) body();
  });
}

// ---- SimDevice ---------------------------------------------------------------------------------

SimDevice::SimDevice(SimOptions options)
    : options_(std::move(options)), ordinal_(next_sim_ordinal.fetch_add(1)) {
  set_faults(options_.faults);
  default_stream_ = std::make_unique<SimStream>(*this, next_stream_id());
}

SimDevice::~SimDevice() {
  // Drain every queue before the memory the queued work touches goes away.
  default_stream_->stop();
  for (auto& stream : streams_) stream->stop();
  streams_.clear();
  default_stream_.reset();
  for (auto& [base, alloc] : allocs_) std::free(alloc.host);
  for (auto& [base, bytes] : pinned_) std::free(reinterpret_cast<void*>(base));
}

void SimDevice::synchronize() {
  default_stream_->synchronize();
  std::vector<SimStream*> all;
  {
    std::scoped_lock lock(pool_mutex_);
    for (auto& stream : streams_) all.push_back(stream.get());
  }
  for (SimStream* stream : all) stream->synchronize();
}

StreamImpl& SimDevice::acquire_stream() {
  std::scoped_lock lock(pool_mutex_);
  if (!free_streams_.empty()) {
    SimStream* stream = free_streams_.back();
    free_streams_.pop_back();
    return *stream;
  }
  streams_.push_back(std::make_unique<SimStream>(*this, next_stream_id()));
  return *streams_.back();
}

void SimDevice::release_stream(StreamImpl& stream) noexcept {
  std::scoped_lock lock(pool_mutex_);
  free_streams_.push_back(&sim_stream(stream));
}

EventImpl& SimDevice::acquire_event() {
  std::scoped_lock lock(pool_mutex_);
  if (!free_events_.empty()) {
    SimEvent* event = free_events_.back();
    free_events_.pop_back();
    return *event;
  }
  events_.push_back(std::make_unique<SimEvent>());
  return *events_.back();
}

void SimDevice::release_event(EventImpl& event) noexcept {
  auto& sim_event = static_cast<SimEvent&>(event);
  sim_event.reset();  // a pooled event starts out never recorded
  std::scoped_lock lock(pool_mutex_);
  free_events_.push_back(&sim_event);
}

SimDevice::AllocMap::iterator SimDevice::find_alloc(std::uintptr_t addr) {
  auto it = allocs_.upper_bound(addr);
  if (it == allocs_.begin()) return allocs_.end();
  --it;
  if (addr >= it->first + it->second.size) return allocs_.end();
  return it;
}

void* SimDevice::reserve(std::size_t bytes, AllocState state, const char* call) {
  maybe_fail(FaultSite::allocation, call, "allocating " + format_bytes(bytes), bytes);
  const std::size_t size = round_up(bytes);
  {
    std::unique_lock lock(memory_mutex_);
    if (size > options_.capacity_bytes - used_) {
      const std::size_t used = used_;
      lock.unlock();
      throw OutOfMemoryError(std::string("out of memory: ") + call + " of " + format_bytes(bytes) +
                                 " on " + name() + ": " + format_bytes(used) + " in use, " +
                                 format_bytes(options_.capacity_bytes - used) + " free",
                             bytes);
    }
    used_ += size;
  }
  auto* host = static_cast<unsigned char*>(std::aligned_alloc(sim_alignment, size));
  std::unique_lock lock(memory_mutex_);
  if (host == nullptr) {
    used_ -= size;
    lock.unlock();
    throw OutOfMemoryError(std::string("out of memory: ") + call + " of " + format_bytes(bytes) +
                               " on " + name() + ": the host has no memory left to simulate it",
                           bytes);
  }
  // Quarantined records keep their host memory, so the host cannot hand out an address that a
  // record still covers.
  Alloc& alloc = allocs_[address(host)];
  alloc.size = size;
  alloc.host = host;
  alloc.state = state;
  return host;
}

void SimDevice::release(std::uintptr_t base) noexcept {
  auto it = allocs_.find(base);
  Alloc& alloc = it->second;
  alloc.state = AllocState::freed;
  alloc.sub = false;
  alloc.blocks.clear();
  used_ -= alloc.size;
  if (options_.poison && alloc.size <= options_.quarantine_bytes) {
    std::memset(alloc.host, poison_value, alloc.size);
    quarantine_.push_back(base);
    quarantined_bytes_ += alloc.size;
    while (quarantined_bytes_ > options_.quarantine_bytes) {
      auto oldest = allocs_.find(quarantine_.front());
      quarantine_.pop_front();
      quarantined_bytes_ -= oldest->second.size;
      std::free(oldest->second.host);
      allocs_.erase(oldest);
    }
    return;
  }
  std::free(alloc.host);
  allocs_.erase(it);
}

void* SimDevice::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  return reserve(bytes, AllocState::live, "cudaMalloc");
}


void SimDevice::deallocate(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  synchronize();  // cudaFree waits for the device
  std::optional<SimViolation> bad;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = allocs_.find(address(ptr));
    if (it == allocs_.end() || it->second.state == AllocState::freed || it->second.free_queued ||
        it->second.external) {
      bad = SimViolation{SimViolation::Kind::bad_free, "cudaFree", ptr, bytes, 0, {}};
    } else {
      release(it->first);
    }
  }
  if (bad) report(std::move(*bad));
}

void* SimDevice::allocate_async(std::size_t bytes, StreamImpl& stream) {
  if (bytes == 0) return nullptr;
  void* ptr = reserve(bytes, AllocState::pending, "cudaMallocAsync");
  // Usable in stream order: live once the stream reaches the allocation.
  sim_stream(stream).enqueue_bookkeeping([this, base = address(ptr)] {
    std::unique_lock lock(memory_mutex_);
    if (auto it = allocs_.find(base); it != allocs_.end() && it->second.state == AllocState::pending)
      it->second.state = AllocState::live;
  });
  return ptr;
}

void SimDevice::deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  if (ptr == nullptr) return;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = allocs_.find(address(ptr));
    if (it == allocs_.end() || it->second.state == AllocState::freed || it->second.free_queued ||
        it->second.external) {
      lock.unlock();
      report(SimViolation{SimViolation::Kind::bad_free, "cudaFreeAsync", ptr, bytes, stream.id(), {}});
      return;
    }
    it->second.free_queued = true;
  }
  try {
    sim_stream(stream).enqueue_bookkeeping([this, base = address(ptr)] {
      std::unique_lock lock(memory_mutex_);
      release(base);
    });
  } catch (...) {
    report_error("sim: could not queue cudaFreeAsync; memory released at device destruction");
  }
}

void* SimDevice::allocate_pinned(std::size_t bytes) {
  if (bytes == 0) return nullptr;  // as cudaMallocHost
  const std::size_t size = round_up(bytes);
  void* ptr = std::aligned_alloc(sim_alignment, size);
  if (ptr == nullptr) {
    throw OutOfMemoryError("out of memory: cudaMallocHost of " + format_bytes(bytes) + " failed",
                           bytes);
  }
  std::unique_lock lock(memory_mutex_);
  pinned_[address(ptr)] = size;
  return ptr;
}

void SimDevice::deallocate_pinned(void* ptr) noexcept {
  if (ptr == nullptr) return;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = pinned_.find(address(ptr));
    if (it == pinned_.end()) {
      lock.unlock();
      report(SimViolation{SimViolation::Kind::bad_free, "cudaFreeHost", ptr, 0, 0, {}});
      return;
    }
    pinned_.erase(it);
  }
  std::free(ptr);
}

bool SimDevice::is_pinned(const void* ptr, std::size_t bytes) {
  std::shared_lock lock(memory_mutex_);
  auto it = pinned_.upper_bound(address(ptr));
  if (it == pinned_.begin()) return false;
  --it;
  return address(ptr) + bytes <= it->first + it->second;
}

void SimDevice::mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  if (ptr == nullptr || bytes == 0) return;
  try {
    sim_stream(stream).enqueue_bookkeeping([this, ptr, bytes, stream_id = stream.id()] {
      std::optional<SimViolation> bad;
      {
        std::unique_lock lock(memory_mutex_);
        const auto addr = address(ptr);
        auto it = find_alloc(addr);
        if (it == allocs_.end() || it->second.state == AllocState::freed ||
            addr + bytes > it->first + it->second.size) {
          bad = SimViolation{SimViolation::Kind::unallocated, "sub-allocation", ptr, bytes,
                             stream_id, {}};
        } else {
          Alloc& alloc = it->second;
          alloc.sub = true;
          // Dead blocks that the new one covers are forgotten; a live one means two owners.
          auto first = alloc.blocks.upper_bound(addr);
          if (first != alloc.blocks.begin()) {
            auto prev = std::prev(first);
            if (prev->first + prev->second.size > addr) first = prev;
          }
          auto last = first;
          while (last != alloc.blocks.end() && last->first < addr + bytes) {
            if (last->second.live) {
              bad = SimViolation{SimViolation::Kind::overlap, "sub-allocation", ptr, bytes,
                                 stream_id, last->second.label};
            }
            ++last;
          }
          alloc.blocks.erase(first, last);
          alloc.blocks.emplace(addr, Block{bytes, true, {}});
        }
      }
      if (bad) report(std::move(*bad));
    });
  } catch (...) {
    report_error("sim: could not queue a sub-allocation mark");
  }
}

void SimDevice::poison_block(const void* ptr, std::size_t bytes) noexcept {
  std::optional<SimViolation> bad;
  {
    std::unique_lock lock(memory_mutex_);
    const auto addr = address(ptr);
    auto it = find_alloc(addr);
    if (it == allocs_.end() || !it->second.sub) {
      bad = SimViolation{SimViolation::Kind::bad_free, "sub-allocation free", ptr, bytes, 0, {}};
    } else {
      auto block = it->second.blocks.find(addr);
      if (block == it->second.blocks.end() || !block->second.live ||
          block->second.size != bytes) {
        bad = SimViolation{SimViolation::Kind::bad_free, "sub-allocation free", ptr, bytes, 0,
                           block != it->second.blocks.end() ? block->second.label : ""};
      } else {
        block->second.live = false;
        if (options_.poison) std::memset(const_cast<void*>(ptr), poison_value, bytes);
      }
    }
  }
  if (bad) report(std::move(*bad));
}

void SimDevice::mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                           std::span<EventImpl* const> after) noexcept {
  if (ptr == nullptr || bytes == 0) return;
  try {
    // Dead once the stream and every event have passed this point: a countdown that the last
    // of them brings to zero, so that waiting for the events adds no dependency between streams.
    auto remaining = std::make_shared<std::atomic<std::size_t>>(after.size() + 1);
    auto step = [this, ptr, bytes, remaining] {
      if (remaining->fetch_sub(1, std::memory_order_acq_rel) == 1) poison_block(ptr, bytes);
    };
    for (EventImpl* event : after) {
      auto node = static_cast<SimEvent*>(event)->latest();
      if (node) {
        node->on_complete(step);
      } else {
        step();
      }
    }
    sim_stream(stream).enqueue_bookkeeping(step);
  } catch (...) {
    report_error("sim: could not queue a sub-allocation free");
  }
}

bool SimDevice::register_external(const void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr || bytes == 0) return false;
  try {
    std::unique_lock lock(memory_mutex_);
    const auto addr = address(ptr);
    if (auto it = find_alloc(addr); it != allocs_.end()) {
      // Lent again (two borrowers of one buffer): counted, so that it stays registered until
      // the last one ends. Memory the device allocated itself is checked as it is already.
      Alloc& alloc = it->second;
      if (!alloc.external || addr + bytes > it->first + alloc.size) return false;
      ++alloc.external_refs;
      return true;
    }
    auto next = allocs_.upper_bound(addr);
    if (next != allocs_.end() && next->first < addr + bytes) return false;
    Alloc alloc;
    alloc.size = bytes;
    alloc.external = true;  // host stays null: the destructor frees nothing of it
    alloc.external_refs = 1;
    allocs_.emplace(addr, std::move(alloc));
    return true;
  } catch (...) {
    return false;  // unregistered: accesses are reported, which is safe
  }
}

void SimDevice::unregister_external(const void* ptr) noexcept {
  std::unique_lock lock(memory_mutex_);
  auto it = find_alloc(address(ptr));
  if (it != allocs_.end() && it->second.external && --it->second.external_refs == 0) {
    allocs_.erase(it);
  }
}

void SimDevice::label(const void* ptr, std::string text, StreamImpl& stream) noexcept {
  try {
    sim_stream(stream).enqueue_bookkeeping([this, ptr, text = std::move(text)]() mutable {
      std::unique_lock lock(memory_mutex_);
      const auto addr = address(ptr);
      auto it = find_alloc(addr);
      if (it == allocs_.end()) return;
      Alloc& alloc = it->second;
      if (!alloc.sub) {
        alloc.label = std::move(text);
        return;
      }
      auto block = alloc.blocks.upper_bound(addr);
      if (block == alloc.blocks.begin()) return;
      --block;
      if (addr < block->first + block->second.size) block->second.label = std::move(text);
    });
  } catch (...) {
    // a missing label only makes a report less specific
  }
}

bool SimDevice::check(const void* ptr, std::size_t bytes, std::string_view operation,
                      std::uint64_t stream_id) noexcept {
  if (bytes == 0) return true;
  using Kind = SimViolation::Kind;
  Kind kind{};
  std::string owner;
  {
    std::shared_lock lock(memory_mutex_);
    const auto addr = address(ptr);
    auto it = find_alloc(addr);
    if (it == allocs_.end()) {
      kind = Kind::unallocated;
    } else {
      const Alloc& alloc = it->second;
      owner = alloc.label;
      if (alloc.state == AllocState::freed) {
        kind = Kind::use_after_free;
      } else if (alloc.state == AllocState::pending) {
        kind = Kind::unallocated;  // its stream has not reached the allocation yet
      } else if (addr + bytes > it->first + alloc.size) {
        kind = Kind::out_of_bounds;
      } else if (!alloc.sub) {
        return true;
      } else {
        auto block = alloc.blocks.upper_bound(addr);
        if (block == alloc.blocks.begin() ||
            addr >= std::prev(block)->first + std::prev(block)->second.size) {
          kind = Kind::unallocated;
          owner.clear();
        } else {
          --block;
          owner = block->second.label;
          if (!block->second.live) {
            kind = Kind::use_after_free;
          } else if (addr + bytes > block->first + block->second.size) {
            kind = Kind::out_of_bounds;
          } else {
            return true;
          }
        }
      }
    }
  }
  report(SimViolation{kind, std::string(operation), ptr, bytes, stream_id, std::move(owner)});
  return false;
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
  std::scoped_lock lock(violation_mutex_);
  return std::exchange(violations_, {});
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

void SimDevice::maybe_fail(FaultSite site, const char* call, std::string_view doing,
                           std::size_t bytes) {
  // Relaxed is enough: a call racing with set_faults may see either setting, as a CUDA call
  // racing with a change of the environment would.
  if (!faults_armed_.load(std::memory_order_relaxed)) return;
  int code = 999;
  const char* error_name = "cudaErrorUnknown";
  bool fail = false;
  {
    std::scoped_lock lock(fault_mutex_);
    if (!faults_armed_.load(std::memory_order_relaxed)) return;
    const SimFaults& faults = faults_;
    bool eligible = false;
    switch (site) {
      case FaultSite::copy:
        eligible = faults.copies;
        code = 1;
        error_name = "cudaErrorInvalidValue";
        break;
      case FaultSite::memset:
        eligible = faults.memsets;
        code = 1;
        error_name = "cudaErrorInvalidValue";
        break;
      case FaultSite::kernel:
        // A launch error the launch itself reports, which leaves the context usable (unlike
        // cudaErrorLaunchFailure, which is sticky on a real device).
        eligible = faults.kernels;
        code = 701;
        error_name = "cudaErrorLaunchOutOfResources";
        break;
      case FaultSite::allocation:
        eligible = faults.allocations;
        code = 2;
        error_name = "cudaErrorMemoryAllocation";
        break;
      case FaultSite::stream_operation:
        eligible = faults.stream_operations;
        break;
    }
    if (!eligible) return;
    ++fault_calls_;
    if (faults.every_nth != 0 && fault_calls_ % faults.every_nth == 0) fail = true;
    if (faults.probability > 0.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(fault_rng_) < faults.probability) {
      fail = true;
    }
  }
  if (!fail) return;
  faults_injected_.fetch_add(1, std::memory_order_acq_rel);
  const std::string what = std::string(doing) + " (fault injected by SimOptions::faults)";
  if (site == FaultSite::allocation) {
    throw OutOfMemoryError("out of memory: " + std::string(call) + " failed while " + what, bytes);
  }
  throw_cuda_error(code, error_name, call, what);
}

}  // namespace

std::shared_ptr<DeviceImpl> make_sim_device(SimOptions options) {
  return std::make_shared<SimDevice>(std::move(options));
}

}  // namespace detail
}  // namespace gpulife
