// SPDX-License-Identifier: Apache-2.0
#pragma once

// The simulated device's classes, shared by the files that implement it, one concern each:
//   sim_device.cpp  the device: lifecycle, stream and event pools, violations, injected faults
//   sim_stream.cpp     the queues: each stream an in-order queue of operations; in threads mode
//                      run by the stream's own worker thread
//   sim_scheduler.cpp  seeded mode: one scheduler runs every stream's queue (sim_scheduler.hpp)
//   sim_memory.cpp     the memory model: allocations, sub-allocated blocks, pinned memory, checks
// Device memory is host memory, and every queued access is checked against the allocation state
// at the moment it executes. The sim is the only device the test suites see, so it follows
// CUDA's stream semantics rather than what would be convenient.

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

namespace gpulife::detail::sim {

inline constexpr unsigned char poison_value = 0xDB;
inline constexpr std::size_t sim_alignment = 256;

inline std::size_t round_up(std::size_t bytes) {
  return (bytes + sim_alignment - 1) / sim_alignment * sim_alignment;
}

inline std::uintptr_t address(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr); }

class SimDevice;
class SimScheduler;

// CUDA's rule for host functions: a host function (cudaLaunchHostFunc) "must not make any CUDA
// API calls" and must not wait for device work. The stream worker marks its thread while it runs
// one (sim_stream.cpp), and the entry points that would be CUDA calls on a GPU (pinned memory,
// synchronisation, closing the device) report a misuse through the error handler. The sim's
// general checker of CUDA's API rules replaces this later.
inline thread_local const char* running_host_function = nullptr;
void check_not_in_host_function(const char* call) noexcept;

// One record of an event. Streams that wait hold the node, so re-recording the event (or
// returning it to the pool) never changes what an earlier wait waits for, as in CUDA.
class SimEventNode {
 public:
  SimEventNode() = default;
  /// A record on lane `lane` of a seeded device's scheduler: whoever waits for the node drives
  /// that scheduler until the record has executed (see `wait_node`).
  SimEventNode(SimScheduler* scheduler, std::size_t lane) : scheduler_(scheduler), lane_(lane) {}

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
  /// Blocks until `complete` ran (threads mode: a worker completes it).
  void wait() const noexcept { done_.wait(false, std::memory_order_acquire); }

  /// Null when a worker thread completes the node (threads mode).
  [[nodiscard]] SimScheduler* scheduler() const noexcept { return scheduler_; }
  [[nodiscard]] std::size_t lane() const noexcept { return lane_; }
  /// The record's position on its lane; set by the scheduler, read under its mutex (0: the
  /// record is not queued yet).
  std::uint64_t ticket = 0;

 private:
  SimScheduler* const scheduler_ = nullptr;
  const std::size_t lane_ = 0;
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
  std::shared_ptr<SimEventNode> begin_record(SimScheduler* scheduler, std::size_t lane) {
    auto node = std::make_shared<SimEventNode>(scheduler, lane);
    std::scoped_lock lock(mutex_);
    latest_ = node;
    return node;
  }
  void reset() {
    std::scoped_lock lock(mutex_);
    latest_.reset();
  }

  bool query() override;        // sim_stream.cpp
  void synchronize() override;  // sim_stream.cpp
  void* native_handle() noexcept override { return this; }

 private:
  std::mutex mutex_;
  std::shared_ptr<SimEventNode> latest_;
};

enum class FaultSite { copy, memset, kernel, allocation, stream_operation };

/// Blocks until `node` completed; on a seeded device the calling thread runs the queued work
/// the record depends on.
void wait_node(const SimEventNode& node);
/// True if `node` completed; on a seeded device the calling thread may run some queued work
/// first (never blocking on a host function).
bool query_node(const SimEventNode& node);

/// One queued operation of a stream.
struct SimOp {
  enum class Kind : std::uint8_t {
    device,         ///< a copy, memset, kernel or bookkeeping: runs wherever the queue runs
    host_function,  ///< `cudaLaunchHostFunc`: runs on a host thread, may block
    wait,           ///< `cudaStreamWaitEvent`: holds the stream until `after` completed
  };
  Kind kind = Kind::device;
  std::function<void()> run{};            // device, host_function
  std::shared_ptr<SimEventNode> after{};  // wait
  SimEventNode* completes = nullptr;      // an event record: the node `run` completes
};

/// Runs `op.run` (not a wait), reporting what it throws through the error handler: a queued
/// operation has no caller to throw to.
void run_op(std::uint64_t stream_id, std::function<void()>& run) noexcept;

