// SPDX-License-Identifier: Apache-2.0
// The seeded scheduler of the simulated device (see sim_scheduler.hpp for the design).

#include "runtime/sim_scheduler.hpp"

#include <chrono>
#include <utility>

#include <gpulife/error_handler.hpp>

namespace gpulife::detail::sim {

namespace {

// A lane holding this many queued operations makes the enqueuing thread run half of them.
constexpr std::size_t max_queued = 1024;
// How long a query waits for a host function it started before it answers "not done".
constexpr auto query_host_function_wait = std::chrono::milliseconds(20);

std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  return x ^ (x >> 33);
}

}  // namespace

// ---- HostFunctionThreads -----------------------------------------------------------------------

HostFunctionThreads::~HostFunctionThreads() {
  {
    std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void HostFunctionThreads::run(std::function<void()> job) {
  std::unique_lock lock(mutex_);
  jobs_.push_back(std::move(job));
  if (idle_ >= jobs_.size()) {
    lock.unlock();
    cv_.notify_one();
    return;
  }
  try {
    threads_.emplace_back([this] { loop(); });
  } catch (...) {
    jobs_.pop_back();
    throw;
  }
}

void HostFunctionThreads::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_;
    cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    --idle_;
    if (jobs_.empty()) return;  // stopped and drained
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();  // noexcept: it reports what the host function throws
    job = nullptr;
    lock.lock();
  }
}

// ---- SimScheduler ------------------------------------------------------------------------------

SimScheduler::SimScheduler(std::uint64_t seed, SimPolicy policy) : policy_(policy) {
  seed_ = seed;
  rng_ = SeededRng(seed);
  start_policy();
}

SimScheduler::~SimScheduler() = default;

void SimScheduler::start_policy() {
  effective_ = policy_;
  stretch_ = 64;
  if (policy_ == SimPolicy::mixed) {
    effective_ = rng_.below(2) == 0 ? SimPolicy::uniform : SimPolicy::pct;
    stretch_ = std::uint64_t{4} << rng_.below(6);  // 4 .. 128 contested steps
  }
  lowest_ = std::uint64_t{1} << 62;
  steps_ = 0;
  digest_ = 0;
}

void SimScheduler::new_priority(Lane& lane) {
  // Above every demoted priority, in random order among themselves.
  lane.priority = (std::uint64_t{1} << 62) + 1 + rng_.below(std::uint64_t{1} << 61);
}

void SimScheduler::reseed(std::uint64_t seed) {
  std::scoped_lock lock(mutex_);
  seed_ = seed;
  rng_ = SeededRng(seed);
  start_policy();
  for (auto& lane : lanes_) {
    if (lane) new_priority(*lane);
  }
}

std::string SimScheduler::replay_seed() const {
  std::scoped_lock lock(mutex_);
  switch (policy_) {
    case SimPolicy::mixed:
      return std::to_string(seed_);
    case SimPolicy::uniform:
      return "uniform:" + std::to_string(seed_);
    case SimPolicy::pct:
      return "pct:" + std::to_string(seed_);
  }
  return std::to_string(seed_);
}

std::uint64_t SimScheduler::steps() const {
  std::scoped_lock lock(mutex_);
  return steps_;
}

std::uint64_t SimScheduler::digest() const {
  std::scoped_lock lock(mutex_);
  return digest_;
}

void SimScheduler::add_lane(std::size_t lane, std::uint64_t stream_id) {
  std::scoped_lock lock(mutex_);
  if (lanes_.size() <= lane) lanes_.resize(lane + 1);
  lanes_[lane] = std::make_unique<Lane>();
  lanes_[lane]->stream_id = stream_id;
  new_priority(*lanes_[lane]);
}

std::uint64_t SimScheduler::enqueue(std::size_t lane, SimOp op) {
  std::unique_lock lock(mutex_);
  Lane& l = *lanes_[lane];
  SimEventNode* completes = op.completes;
  l.queue.push_back(std::move(op));
  const std::uint64_t ticket = ++l.submitted;
  if (completes != nullptr) completes->ticket = ticket;
  if (waiters_ > 0) changed_.notify_all();  // a thread may wait for this record
  return ticket;
}

void SimScheduler::make_room(std::size_t lane) {
  std::unique_lock lock(mutex_);
  const Lane& l = *lanes_[lane];
  if (l.queue.size() < max_queued) return;
  Target target = lane_target(lane, l.submitted - max_queued / 2);
  advance(lock, target, Mode::wait);
}

