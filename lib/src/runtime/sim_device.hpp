// SPDX-License-Identifier: Apache-2.0
#pragma once

// The simulated device's classes, shared by the files that implement it, one concern each:
//   sim_device.cpp     the device: lifecycle, stream and event pools, violations, injected faults
//   sim_stream.cpp     the queues: each stream an in-order queue of operations; in threads mode
//                      run by the stream's own worker thread
//   sim_scheduler.cpp  seeded mode: one scheduler runs every stream's queue (sim_scheduler.hpp)
//   sim_memory.cpp     the memory model: allocations, sub-allocated blocks, pinned memory, checks
//   sim_races.cpp      the happens-before race detector (sim_races.hpp), run as work is queued
//   sim_api_rules.cpp  CUDA's API rules: current device, host functions, copy directions
// Device memory is host memory, and every queued access is checked against the allocation state
// at the moment it executes, and against the happens-before order when it is queued. The sim is
// the only device the test suites see, so it follows CUDA's stream semantics rather than what
// would be convenient.
//
// Host access to memory, for whoever runs queued work (the stream workers, or a scheduler that
// runs it inline on a host thread): pinned buffers from `allocate_pinned` may be protected from
// the host while a queued copy uses them (SimOptions::guard_pinned; mprotect, so the protection
// holds for every thread of the process). Queued work therefore never touches a pinned buffer
// through the address the user holds: it goes through `SimDevice::device_view(ptr)`, which
// returns the same bytes at a second, always-accessible mapping. A thread that runs queued work
// must also hold a `WorkerScope` while it does (the API rules use it to tell host threads from
// the device: a fault on a guarded buffer in such a thread is not a host access, and a CUDA
// call from a host function it runs is a violation). With SimOptions::guard_device_memory,
// device memory itself is inaccessible to host threads (sim_device_guard.hpp): the sim's own
// host-side work on it (fresh fill, poison and its verification) holds a DeviceAccessScope.
//
// Lock order for the race detector: its lock (RaceDetector::Step) is held while an operation is
// checked and queued, so it comes before a stream's lock and the memory lock. Queued operations
// may take it themselves (a host function joins the host's clock when it has run), so no queued
// operation may run inline while a Step is open: only `enqueue_bookkeeping`'s operations, which
// take the memory lock and event-node locks and never the detector's, may.

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
#include "runtime/sim_clock.hpp"
#include "runtime/sim_graph.hpp"
#include "runtime/sim_host_pages.hpp"
#include "runtime/sim_pinned_guard.hpp"
#include "runtime/sim_races.hpp"
#include "runtime/stream_ids.hpp"

namespace gpulife::detail::sim {

inline constexpr unsigned char poison_value = 0xDB;
inline constexpr unsigned char fresh_value = 0xCF;
inline constexpr std::size_t sim_alignment = 256;

inline std::size_t round_up(std::size_t bytes) {
  return (bytes + sim_alignment - 1) / sim_alignment * sim_alignment;
}

inline std::uintptr_t address(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr); }

inline SimViolation make_violation(SimViolation::Kind kind, std::string_view operation,
                                   const void* ptr, std::size_t bytes, std::uint64_t stream_id,
                                   std::string owner = {}) {
  SimViolation violation;
  violation.kind = kind;
  violation.operation = std::string(operation);
  violation.ptr = ptr;
  violation.bytes = bytes;
  violation.stream_id = stream_id;
  violation.owner = std::move(owner);
  return violation;
}