/// The staged sources of copies from pageable memory: chunks carved in order and recycled when
/// every copy staged in them has executed, instead of a fresh allocation per copy. Thread-safe.
class StagingArena {
 public:
  struct Chunk;
  struct Lease {
    unsigned char* data = nullptr;
    Chunk* chunk = nullptr;
  };
  StagingArena() = default;
  StagingArena(const StagingArena&) = delete;
  StagingArena& operator=(const StagingArena&) = delete;
  ~StagingArena();

  /// Room for `bytes` bytes (> 0); @throws std::bad_alloc
  Lease acquire(std::size_t bytes);
  /// Gives back what `acquire` returned, once the copy has read it.
  void release(const Lease& lease) noexcept;

 private:
  static constexpr std::size_t chunk_bytes = std::size_t{256} << 10;
  static constexpr std::size_t spare_chunks = 2;
  static void destroy(Chunk* chunk) noexcept;

  std::mutex mutex_;
  Chunk* current_ = nullptr;
  std::vector<Chunk*> spares_;
};

class SimStream final : public StreamImpl {
 public:
  /// `index`: the stream's position on its device (0: the default stream, then in order of
  /// creation); it seeds the delay and names the scheduler's lane.
  SimStream(SimDevice& device, std::uint64_t id, std::size_t index);
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
  std::uint64_t enqueue(SimOp op);
  /// Queues a device operation.
  std::uint64_t enqueue(std::function<void()> run) { return enqueue(SimOp{.run = std::move(run)}); }
  /// Queues an operation that only updates the device's bookkeeping (an event record, a
  /// liveness mark, a stream-ordered free). When nothing is queued before it and the delay
  /// option is off it runs at once on the calling thread: that is exactly when the worker would
  /// run it, and it saves waking the worker for a few instructions.
  /// `completes`: the node the operation completes, when it is an event record.
  void enqueue_bookkeeping(std::function<void()> op, SimEventNode* completes = nullptr);
  /// Blocks until the op with `ticket` has executed.
  void wait_for(std::uint64_t ticket);
  /// Stops the worker after the queued work has executed (threads mode).
  void stop();

  [[nodiscard]] std::size_t index() const noexcept { return index_; }

 private:
  void run();

  SimDevice& device_;
  const std::uint64_t id_;
  const std::size_t index_;
  SimScheduler* const scheduler_;  // seeded mode: runs this stream's queue (lane `index_`)
  // ---- threads mode ----
  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<SimOp> queue_;
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

/// Seeds stream `index`'s delay generator: a function of the seed and the stream's place on its
/// device alone, so that a test run alone (--gtest_filter) draws the delays it draws in the suite.
std::uint64_t delay_stream_seed(std::uint64_t delay_seed, std::size_t index) noexcept;

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
  std::shared_ptr<StreamImpl> native_stream(void* native) override;

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
  // Virtual memory management (sim_vmm.cpp).
  std::size_t vmm_granularity() const noexcept override { return options_.vmm_granularity; }
  void* reserve_address_range(std::size_t bytes) override;
  void release_address_range(void* base, std::size_t bytes) noexcept override;
  void map_memory(void* ptr, std::size_t bytes) override;
  void unmap_memory(void* ptr, std::size_t bytes) noexcept override;
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

  /// Seeded mode: the scheduler that runs every stream's queue; null in threads mode.
  [[nodiscard]] SimScheduler* scheduler() const noexcept { return scheduler_.get(); }
  /// The staged sources of pageable copies.
  StagingArena& staging() noexcept { return staging_; }
  std::string replay_seed() const override;
  void reseed(std::uint64_t seed) override;

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
    bool sub = false;               // liveness is tracked per block handed out by a sub-allocator
    bool external = false;          // lent by another owner (register_external): never freed here
    std::size_t external_refs = 0;  // registrations of ranges inside it
    std::map<std::uintptr_t, Block> blocks;
    std::string label;
    bool vmm = false;  // a reserved virtual range (sim_vmm.cpp): external, host owned by vmm_
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
  // Reserved virtual ranges (sim_vmm.cpp): their host address space and mapped chunks.
  struct VmmRange {
    VmmRange(void* at, std::size_t size) noexcept : base(at), bytes(size) {}
    VmmRange(const VmmRange&) = delete;
    VmmRange& operator=(const VmmRange&) = delete;
    ~VmmRange();
    void* base;
    std::size_t bytes;
    std::vector<std::uint8_t> chunks;  // 1 where a chunk is mapped
  };
  std::map<std::uintptr_t, VmmRange> vmm_;  // memory_mutex_

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

  StagingArena staging_;
  // Constructed before the streams and destroyed after them: their lanes live in it.
  std::unique_ptr<SimScheduler> scheduler_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<SimStream>> streams_;
  std::vector<SimStream*> free_streams_;
  std::vector<std::unique_ptr<SimEvent>> events_;
  std::vector<SimEvent*> free_events_;
  std::unique_ptr<SimStream> default_stream_;
};

}  // namespace gpulife::detail::sim