bool SimScheduler::run_if_idle(std::size_t lane, std::function<void()>& op) {
  std::uint64_t stream_id = 0;
  {
    std::scoped_lock lock(mutex_);
    Lane& l = *lanes_[lane];
    if (!l.queue.empty() || l.busy) return false;
    l.busy = true;  // no later operation of the lane overtakes it
    ++l.submitted;
    stream_id = l.stream_id;
  }
  run_op(stream_id, op);
  op = nullptr;
  finish(lane);
  return true;
}

void SimScheduler::run_until(std::size_t lane, std::uint64_t ticket) {
  std::unique_lock lock(mutex_);
  Target target = lane_target(lane, ticket);
  advance(lock, target, Mode::wait);
}

void SimScheduler::run_queued(std::size_t lane) {
  std::unique_lock lock(mutex_);
  Target target = lane_target(lane, lanes_[lane]->submitted);
  advance(lock, target, Mode::wait);
}

void SimScheduler::run_until(const SimEventNode& node) {
  std::unique_lock lock(mutex_);
  Target target = node_target(node);
  advance(lock, target, Mode::wait);
}

void SimScheduler::run_all() {
  std::unique_lock lock(mutex_);
  Target target;
  target.demand.reserve(lanes_.size());
  for (const auto& lane : lanes_) target.demand.push_back(lane ? lane->submitted : 0);
  advance(lock, target, Mode::wait);
}

bool SimScheduler::query(std::size_t lane) {
  std::unique_lock lock(mutex_);
  Target target = lane_target(lane, lanes_[lane]->submitted);
  return advance(lock, target, Mode::query);
}

bool SimScheduler::query(const SimEventNode& node) {
  std::unique_lock lock(mutex_);
  Target target = node_target(node);
  return advance(lock, target, Mode::query);
}

void SimScheduler::settle() {
  std::unique_lock lock(mutex_);
  Target target;
  target.demand.assign(lanes_.size(), 0);
  advance(lock, target, Mode::settle);
}

SimScheduler::Target SimScheduler::lane_target(std::size_t lane, std::uint64_t ticket) const {
  Target target;
  target.demand.assign(lanes_.size(), 0);
  target.demand[lane] = ticket;
  return target;
}

SimScheduler::Target SimScheduler::node_target(const SimEventNode& node) const {
  Target target;
  target.node = &node;
  target.demand.assign(lanes_.size(), 0);
  return target;
}

bool SimScheduler::reached(const Target& target) const {
  if (target.node != nullptr) return target.node->done();
  for (std::size_t i = 0; i < target.demand.size(); ++i) {
    if (target.demand[i] > lanes_[i]->completed) return false;
  }
  return true;
}

void SimScheduler::extend_demand(Target& target) const {
  if (target.demand.size() < lanes_.size()) target.demand.resize(lanes_.size(), 0);
  // A record the target is: its lane must reach it.
  if (const SimEventNode* node = target.node; node != nullptr && node->scheduler() == this) {
    target.demand[node->lane()] = std::max(target.demand[node->lane()], node->ticket);
  }
  // A demanded lane held by a wait demands the record it waits for; to a fixed point.
  for (bool grew = true; grew;) {
    grew = false;
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
      const Lane& lane = *lanes_[i];
      if (target.demand[i] <= lane.completed || lane.queue.empty() || lane.busy) continue;
      const SimOp& head = lane.queue.front();
      if (head.kind != SimOp::Kind::wait || head.after->scheduler() != this) continue;
      const SimEventNode& node = *head.after;
      if (!node.done() && node.ticket > target.demand[node.lane()]) {
        target.demand[node.lane()] = node.ticket;
        grew = true;
      }
    }
  }
}

std::size_t SimScheduler::pick(const std::vector<std::size_t>& candidates) {
  if (candidates.size() == 1) return candidates.front();
  if (effective_ == SimPolicy::uniform) {
    return candidates[static_cast<std::size_t>(rng_.below(candidates.size()))];
  }
  auto best = [&] {
    std::size_t chosen = candidates.front();
    for (std::size_t lane : candidates) {
      if (lanes_[lane]->priority > lanes_[chosen]->priority) chosen = lane;
    }
    return chosen;
  };
  std::size_t chosen = best();
  if (rng_.below(stretch_) == 0) {
    // A change point: the stream about to advance drops below every other, and stays there
    // until the others cannot advance.
    lanes_[chosen]->priority = --lowest_;
    chosen = best();
  }
  return chosen;
}

