// SPDX-License-Identifier: Apache-2.0
#pragma once

// The simulated device's happens-before race detector.
//
// Every operation is checked when it is queued, not when it runs. The order in which the
// program queues its work is a valid linearisation of what it asked for: an operation can only
// be ordered after operations queued before it (stream order, an event recorded earlier, a host
// synchronisation that returned earlier). So two accesses to the same bytes, at least one a
// write, that no chain of those edges orders are a race on every run, whatever the delay, the
// scheduler or the machine's load did to the actual execution.
//
// Agents and clocks: agent 0 is the host (all host threads together: gpulife cannot see the
// locks by which host threads order themselves, so it assumes that every host call happens
// after every earlier one), agent i > 0 one stream of the device. Each agent has a vector clock.
// A stream's clock takes in the host's at every enqueue (work queued after a host action is
// ordered after it) and ticks for every operation that touches memory; an event record copies
// the stream's clock, a stream wait joins it in; a host synchronisation (of a stream, an event,
// the device, a pageable copy that returns complete, cudaFree) joins the synchronised clock into
// the host's once the wait has returned. An access is ordered after an earlier one when the
// later access's clock has reached the earlier one's epoch (agent, tick) (FastTrack's epochs).
//
// Shadow state: an interval map over every byte some tracked operation touched (device memory
// and pinned host buffers): per interval, the last write (or allocation, or free) and the reads
// since then that are not ordered with each other.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gpulife/runtime/sim_options.hpp>
#include <gpulife/source_location.hpp>

namespace gpulife::detail::sim {

/// A vector clock: entry 0 the host, entry i the stream the detector numbered i.
class VectorClock {
 public:
  [[nodiscard]] std::uint64_t get(std::size_t agent) const noexcept {
    return agent < ticks_.size() ? ticks_[agent] : 0;
  }
  void set(std::size_t agent, std::uint64_t tick) {
    if (agent >= ticks_.size()) ticks_.resize(agent + 1, 0);
    ticks_[agent] = tick;
  }
  void join(const VectorClock& other) {
    if (other.ticks_.size() > ticks_.size()) ticks_.resize(other.ticks_.size(), 0);
    for (std::size_t i = 0; i < other.ticks_.size(); ++i) {
      ticks_[i] = std::max(ticks_[i], other.ticks_[i]);
    }
  }
  /// True if every entry of `other` is reached by this clock.
  [[nodiscard]] bool covers(const VectorClock& other) const noexcept {
    for (std::size_t i = 0; i < other.ticks_.size(); ++i) {
      if (get(i) < other.ticks_[i]) return false;
    }
    return true;
  }

 private:
  std::vector<std::uint64_t> ticks_;
};

/// A clock captured for later (an event's record); tagged with its detector, because a stream
/// may wait for an event of another device, whose agents are numbered differently.
struct ClockSnapshot {
  const void* owner = nullptr;
  VectorClock clock;
};

/// How an operation uses a range, as the detector sees it.
enum class Use : std::uint8_t {
  read,
  write,
  read_write,  // a write that may also read (a kernel range declared without a mode)
  allocate,    // the bytes become the caller's, uninitialised: a write that no read may precede
  fresh,       // a new upstream allocation: forgets the addresses' history, then `allocate`
  free,        // the bytes stop being the caller's: a write
};

struct RangeUse {
  const void* ptr = nullptr;
  std::size_t bytes = 0;
  Use use = Use::read;
};

/// One queued operation, as reports name it.
struct OpRecord {
  std::string operation;
  std::uint64_t stream_id = 0;  // 0: the host
  // Formatted ("file:line") only when a report names it: every queued operation records one.
  SourceLocation site;
};

class RaceDetector {
 public:
  using Reporter = std::function<void(SimViolation)>;

  /// `report` receives each violation after the detector's lock is released.
  RaceDetector(bool uninitialized_reads, Reporter report);
  RaceDetector(const RaceDetector&) = delete;
  RaceDetector& operator=(const RaceDetector&) = delete;

  /// Numbers a new stream.
  std::uint32_t add_agent();

  /// Called by the memory model when it returns addresses to the host: their history goes, at
  /// the next step (the memory model's lock is held here; the detector's may not be taken).
  void forget(std::uintptr_t begin, std::uintptr_t end);

  /// Observes changes of the host's clock (the pinned-memory guard lifts its protection when
  /// the host has synchronised with the copies that use a buffer). Called under the lock.
  using HostListener = std::function<void(const VectorClock& host)>;
  void set_host_listener(HostListener listener) { host_listener_ = std::move(listener); }
  /// Observes each use of memory by a stream (the guard protects pinned buffers from the host
  /// while a copy uses them). Called under the lock with the use's agent and tick.
  using UseListener =
      std::function<void(const RangeUse& use, std::uint32_t agent, std::uint64_t tick,
                         const std::shared_ptr<const OpRecord>& op)>;
  void set_use_listener(UseListener listener) { use_listener_ = std::move(listener); }
  /// Adds violations found outside the detector (the guard's fault handler) at each step.
  using Collector = std::function<void(std::vector<SimViolation>& found)>;
  void set_collector(Collector collector) { collector_ = std::move(collector); }

