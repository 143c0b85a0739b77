// SPDX-License-Identifier: Apache-2.0
#pragma once

// Seeded mode of the simulated device (SimSchedule::seeded): one scheduler runs the queued work
// of every stream of a device. Each stream is a lane, an in-order queue; at every step the
// scheduler chooses which lane advances with a seeded generator (SimPolicy). Nothing runs on its
// own: queued work runs on the host thread that waits for it (a synchronisation, a copy to
// pageable memory, an event or stream query, a full queue), which runs steps until what it waits
// for has executed. Any lane with work that can run may be chosen at a step, not only the lanes
// the thread waits for: that is how the interleavings are explored.
//
// Host functions run on host-function threads, as CUDA runs them, never inline on a waiting
// thread (which may hold a lock the function needs, or be the thread the function waits for). A
// host function starts only when a thread waits for its stream (a thread that waits for it would
// block until it ran anyway), and the scheduler waits for it to return before its next step, so
// that its effects fall between the same steps in every run. A query waits for a host function a
// bounded time only, and then answers "not done": a query never blocks, as in CUDA.
//
// With one host thread, the sequence of steps is a pure function of the seed and of the calls
// the program made. Later features hook here: CUDA graph capture records instead of queueing,
// and virtual device time advances a timeline per lane and engine at each step.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gpulife/runtime/sim_options.hpp>

#include "runtime/sim_device.hpp"

namespace gpulife::detail::sim {

/// splitmix64: small, fast, and the same draws with every compiler and standard library (the
/// distributions of <random> are not), so that a recorded seed replays anywhere.
class SeededRng {
 public:
  explicit SeededRng(std::uint64_t seed = 0) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, bound); `bound` > 0. Rejection sampling: no modulo bias.
  std::uint64_t below(std::uint64_t bound) noexcept {
    const std::uint64_t reject_below = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const std::uint64_t x = next();
      if (x >= reject_below) return x % bound;
    }
  }

 private:
  std::uint64_t state_;
};

/// Runs host functions on threads of their own: one that is idle takes the next function, and
/// a new thread starts when none is idle, so a host function that blocks never holds up another
/// (CUDA may serialise them; a program may not rely on either).
class HostFunctionThreads {
 public:
  HostFunctionThreads() = default;
  HostFunctionThreads(const HostFunctionThreads&) = delete;
  HostFunctionThreads& operator=(const HostFunctionThreads&) = delete;
  /// Runs what was handed over, then joins the threads.
  ~HostFunctionThreads();
  /// Runs `job` on a host-function thread. @throws std::system_error if no thread can start
  void run(std::function<void()> job);

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::size_t idle_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

class SimScheduler {
 public:
  SimScheduler(std::uint64_t seed, SimPolicy policy);
  SimScheduler(const SimScheduler&) = delete;
  SimScheduler& operator=(const SimScheduler&) = delete;
  /// The device drains every lane (`run_all`) first.
  ~SimScheduler();

  /// Adds lane `lane` (the stream's index on its device) for the stream `stream_id`.
  void add_lane(std::size_t lane, std::uint64_t stream_id);
  /// Queues `op` on `lane`; returns its ticket (1-based position on the lane).
  std::uint64_t enqueue(std::size_t lane, SimOp op);
  /// When `lane` holds many queued operations, runs half of them on the calling thread first, as
  /// a full launch queue blocks the host on a GPU. It runs queued work inline: call it before
  /// taking a lock that queued work may take too (the race detector's), not under it.
  void make_room(std::size_t lane);
  /// Runs `op` at once on the calling thread if `lane` is idle (nothing queued or running) and
  /// returns true; false otherwise (then queue it).
  bool run_if_idle(std::size_t lane, std::function<void()>& op);

  /// Returns once the operation `ticket` of `lane` has executed.
  void run_until(std::size_t lane, std::uint64_t ticket);
  /// Returns once everything queued on `lane` so far has executed.
  void run_queued(std::size_t lane);
  /// Returns once the record `node` (of this scheduler) has executed.
  void run_until(const SimEventNode& node);
  /// Returns once everything queued on every lane so far has executed.
  void run_all();
  /// True if everything queued on `lane` has executed; may run some steps first.
  bool query(std::size_t lane);
  /// True if `node` (of this scheduler) has executed; may run some steps first.
  bool query(const SimEventNode& node);
  /// Runs device work (never a host function) until no lane can advance without one: lets
  /// pending stream-ordered frees land before an allocation gives up.
  void settle();

  /// Restarts the generator from `seed`: new priorities, no steps taken.
  void reseed(std::uint64_t seed);
  /// The GPULIFE_SIM_SEED value that replays this schedule: "1234", or "pct:1234" when the
  /// policy is not `mixed`.
  [[nodiscard]] std::string replay_seed() const;
  /// Steps taken since the last reseed, and a digest of which lane each one advanced: two runs
  /// with equal digests interleaved their streams identically.
  [[nodiscard]] std::uint64_t steps() const;
  [[nodiscard]] std::uint64_t digest() const;

 private:
  enum class Mode : std::uint8_t {
    wait,    // until the target: blocks for host functions, other threads, foreign events
    query,   // a few steps at most; never blocks
    settle,  // device work only, until none can run; never blocks
  };
  struct Lane {
    std::uint64_t stream_id = 0;
    std::deque<SimOp> queue;
    std::uint64_t submitted = 0;
    std::uint64_t completed = 0;
    bool busy = false;           // its head operation is executing
    std::uint64_t priority = 0;  // pct
  };
  /// What a call waits for: `demand[lane]` is the ticket that lane must reach; `node`, a record.
  struct Target {
    std::vector<std::uint64_t> demand;
    const SimEventNode* node = nullptr;
  };

  /// Lane `lane` up to `ticket`, no other demand; the caller holds `mutex_`.
  Target lane_target(std::size_t lane, std::uint64_t ticket) const;
  /// Until `node` has executed; the caller holds `mutex_`.
  Target node_target(const SimEventNode& node) const;
  bool advance(std::unique_lock<std::mutex>& lock, Target& target, Mode mode);
  bool reached(const Target& target) const;
  void extend_demand(Target& target) const;
  std::size_t pick(const std::vector<std::size_t>& candidates);
  void start_policy();
  void new_priority(Lane& lane);
  /// Executes the head of `lane` (popped into `op`), the lock released meanwhile.
  void execute(std::unique_lock<std::mutex>& lock, std::size_t lane, SimOp op, Mode mode);
  void finish(std::size_t lane) noexcept;
  void wait_changed(std::unique_lock<std::mutex>& lock);

  const SimPolicy policy_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;  // a lane finished an operation, or work arrived
  std::size_t waiters_ = 0;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::uint64_t seed_ = 0;
  SeededRng rng_;
  SimPolicy effective_ = SimPolicy::uniform;  // `policy_`, with `mixed` resolved by the seed
  std::uint64_t stretch_ = 64;  // pct: one change point every `stretch_` contested steps
  std::uint64_t lowest_ = 0;    // pct: the priority the next demoted lane gets
  std::uint64_t steps_ = 0;
  std::uint64_t digest_ = 0;
  HostFunctionThreads host_threads_;  // last: joined before the lanes go
};

}  // namespace gpulife::detail::sim