bool SimScheduler::advance(std::unique_lock<std::mutex>& lock, Target& target, Mode mode) {
  std::vector<std::size_t> candidates;
  for (;;) {
    // A wait whose record has executed costs no step: it is passed at once. Before the demand
    // grows, which looks at the waits that are at the heads now.
    for (auto& lane : lanes_) {
      while (!lane->busy && !lane->queue.empty() && lane->queue.front().kind == SimOp::Kind::wait &&
             lane->queue.front().after->done()) {
        lane->queue.pop_front();
        ++lane->completed;
      }
    }
    if (mode != Mode::settle && reached(target)) return true;
    extend_demand(target);
    candidates.clear();
    const SimEventNode* foreign = nullptr;
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
      Lane& lane = *lanes_[i];
      if (lane.busy || lane.queue.empty()) continue;
      const SimOp& head = lane.queue.front();
      const bool demanded = target.demand[i] > lane.completed;
      switch (head.kind) {
        case SimOp::Kind::device:
          candidates.push_back(i);
          break;
        case SimOp::Kind::host_function:
          if (demanded && mode != Mode::settle) candidates.push_back(i);
          break;
        case SimOp::Kind::wait:
          if (demanded && head.after->scheduler() != this) foreign = head.after.get();
          break;
      }
    }
    if (candidates.empty()) {
      if (mode != Mode::wait) return reached(target);
      if (foreign != nullptr) {
        // Held by another device's record: drive that device (or wait for its worker).
        lock.unlock();
        wait_node(*foreign);
        lock.lock();
      } else {
        wait_changed(lock);  // another thread runs what the target needs, or will queue it
      }
      continue;
    }
    // A query advances a few steps (3 on average), so that a program polling a query sees
    // the work progress, at a place the seed chooses.
    if (mode == Mode::query && rng_.below(4) == 0) return false;
    const std::size_t lane = pick(candidates);
    ++steps_;
    digest_ = mix(digest_ ^ (lane + 1) * 0x9E3779B97F4A7C15ULL);
    SimOp op = std::move(lanes_[lane]->queue.front());
    lanes_[lane]->queue.pop_front();
    lanes_[lane]->busy = true;
    execute(lock, lane, std::move(op), mode);
  }
}

void SimScheduler::execute(std::unique_lock<std::mutex>& lock, std::size_t lane, SimOp op,
                           Mode mode) {
  const std::uint64_t stream_id = lanes_[lane]->stream_id;
  if (op.kind == SimOp::Kind::host_function) {
    try {
      host_threads_.run([this, lane, stream_id, run = std::move(op.run)]() mutable {
        run_as_device(stream_id, run);  // as on a stream worker (releases what it captured)
        finish(lane);
      });
    } catch (const std::exception& e) {
      report_error(std::string("sim stream ") + std::to_string(stream_id) +
                   ": no thread to run a host function (" + e.what() + "); it is skipped");
      lanes_[lane]->busy = false;
      ++lanes_[lane]->completed;
      return;
    }
    // The next step waits for it, so that its effects fall between the same steps every run.
    const Lane& l = *lanes_[lane];
    ++waiters_;
    if (mode == Mode::wait) {
      changed_.wait(lock, [&] { return !l.busy; });
    } else {
      changed_.wait_for(lock, query_host_function_wait, [&] { return !l.busy; });
    }
    --waiters_;
    return;
  }
  lock.unlock();
  run_as_device(stream_id, op.run);  // releases what it captured before the stream counts it done
  lock.lock();
  lanes_[lane]->busy = false;
  ++lanes_[lane]->completed;
  if (waiters_ > 0) changed_.notify_all();
}

void SimScheduler::finish(std::size_t lane) noexcept {
  std::scoped_lock lock(mutex_);
  lanes_[lane]->busy = false;
  ++lanes_[lane]->completed;
  if (waiters_ > 0) changed_.notify_all();
}

void SimScheduler::wait_changed(std::unique_lock<std::mutex>& lock) {
  ++waiters_;
  changed_.wait(lock);
  --waiters_;
}

// ---- waits on records, whichever device made them ----------------------------------------------

void wait_node(const SimEventNode& node) {
  if (node.done()) return;
  if (SimScheduler* scheduler = node.scheduler()) {
    scheduler->run_until(node);
  } else {
    node.wait();
  }
}

bool query_node(const SimEventNode& node) {
  if (node.done()) return true;
  if (SimScheduler* scheduler = node.scheduler()) return scheduler->query(node);
  return false;
}

}  // namespace gpulife::detail::sim