  /// The detector's lock, held for one step: the checks of one operation and its queueing, so
  /// that the detector sees a stream's operations in the order its queue holds them. Violations
  /// found during the step are reported when it ends, with no lock held.
  class Step {
   public:
    /// `detector` may be null (detection off): every member is then a no-op.
    explicit Step(RaceDetector* detector);
    ~Step();
    Step(const Step&) = delete;
    Step& operator=(const Step&) = delete;

    [[nodiscard]] bool active() const noexcept { return detector_ != nullptr; }

    /// An operation queued on stream `agent`: it is ordered after the host's actions so far and
    /// the stream's earlier work; `after`, when given, adds what else it waits for (the events
    /// of a free that `record_stream` delays). Each use is checked and recorded.
    /// Returns the number of violations it found.
    std::size_t stream_op(std::uint32_t agent, std::uint64_t stream_id, std::string operation,
                          std::span<const RangeUse> uses, const VectorClock* after = nullptr);
    /// An access by the host (gpulife's own, or an allocation call that takes effect at once).
    /// Returns the number of violations it found.
    std::size_t host_op(std::string operation, std::span<const RangeUse> uses);
    /// The stream's clock after the host's actions so far: what a record captures.
    std::shared_ptr<const ClockSnapshot> record(std::uint32_t agent);
    /// The stream waits for `snapshot` (an event's record): later work is ordered after it.
    void wait(std::uint32_t agent, const ClockSnapshot& snapshot);
    /// The stream's clock now, for a host synchronisation that joins it once the wait returns.
    [[nodiscard]] VectorClock stream_clock(std::uint32_t agent);
    /// The host has synchronised with `clock` (the wait returned).
    void host_join(const VectorClock& clock);
    /// The host has synchronised with an event's record, if the record is this device's.
    void host_join(const ClockSnapshot& snapshot);
    /// Every stream's clock now (a device synchronisation).
    [[nodiscard]] VectorClock all_streams();
    /// True if the host's clock covers everything queued on `agent` so far.
    [[nodiscard]] bool host_has_seen(std::uint32_t agent);
    /// The host clock (guards and checks that need the host's view).
    [[nodiscard]] const VectorClock& host_clock();

   private:
    RaceDetector* detector_;
    std::unique_lock<std::mutex> lock_;
    std::vector<SimViolation> found_;
  };

 private:
  struct Epoch {
    std::uint32_t agent = 0;
    std::uint64_t tick = 0;  // 0: none
  };
  struct Reader {
    Epoch epoch;
    std::shared_ptr<const OpRecord> op;
  };
  struct Segment {
    std::uintptr_t end = 0;
    Epoch write;  // the last write, allocation or free; tick 0: never written
    Use write_use = Use::write;
    std::shared_ptr<const OpRecord> write_op;
    std::shared_ptr<const VectorClock> write_after;  // what else the write waited for
    std::vector<Reader> reads;                       // since the write, pairwise unordered
  };
  using Shadow = std::map<std::uintptr_t, Segment>;

  // All below: the lock held.
  void drain_forgotten();
  void erase_range(std::uintptr_t begin, std::uintptr_t end);
  Shadow::iterator split_at(std::uintptr_t addr);
  struct Conflict {
    Use use = Use::read;                    // the new access's
    std::shared_ptr<const OpRecord> other;  // null: an uninitialised read
    Use other_use = Use::write;
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
  };
  void apply(const VectorClock& clock, Epoch me, const RangeUse& use,
             const std::shared_ptr<const OpRecord>& op,
             const std::shared_ptr<const VectorClock>& after, std::vector<Conflict>& conflicts);
  void merge_around(std::uintptr_t begin, std::uintptr_t end);
  static void add_conflict(std::vector<Conflict>& conflicts, Conflict conflict);
  static SimViolation violation(const OpRecord& op, const Conflict& conflict);
  void host_changed();
  static bool ordered(const VectorClock& clock, const Epoch& epoch) noexcept {
    return epoch.tick == 0 || clock.get(epoch.agent) >= epoch.tick;
  }

  const bool uninitialized_reads_;
  const Reporter report_;
  std::mutex mutex_;
  std::vector<VectorClock> clocks_;  // [0] the host, [i] stream i
  Shadow shadow_;
  HostListener host_listener_;
  UseListener use_listener_;
  Collector collector_;

  std::mutex forget_mutex_;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> forgotten_;  // forget_mutex_
  std::atomic<bool> has_forgotten_{false};
};

/// The call site of the gpulife call that is queueing work on this thread (EnqueueSite), or an
/// unknown location.
SourceLocation current_location() noexcept;

/// "file:line" of `where`, or "" when its file is unknown.
std::string format_site(const SourceLocation& where);

/// format_site(current_location()).
std::string current_site();

/// The words for a use in reports: "reads", "writes", "allocates", "frees".
const char* describe(Use use) noexcept;

}  // namespace gpulife::detail::sim