class SimDevice;
class SimScheduler;


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
  /// The recording stream's clock (race detection on); set before the node is published.
  std::shared_ptr<const ClockSnapshot> clock;
  /// A record made during stream capture (sim_graph.hpp): the capture and the record's slot.
  /// Such a node is never queued; set before the node is published.
  std::shared_ptr<SimCapture> capture;
  std::uint32_t capture_slot = 0;
  /// The virtual time at which the stream reaches the record (sim_clock.hpp); set before the
  /// node is published.
  double vtime = 0;

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
  explicit SimEvent(SimDevice& device) : device_(device) {}

  std::shared_ptr<SimEventNode> latest() {
    std::scoped_lock lock(mutex_);
    return latest_;
  }
  std::shared_ptr<SimEventNode> begin_record(SimScheduler* scheduler, std::size_t lane,
                                             std::shared_ptr<const ClockSnapshot> clock,
                                             double vtime = 0) {
    auto node = std::make_shared<SimEventNode>(scheduler, lane);
    node->clock = std::move(clock);
    node->vtime = vtime;
    std::scoped_lock lock(mutex_);
    latest_ = node;
    return node;
  }
  void reset() {
    std::scoped_lock lock(mutex_);
    latest_.reset();
  }
  void publish(std::shared_ptr<SimEventNode> node) {  // a captured record (sim_graph.cpp)
    std::scoped_lock lock(mutex_);
    latest_ = std::move(node);
  }

  bool query() override;        // sim_stream.cpp
  void synchronize() override;  // sim_stream.cpp
  void* native_handle() noexcept override { return this; }

 private:
  SimDevice& device_;
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
/// Runs queued work as the device does on a stream worker, on whatever thread calls it (the
/// seeded scheduler's host thread or host-function thread): under a WorkerScope, so that the
/// pinned and device guards treat its accesses as the device's; releases what `run` captured,
/// then closes the guarded device memory the operation opened.
void run_as_device(std::uint64_t stream_id, std::function<void()>& run) noexcept;

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
  using StreamImpl::launch_host_kernel;
  void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                          std::function<void()> body, KernelWork work) override;
  // Stream capture (sim_graph.cpp).
  void begin_capture(CaptureMode mode) override;
  std::unique_ptr<GraphImpl> end_capture() override;
  CaptureInfo capture_info() override;

  /// Seeded mode: runs queued work until the stream's queue has room (the scheduler bounds it).
  /// Call it before queueing, outside every lock that queued work may take (the race detector's
  /// Step above all): it may run queued work on the calling thread. Nothing in threads mode.
  void make_room();
  /// Queues `op`; returns its ticket (1-based position in the stream). Call `make_room` first.
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
  /// The race detector's number for this stream (set once by the device, before any use).
  std::uint32_t race_agent = 0;
  /// The capture sequence this stream belongs to, if any (sim_graph.hpp).
  SimCaptureSlot capture;

 private:
  void run();
  /// Queues `op` after the race detector has checked `uses` (sim_races.hpp); returns its ticket.
  std::uint64_t enqueue_checked(std::string operation, std::span<const RangeUse> uses,
                                std::function<void()> op);

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
  void mark_requested(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
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
  std::size_t violation_count() const noexcept override;
  /// Stream capture's registry and checks (sim_graph.cpp).
  SimCaptures& captures() noexcept { return captures_; }
  CaptureMode exchange_capture_mode(CaptureMode mode) override;

  // ---- used by the streams ----
  const SimOptions& options() const noexcept { return options_; }
  /// The virtual time model (sim_clock.hpp), or null without a profile.
  SimClock* clock() noexcept { return clock_.get(); }
  std::optional<double> virtual_time_ns() override {
    if (!clock_) return std::nullopt;
    return clock_->now();
  }
  std::optional<DeviceProfile> time_profile() const override {
    if (!clock_) return std::nullopt;
    return clock_->profile();
  }
  /// Checks, as a queued operation executes, that [ptr, ptr + bytes) is live device memory.
  bool check(const void* ptr, std::size_t bytes, std::string_view operation,
             std::uint64_t stream_id) noexcept;
  bool is_pinned(const void* ptr, std::size_t bytes) override;
  /// Throws the injected fault if `faults_` chooses this call; `doing` says what the call was
  /// doing ("recording an event").
  void maybe_fail(FaultSite site, const char* call, std::string_view doing);
  /// As above, the message saying `doing` and the size ("copying 4 KiB"), formatted only when a
  /// fault is injected; `bytes` is also an allocation's size.
  void maybe_fail(FaultSite site, const char* call, std::string_view doing, std::size_t bytes);
  /// As above, the message saying `doing` and `name` ("launching kernel fill").
  void maybe_fail(FaultSite site, const char* call, std::string_view doing, std::string_view name);

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

  // ---- race detection (sim_races.cpp) and CUDA's API rules (sim_api_rules.cpp) ----
  /// The race detector, or null when `SimOptions::races` is off.
  RaceDetector* races() noexcept { return races_.get(); }
  void host_access(const void* ptr, std::size_t bytes, Access mode) noexcept override;
  /// Makes this device the calling thread's current one (cudaSetDevice).
  void make_current() const override;
  /// `DeviceGuard`: makes it current and returns what `restore_current` needs (-1: nothing).
  int exchange_current() override;
  void restore_current(int previous) noexcept override;
  /// A device call made while a host function runs on this thread (or a destructor of its
  /// captures) is a violation; reports it and returns true.
  bool called_from_host_function(const char* call) noexcept;
  /// A kernel launch needs the stream's device current on the calling thread: reports and
  /// throws CudaError (cudaErrorInvalidResourceHandle) when another simulated device is.
  void check_launch_device(std::string_view kernel, std::uint64_t stream_id);
  /// Copies whose host side is device memory and overlapping device-to-device copies are
  /// reported; returns false when the copy must not be performed.
  bool check_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind,
                  std::uint64_t stream_id);
  /// Runs a host function as CUDA does: marked as one on this thread while it and the
  /// destructors of its captures run, and one at a time on the device when
  /// `SimOptions::serialize_host_functions` is set.
  void run_host_function(std::function<void()>& fn);
  /// The address at which queued work reaches `ptr`: the second mapping of a guarded pinned
  /// buffer (see the note at the top), `ptr` itself for any other memory.
  void* device_view(const void* ptr) noexcept;
  /// Reports a CUDA API rule broken by `call`.
  void report_api_misuse(std::string call, std::string rule, const void* ptr = nullptr,
                         std::size_t bytes = 0, std::uint64_t stream_id = 0) noexcept;
  /// The label or resolver's name of the memory at `ptr` ("" if none).
  std::string owner_of(const void* ptr, std::size_t bytes) noexcept;

 private:
  /// Whether `faults_` injects a fault into this call (counted as injected when it does).
  bool fault_chosen(FaultSite site);
  /// Throws the fault `fault_chosen` chose, `doing` saying what the call was doing.
  [[noreturn]] void throw_fault(FaultSite site, const char* call, std::string_view doing,
                                std::size_t bytes = 0);

  struct Block {
    std::size_t size = 0;
    bool live = true;
    std::string label;
    std::size_t used = 0;  // what its owner asked for (mark_requested); 0: all of it
  };
  enum class AllocState { pending, live, freed };
  struct Alloc {
    std::size_t size = 0;       // what it holds: the request rounded up to the alignment
    std::size_t requested = 0;  // what was asked for: accesses are checked against it
    unsigned char* host = nullptr;
    AllocState state = AllocState::live;
    bool free_queued = false;
    std::uint64_t free_stream = 0;  // the stream of a queued free
    std::uint32_t free_agent = 0;   // and its place there for the race detector (tick 0: none)
    std::uint64_t free_tick = 0;
    bool reused = false;            // a pending free whose bytes a later allocation took over
    bool mapped = false;            // host memory from mmap: its addresses can stay reserved
    bool reserved_only = false;     // freed, memory returned, addresses kept out of reuse
    bool sub = false;               // liveness is tracked per block handed out by a sub-allocator
    bool external = false;          // lent by another owner (register_external): never freed here
    std::size_t external_refs = 0;  // registrations of ranges inside it
    std::map<std::uintptr_t, Block> blocks;
    std::string label;
    bool vmm = false;  // a reserved virtual range (sim_vmm.cpp): external, host owned by vmm_
  };
  using AllocMap = std::map<std::uintptr_t, Alloc>;

  AllocMap::iterator find_alloc(std::uintptr_t addr);  // memory_mutex_ held
  /// An upstream allocation; `stream` (null for cudaMalloc) may reuse its pending frees.
  void* reserve(std::size_t bytes, AllocState state, const char* call, SimStream* stream);
  // memory_mutex_ held exclusively for these:
  void reuse_pending_frees(std::size_t size, SimStream& stream, const VectorClock& reached);
  void release(std::uintptr_t base) noexcept;
  void retire(AllocMap::iterator it) noexcept;  // out of the byte quarantine
  void drop(AllocMap::iterator it) noexcept;    // gone: memory and addresses back to the host
  /// Records a violation if [begin, begin + bytes) is no longer all poison.
  void verify_poison(std::uintptr_t begin, std::size_t bytes, const std::string& owner);
  /// Reports what the memory model recorded under its lock; called without it.
  void flush_deferred() noexcept;
  void poison_block(const void* ptr, std::size_t bytes) noexcept;
  void report(SimViolation violation) noexcept;
  SimStream& sim_stream(StreamImpl& stream) noexcept { return static_cast<SimStream&>(stream); }

  const SimOptions options_;
  const int ordinal_;
  const std::unique_ptr<SimClock> clock_;  // virtual time; null without a profile

  // Backs mapped allocations and reserved ranges; outlives them (declared first). Up to 64 MiB
  // of freed pages stay committed for reuse: as much as the default quarantine holds.
  HostPages host_pages_{std::size_t{64} << 20};
  mutable std::shared_mutex memory_mutex_;
  AllocMap allocs_;
  std::size_t used_ = 0;
  std::deque<std::uintptr_t> quarantine_;
  std::size_t quarantined_bytes_ = 0;
  std::deque<std::uintptr_t> address_quarantine_;  // reserved_only records, oldest first
  std::size_t reserved_bytes_ = 0;
  std::vector<SimViolation> deferred_;  // found under memory_mutex_, reported after it
  std::map<std::uintptr_t, std::size_t> pinned_;
  // Reserved virtual ranges (sim_vmm.cpp): their host address space and mapped chunks.
  struct VmmRange {
    VmmRange(void* at, std::size_t size) noexcept : base(at), bytes(size) {}
    VmmRange(const VmmRange&) = delete;
    VmmRange& operator=(const VmmRange&) = delete;
    ~VmmRange();
    void* base;  // nullptr once its host memory went to host_pages_
    std::size_t bytes;
    std::vector<std::uint8_t> chunks;  // a ChunkState per chunk
  };
  // What backs a chunk of a reserved range on the host. An unmapped chunk keeps its host pages
  // (retained) while the device's retained bytes stay within its capacity: giving pages back and
  // faulting them in again at the next map cost more than the simulated work (a TLB shootdown
  // per unmap, a fault per page); mapping fills the chunk as fresh memory either way.
  enum ChunkState : std::uint8_t { chunk_released = 0, chunk_mapped = 1, chunk_retained = 2 };
  std::map<std::uintptr_t, VmmRange> vmm_;  // memory_mutex_
  std::size_t vmm_retained_bytes_ = 0;      // memory_mutex_: chunks in chunk_retained

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

  // Expires with the device: a thread whose current device is gone has none.
  const std::shared_ptr<const void> alive_ = std::make_shared<int>(0);
  std::unique_ptr<PinnedGuard> guard_;  // before races_: the detector's listeners use it
  std::unique_ptr<RaceDetector> races_;
  SimCaptures captures_{*this};
  std::mutex host_function_mutex_;  // held while a host function runs, when they are serialised
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
