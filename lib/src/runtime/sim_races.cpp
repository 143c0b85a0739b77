// SPDX-License-Identifier: Apache-2.0
// The simulated device's happens-before race detector (see sim_races.hpp for the model).

#include "runtime/sim_races.hpp"

#include <gpulife/error_handler.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>

namespace gpulife::detail::sim {

namespace {

bool writes(Use use) noexcept { return use != Use::read; }

std::uintptr_t address_of(const void* ptr) noexcept {
  return reinterpret_cast<std::uintptr_t>(ptr);
}

}  // namespace

SourceLocation current_location() noexcept {
  const SourceLocation* where = EnqueueSite::current();
  return where != nullptr ? *where : SourceLocation{};
}

std::string format_site(const SourceLocation& where) {
  if (where.file_name() == nullptr || *where.file_name() == '\0') return {};
  return std::string(where.file_name()) + ":" + std::to_string(where.line());
}

std::string current_site() { return format_site(current_location()); }

const char* describe(Use use) noexcept {
  switch (use) {
    case Use::read:
      return "reads";
    case Use::write:
      return "writes";
    case Use::read_write:
      return "reads and writes";
    case Use::allocate:
    case Use::fresh:
      return "allocates";
    case Use::free:
      return "frees";
  }
  return "uses";
}

RaceDetector::RaceDetector(bool uninitialized_reads, Reporter report)
    : uninitialized_reads_(uninitialized_reads), report_(std::move(report)), clocks_(1) {}

std::uint32_t RaceDetector::add_agent() {
  std::scoped_lock lock(mutex_);
  clocks_.emplace_back();
  return static_cast<std::uint32_t>(clocks_.size() - 1);
}

void RaceDetector::forget(std::uintptr_t begin, std::uintptr_t end) {
  try {
    std::scoped_lock lock(forget_mutex_);
    forgotten_.emplace_back(begin, end);
    has_forgotten_.store(true, std::memory_order_release);
  } catch (...) {
    // The history stays until a new allocation there replaces it: only memory is lost.
  }
}

void RaceDetector::drain_forgotten() {
  if (!has_forgotten_.load(std::memory_order_acquire)) return;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;
  {
    std::scoped_lock lock(forget_mutex_);
    ranges.swap(forgotten_);
    has_forgotten_.store(false, std::memory_order_release);
  }
  for (const auto& [begin, end] : ranges) erase_range(begin, end);
}

void RaceDetector::erase_range(std::uintptr_t begin, std::uintptr_t end) {
  if (begin >= end) return;
  split_at(begin);
  split_at(end);
  shadow_.erase(shadow_.lower_bound(begin), shadow_.lower_bound(end));
}

RaceDetector::Shadow::iterator RaceDetector::split_at(std::uintptr_t addr) {
  auto it = shadow_.upper_bound(addr);
  if (it == shadow_.begin()) return it;
  auto prev = std::prev(it);
  if (prev->first == addr) return prev;
  if (prev->second.end <= addr) return it;
  Segment tail = prev->second;  // the same history for both halves
  prev->second.end = addr;
  return shadow_.emplace_hint(it, addr, std::move(tail));
}

void RaceDetector::add_conflict(std::vector<Conflict>& conflicts, Conflict conflict) {
  for (Conflict& seen : conflicts) {
    if (seen.other == conflict.other && seen.use == conflict.use &&
        seen.other_use == conflict.other_use) {
      seen.begin = std::min(seen.begin, conflict.begin);
      seen.end = std::max(seen.end, conflict.end);
      return;
    }
  }
  conflicts.push_back(std::move(conflict));
}

void RaceDetector::apply(const VectorClock& clock, Epoch me, const RangeUse& use,
                         const std::shared_ptr<const OpRecord>& op,
                         const std::shared_ptr<const VectorClock>& after,
                         std::vector<Conflict>& conflicts) {
  if (use.bytes == 0) return;
  const std::uintptr_t begin = address_of(use.ptr);
  const std::uintptr_t end = begin + use.bytes;
  if (use.use == Use::fresh) {
    // New memory from the allocator: whatever happened at these addresses before belongs to
    // an allocation the allocator has already ordered before this one.
    erase_range(begin, end);
    Segment fresh;
    fresh.end = end;
    fresh.write = me;
    fresh.write_use = Use::allocate;
    fresh.write_op = op;
    shadow_.emplace(begin, std::move(fresh));
    return;
  }
  split_at(begin);
  split_at(end);
  auto it = shadow_.lower_bound(begin);
  std::uintptr_t pos = begin;
  while (pos < end) {
    if (it == shadow_.end() || it->first > pos) {
      Segment gap;  // bytes no tracked operation touched yet
      gap.end = it == shadow_.end() ? end : std::min(end, it->first);
      it = shadow_.emplace_hint(it, pos, std::move(gap));
    }
    Segment& seg = it->second;
    const std::uintptr_t seg_begin = it->first;
    if (seg.write.tick != 0 &&
        (!ordered(clock, seg.write) || (seg.write_after && !clock.covers(*seg.write_after)))) {
      add_conflict(conflicts, {use.use, seg.write_op, seg.write_use, seg_begin, seg.end});
    }
    if (writes(use.use)) {
      for (const Reader& reader : seg.reads) {
        if (!ordered(clock, reader.epoch)) {
          add_conflict(conflicts, {use.use, reader.op, Use::read, seg_begin, seg.end});
        }
      }
      seg.write = me;
      seg.write_use = use.use == Use::read_write ? Use::write : use.use;
      seg.write_op = op;
      seg.write_after = after;
      seg.reads.clear();
    } else {
      if (uninitialized_reads_ && seg.write.tick != 0 && seg.write_use == Use::allocate) {
        add_conflict(conflicts, {use.use, nullptr, Use::allocate, seg_begin, seg.end});
      }
      // A read ordered after an earlier one stands for it: whatever is ordered after the later
      // read is ordered after the earlier one too.
      std::erase_if(seg.reads, [&](const Reader& reader) { return ordered(clock, reader.epoch); });
      seg.reads.push_back({me, op});
    }
    pos = seg.end;
    ++it;
  }
  merge_around(begin, end);
}

void RaceDetector::merge_around(std::uintptr_t begin, std::uintptr_t end) {
  auto same = [](const Segment& a, const Segment& b) {
    if (a.write.agent != b.write.agent || a.write.tick != b.write.tick ||
        a.write_use != b.write_use || a.write_op != b.write_op || a.write_after != b.write_after ||
        a.reads.size() != b.reads.size()) {
      return false;
    }
    for (std::size_t i = 0; i < a.reads.size(); ++i) {
      if (a.reads[i].epoch.agent != b.reads[i].epoch.agent ||
          a.reads[i].epoch.tick != b.reads[i].epoch.tick || a.reads[i].op != b.reads[i].op) {
        return false;
      }
    }
    return true;
  };
  auto it = shadow_.lower_bound(begin);
  if (it != shadow_.begin()) --it;  // the left neighbour may join too
  while (it != shadow_.end() && it->first <= end) {
    auto next = std::next(it);
    if (next == shadow_.end()) break;
    if (it->second.end == next->first && same(it->second, next->second)) {
      it->second.end = next->second.end;
      shadow_.erase(next);
      continue;
    }
    it = next;
  }
}

SimViolation RaceDetector::violation(const OpRecord& op, const Conflict& conflict) {
  SimViolation v;
  v.operation = op.operation + " (" + describe(conflict.use) + ")";
  v.ptr = reinterpret_cast<const void*>(conflict.begin);
  v.bytes = conflict.end - conflict.begin;
  v.stream_id = op.stream_id;
  v.site = format_site(op.site);
  if (conflict.other == nullptr) {
    v.kind = SimViolation::Kind::uninitialized_read;
    return v;
  }
  v.kind = SimViolation::Kind::race;
  v.other_operation = conflict.other->operation + " (" + describe(conflict.other_use) + ")";
  v.other_stream_id = conflict.other->stream_id;
  v.other_site = format_site(conflict.other->site);
  return v;
}

void RaceDetector::host_changed() {
  if (host_listener_) host_listener_(clocks_[0]);
}

// ---- Step --------------------------------------------------------------------------------------

RaceDetector::Step::Step(RaceDetector* detector) : detector_(detector) {
  if (detector_ == nullptr) return;
  lock_ = std::unique_lock(detector_->mutex_);
  detector_->drain_forgotten();
  if (detector_->collector_) detector_->collector_(found_);
}

RaceDetector::Step::~Step() {
  if (detector_ == nullptr) return;
  lock_.unlock();
  for (SimViolation& violation : found_) detector_->report_(std::move(violation));
}

std::size_t RaceDetector::Step::stream_op(std::uint32_t agent, std::uint64_t stream_id,
                                          std::string operation, std::span<const RangeUse> uses,
                                          const VectorClock* after) {
  if (detector_ == nullptr) return 0;
  RaceDetector& d = *detector_;
  VectorClock& own = d.clocks_[agent];
  own.join(d.clocks_[0]);
  if (uses.empty()) return 0;
  const std::uint64_t tick = own.get(agent) + 1;
  own.set(agent, tick);
  auto op =
      std::make_shared<OpRecord>(OpRecord{std::move(operation), stream_id, current_location()});
  std::shared_ptr<const VectorClock> waits_for;
  VectorClock combined;
  const VectorClock* clock = &own;
  if (after != nullptr) {
    waits_for = std::make_shared<const VectorClock>(*after);
    combined = own;
    combined.join(*after);
    clock = &combined;
  }
  std::vector<Conflict> conflicts;
  for (const RangeUse& use : uses) {
    d.apply(*clock, {agent, tick}, use, op, waits_for, conflicts);
    if (d.use_listener_) d.use_listener_(use, agent, tick, op);
  }
  for (const Conflict& conflict : conflicts) found_.push_back(violation(*op, conflict));
  return conflicts.size();
}

std::size_t RaceDetector::Step::host_op(std::string operation, std::span<const RangeUse> uses) {
  if (detector_ == nullptr || uses.empty()) return 0;
  RaceDetector& d = *detector_;
  VectorClock& host = d.clocks_[0];
  const std::uint64_t tick = host.get(0) + 1;
  host.set(0, tick);
  auto op = std::make_shared<OpRecord>(OpRecord{std::move(operation), 0, current_location()});
  std::vector<Conflict> conflicts;
  for (const RangeUse& use : uses) d.apply(host, {0, tick}, use, op, nullptr, conflicts);
  for (const Conflict& conflict : conflicts) found_.push_back(violation(*op, conflict));
  return conflicts.size();
}

std::shared_ptr<const ClockSnapshot> RaceDetector::Step::record(std::uint32_t agent) {
  if (detector_ == nullptr) return nullptr;
  VectorClock& own = detector_->clocks_[agent];
  own.join(detector_->clocks_[0]);
  return std::make_shared<const ClockSnapshot>(ClockSnapshot{detector_, own});
}

void RaceDetector::Step::wait(std::uint32_t agent, const ClockSnapshot& snapshot) {
  if (detector_ == nullptr) return;
  VectorClock& own = detector_->clocks_[agent];
  own.join(detector_->clocks_[0]);
  // Another device's agents are numbered differently; its memory is not this device's, and
  // peer access is not simulated, so its order adds nothing here.
  if (snapshot.owner == detector_) own.join(snapshot.clock);
}

VectorClock RaceDetector::Step::stream_clock(std::uint32_t agent) {
  if (detector_ == nullptr) return {};
  return detector_->clocks_[agent];
}

void RaceDetector::Step::host_join(const VectorClock& clock) {
  if (detector_ == nullptr) return;
  detector_->clocks_[0].join(clock);
  detector_->host_changed();
}

void RaceDetector::Step::host_join(const ClockSnapshot& snapshot) {
  if (detector_ == nullptr || snapshot.owner != detector_) return;
  host_join(snapshot.clock);
}

VectorClock RaceDetector::Step::all_streams() {
  VectorClock all;
  if (detector_ == nullptr) return all;
  for (const VectorClock& clock : detector_->clocks_) all.join(clock);
  return all;
}

bool RaceDetector::Step::host_has_seen(std::uint32_t agent) {
  if (detector_ == nullptr) return true;
  return detector_->clocks_[0].get(agent) >= detector_->clocks_[agent].get(agent);
}

const VectorClock& RaceDetector::Step::host_clock() { return detector_->clocks_[0]; }

}  // namespace gpulife::detail::sim
