// SPDX-License-Identifier: Apache-2.0
// The simulated device's memory model: upstream allocations, blocks a sub-allocator hands out,
// pinned host memory, and the check of every queued access against them.

#include "runtime/sim_device.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include "runtime/sim_bytes.hpp"
#include "runtime/sim_device_guard.hpp"
#include "runtime/sim_scheduler.hpp"

namespace gpulife::detail::sim {

SimDevice::AllocMap::iterator SimDevice::find_alloc(std::uintptr_t addr) {
  auto it = allocs_.upper_bound(addr);
  if (it == allocs_.begin()) return allocs_.end();
  --it;
  if (addr >= it->first + it->second.size) return allocs_.end();
  return it;
}

namespace {

// Allocations from this size on are mapped directly, so that their addresses can be kept
// reserved (and inaccessible) after they are freed.
constexpr std::size_t mapped_from = std::size_t{1} << 20;
constexpr std::size_t max_reserved_ranges = 4096;

std::size_t whole_pages(std::size_t bytes) noexcept {
  static const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

}  // namespace

void* SimDevice::reserve(std::size_t bytes, AllocState state, const char* call,
                         SimStream* stream) {
  maybe_fail(FaultSite::allocation, call, "allocating", bytes);
  const std::size_t size = round_up(bytes);
  // What the allocating stream has been ordered after: pending frees it may reuse (item 4).
  VectorClock reached;
  if (stream != nullptr) reached = RaceDetector::Step(races()).stream_clock(stream->race_agent);
  {
    std::unique_lock lock(memory_mutex_);
    if (size > options_.capacity_bytes - used_ && stream != nullptr) {
      reuse_pending_frees(size, *stream, reached);
    }
    if (size > options_.capacity_bytes - used_ && scheduler_) {
      // Seeded mode runs queued work only when a thread waits for it; a GPU would have run the
      // pending stream-ordered frees by now. Let them land before giving up.
      lock.unlock();
      scheduler_->settle();
      lock.lock();
    }
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
  // Guarded device memory (SimOptions::guard_device_memory) needs pages of its own.
  const bool mapped = size >= mapped_from || options_.guard_device_memory;
  // Mapped memory may come with a freed allocation's pages (cheaper than faulting in new ones)
  // where it is filled as fresh memory below.
  auto* host = static_cast<unsigned char*>(
      mapped ? host_pages_.map(size, sim_alignment, HostPages::Kind::committed, options_.fill_fresh)
             : std::aligned_alloc(sim_alignment, size));
  std::unique_lock lock(memory_mutex_);
  if (host == nullptr) {
    used_ -= size;
    lock.unlock();
    throw OutOfMemoryError(std::string("out of memory: ") + call + " of " + format_bytes(bytes) +
                               " on " + name() + ": the host has no memory left to simulate it",
                           bytes);
  }
  // Quarantined records keep their host memory (or, mapped, their addresses), so the host
  // cannot hand out an address that a record still covers.
  Alloc& alloc = allocs_[address(host)];
  alloc.size = size;
  alloc.requested = bytes;
  alloc.host = host;
  alloc.mapped = mapped;
  alloc.state = state;
  lock.unlock();
  // Fresh device memory holds whatever was there; on the sim that would be zeros or a freed
  // allocation's poison, which hides reads of memory never written.
  if (options_.fill_fresh) fill_device_bytes(host, fresh_value, size);
  // From now on only queued work (and the sim's own bookkeeping) may touch it.
  if (options_.guard_device_memory) device_guard::add(host, whole_pages(size));
  return host;
}

void SimDevice::reuse_pending_frees(std::size_t size, SimStream& stream,
                                    const VectorClock& reached) {
  // CUDA's stream-ordered pools hand a pending free's memory to an allocation on the same
  // stream, or on a stream that waited for the free (cudaMemPoolReuseFollowEventDependencies):
  // in stream order the memory is free by the time the allocation is used. Its bytes move to
  // the new allocation now; the free, when it runs, does not count them again.
  for (auto& [base, alloc] : allocs_) {
    if (size <= options_.capacity_bytes - used_) return;
    if (!alloc.free_queued || alloc.state == AllocState::freed || alloc.reused) continue;
    const bool ordered = alloc.free_stream == stream.id() ||
                         (alloc.free_tick != 0 && reached.get(alloc.free_agent) >= alloc.free_tick);
    if (!ordered) continue;
    alloc.reused = true;
    used_ -= alloc.size;
  }
}

void SimDevice::verify_poison(std::uintptr_t begin, std::size_t bytes, const std::string& owner) {
  if (!options_.poison || bytes == 0) return;
  const DeviceAccessScope device_access;  // guarded device memory: the sim's own read
  const auto* ptr = reinterpret_cast<const unsigned char*>(begin);
  const std::size_t first = first_byte_not(ptr, poison_value, bytes);
  if (first == bytes) return;
  std::size_t last = bytes;
  while (last > first && ptr[last - 1] == poison_value) --last;
  try {
    SimViolation violation = make_violation(SimViolation::Kind::freed_memory_written,
                                            "a write no operation declared", ptr + first,
                                            last - first, 0, owner);
    violation.rule =
        "freed memory changed after it was poisoned, before it was reused or returned: some "
        "kernel or host code wrote through a stale pointer";
    deferred_.push_back(std::move(violation));
  } catch (...) {
    report_error("sim: could not record a write to freed memory");
  }
}

void SimDevice::flush_deferred() noexcept {
  std::vector<SimViolation> found;
  {
    std::unique_lock lock(memory_mutex_);
    found.swap(deferred_);
  }
  for (SimViolation& violation : found) report(std::move(violation));
}

void SimDevice::retire(AllocMap::iterator it) noexcept {
  Alloc& alloc = it->second;
  const std::uintptr_t base = it->first;
  if (alloc.mapped && options_.address_quarantine_bytes >= alloc.size) {
    // The memory goes back to the host; the addresses stay reserved and inaccessible, so that
    // a stale pointer neither reaches a new allocation nor reads old data.
    device_guard::remove(alloc.host);  // inaccessible to everyone from now on
    if (host_pages_.release_pages(alloc.host, alloc.size, HostPages::Kind::committed,
                                  alloc.size)) {
      alloc.reserved_only = true;
      address_quarantine_.push_back(base);
      reserved_bytes_ += alloc.size;
      // Bounded in bytes and in count: each reserved range is a mapping of its own, and the
      // kernel limits how many a process may have.
      while (reserved_bytes_ > options_.address_quarantine_bytes ||
             address_quarantine_.size() > max_reserved_ranges) {
        auto oldest = allocs_.find(address_quarantine_.front());
        address_quarantine_.pop_front();
        reserved_bytes_ -= oldest->second.size;
        drop(oldest);
      }
      return;
    }
  }
  drop(it);
}

void SimDevice::drop(AllocMap::iterator it) noexcept {
  Alloc& alloc = it->second;
  if (races_) races_->forget(it->first, it->first + alloc.size);
  if (alloc.mapped) {
    device_guard::remove(alloc.host);
    if (alloc.reserved_only) {
      munmap(alloc.host, alloc.size);  // addresses only: the pages went at retire
    } else {
      host_pages_.unmap(alloc.host, alloc.size, HostPages::Kind::committed, alloc.size);
    }
  } else {
    std::free(alloc.host);
  }
  allocs_.erase(it);
}

void SimDevice::release(std::uintptr_t base) noexcept {
  auto it = allocs_.find(base);
  Alloc& alloc = it->second;
  // Blocks a sub-allocator freed were poisoned then; whatever changed since was written by no
  // one who owned them.
  for (const auto& [block_base, block] : alloc.blocks) {
    if (!block.live) verify_poison(block_base, block.size, block.label);
  }
  alloc.state = AllocState::freed;
  alloc.sub = false;
  alloc.blocks.clear();
  if (!alloc.reused) used_ -= alloc.size;  // else counted by the allocation that took it over
  if (options_.poison && alloc.size <= options_.quarantine_bytes) {
    {
      const DeviceAccessScope device_access;  // guarded device memory: the sim's own write
      fill_device_bytes(alloc.host, poison_value, alloc.size);
    }
    quarantine_.push_back(base);
    quarantined_bytes_ += alloc.size;
    while (quarantined_bytes_ > options_.quarantine_bytes) {
      auto oldest = allocs_.find(quarantine_.front());
      quarantine_.pop_front();
      quarantined_bytes_ -= oldest->second.size;
      verify_poison(oldest->first, oldest->second.size, oldest->second.label);
      retire(oldest);
    }
    return;
  }
  retire(it);
}

namespace {

SimViolation bad_free(const char* call, const void* ptr, std::size_t bytes,
                      std::uint64_t stream_id) {
  SimViolation violation =
      make_violation(SimViolation::Kind::bad_free, call, ptr, bytes, stream_id);
  violation.site = current_site();
  return violation;
}

}  // namespace

void* SimDevice::allocate(std::size_t bytes) {
  called_from_host_function("cudaMalloc");
  captures_.unsafe_call("cudaMalloc");
  if (bytes == 0) return nullptr;
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().malloc_us);
  void* ptr = reserve(bytes, AllocState::live, "cudaMalloc", nullptr);
  const RangeUse use{ptr, bytes, Use::fresh};
  RaceDetector::Step(races()).host_op("cudaMalloc", std::span(&use, 1));
  return ptr;
}

void SimDevice::deallocate(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  called_from_host_function("cudaFree");
  if (captures_.unsafe_call_reported("cudaFree")) return;  // CUDA fails it: nothing freed
  const SimCaptures::FreeScope free_scope;
  const SimClock::Call vt(clock());
  synchronize();  // cudaFree waits for the device
  if (clock_) clock_->charge_us(clock_->profile().free_us);
  std::optional<SimViolation> bad;
  std::size_t requested = 0;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = allocs_.find(address(ptr));
    if (it == allocs_.end() || it->second.state == AllocState::freed || it->second.free_queued ||
        it->second.external) {
      bad = bad_free("cudaFree", ptr, bytes, 0);
    } else {
      requested = it->second.requested;
      release(it->first);
    }
  }
  flush_deferred();
  if (bad) {
    report(std::move(*bad));
    return;
  }
  try {
    const RangeUse use{ptr, requested, Use::free};
    RaceDetector::Step(races()).host_op("cudaFree", std::span(&use, 1));
  } catch (...) {
    report_error("sim: could not check a cudaFree");
  }
}

void* SimDevice::allocate_async(std::size_t bytes, StreamImpl& stream) {
  called_from_host_function("cudaMallocAsync");
  if (bytes == 0) return nullptr;
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().malloc_async_us);
  SimStream& on = sim_stream(stream);
  if (on.capture.active()) captures_.stream_ordered_allocation(on, "cudaMallocAsync");
  void* ptr = reserve(bytes, AllocState::pending, "cudaMallocAsync", &on);
  // Usable in stream order: live once the stream reaches the allocation.
  const RangeUse use{ptr, bytes, Use::fresh};
  RaceDetector::Step step(races());
  step.stream_op(on.race_agent, on.id(), "cudaMallocAsync", std::span(&use, 1));
  on.enqueue_bookkeeping([this, base = address(ptr)] {
    std::unique_lock lock(memory_mutex_);
    if (auto it = allocs_.find(base);
        it != allocs_.end() && it->second.state == AllocState::pending)
      it->second.state = AllocState::live;
  });
  return ptr;
}

void SimDevice::deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  if (ptr == nullptr) return;
  called_from_host_function("cudaFreeAsync");
  if (sim_stream(stream).capture.active()) {
    try {
      captures_.stream_ordered_allocation(sim_stream(stream), "cudaFreeAsync");
    } catch (const std::exception& e) {
      report_api_misuse("cudaFreeAsync", e.what(), ptr, bytes, stream.id());
      return;  // as CUDA fails the call: nothing freed
    }
  }
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().free_async_us);
  std::size_t requested = 0;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = allocs_.find(address(ptr));
    if (it == allocs_.end() || it->second.state == AllocState::freed || it->second.free_queued ||
        it->second.external) {
      lock.unlock();
      report(bad_free("cudaFreeAsync", ptr, bytes, stream.id()));
      return;
    }
    it->second.free_queued = true;
    it->second.free_stream = stream.id();
    requested = it->second.requested;
  }
  try {
    SimStream& on = sim_stream(stream);
    const RangeUse use{ptr, requested, Use::free};
    RaceDetector::Step step(races());
    step.stream_op(on.race_agent, on.id(), "cudaFreeAsync", std::span(&use, 1));
    if (step.active()) {
      const std::uint64_t tick = step.stream_clock(on.race_agent).get(on.race_agent);
      std::unique_lock lock(memory_mutex_);
      if (auto it = allocs_.find(address(ptr)); it != allocs_.end()) {
        it->second.free_agent = on.race_agent;
        it->second.free_tick = tick;
      }
    }
    on.enqueue_bookkeeping([this, base = address(ptr)] {
      {
        std::unique_lock lock(memory_mutex_);
        release(base);
      }
      flush_deferred();
    });
  } catch (...) {
    report_error("sim: could not queue cudaFreeAsync; memory released at device destruction");
  }
}

void* SimDevice::allocate_pinned(std::size_t bytes) {
  called_from_host_function("cudaMallocHost");
  captures_.unsafe_call("cudaMallocHost");
  if (bytes == 0) return nullptr;  // as cudaMallocHost
  const SimClock::Call vt(clock());
  if (clock_) {
    clock_->charge_us(clock_->profile().malloc_host_us + clock_->profile().malloc_host_us_per_gib *
                                                             static_cast<double>(bytes) /
                                                             static_cast<double>(1ULL << 30));
  }
  std::size_t size = 0;
  void* ptr = guard_ ? guard_->allocate(bytes, size) : nullptr;
  if (ptr == nullptr) {
    size = round_up(bytes);
    ptr = std::aligned_alloc(sim_alignment, size);
  }
  if (ptr == nullptr) {
    throw OutOfMemoryError("out of memory: cudaMallocHost of " + format_bytes(bytes) + " failed",
                           bytes);
  }
  {
    std::unique_lock lock(memory_mutex_);
    pinned_[address(ptr)] = size;
  }
  const RangeUse use{ptr, size, Use::fresh};
  RaceDetector::Step(races()).host_op("cudaMallocHost", std::span(&use, 1));
  return ptr;
}

void SimDevice::deallocate_pinned(void* ptr) noexcept {
  if (ptr == nullptr) return;
  called_from_host_function("cudaFreeHost");
  if (captures_.unsafe_call_reported("cudaFreeHost")) return;
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().free_host_us);
  std::size_t size = 0;
  {
    std::shared_lock lock(memory_mutex_);
    auto it = pinned_.find(address(ptr));
    if (it == pinned_.end()) {
      lock.unlock();
      report(bad_free("cudaFreeHost", ptr, 0, 0));
      return;
    }
    size = it->second;
  }
  std::size_t conflicts = 0;
  try {
    const RangeUse use{ptr, size, Use::free};
    conflicts = RaceDetector::Step(races()).host_op("cudaFreeHost", std::span(&use, 1));
  } catch (...) {
    report_error("sim: could not check a cudaFreeHost");
  }
  // A queued copy still uses the buffer (reported above): let it finish before the memory goes,
  // so that the violation is reported rather than crashing a stream worker.
  if (conflicts != 0) synchronize();
  {
    std::unique_lock lock(memory_mutex_);
    pinned_.erase(address(ptr));
  }
  if (races_) races_->forget(address(ptr), address(ptr) + size);
  if (!guard_ || !guard_->deallocate(ptr)) std::free(ptr);
}

bool SimDevice::is_pinned(const void* ptr, std::size_t bytes) {
  const SimClock::Call vt(clock());
  std::shared_lock lock(memory_mutex_);
  auto it = pinned_.upper_bound(address(ptr));
  if (it == pinned_.begin()) return false;
  --it;
  return address(ptr) + bytes <= it->first + it->second;
}

void SimDevice::mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  // The checker's bookkeeping of sub-allocations: none of it happens on a GPU, so its real time
  // is left out of the host's virtual clock (sim_clock.hpp), as for every device call.
  const SimClock::Call vt(clock());
  if (ptr == nullptr || bytes == 0) return;
  try {
    SimStream& on = sim_stream(stream);
    const RangeUse use{ptr, bytes, Use::allocate};
    RaceDetector::Step step(races());
    step.stream_op(on.race_agent, on.id(), "sub-allocation", std::span(&use, 1));
    on.enqueue_bookkeeping([this, ptr, bytes, stream_id = stream.id()] {
      std::optional<SimViolation> bad;
      {
        std::unique_lock lock(memory_mutex_);
        const auto addr = address(ptr);
        auto it = find_alloc(addr);
        if (it == allocs_.end() || it->second.state == AllocState::freed ||
            addr + bytes > it->first + it->second.size) {
          bad = make_violation(SimViolation::Kind::unallocated, "sub-allocation", ptr, bytes,
                               stream_id);
        } else {
          Alloc& alloc = it->second;
          alloc.sub = true;
          if (auto same = alloc.blocks.find(addr); same != alloc.blocks.end() &&
                                                   !same->second.live &&
                                                   same->second.size >= bytes) {
            // The dead block at this address lives again (a pool reusing it, or an adaptor that
            // held it back giving it to its upstream), its poison verified first. A shorter
            // block (a pool that split the free one) leaves the rest dead: a free by the old
            // extent (the upstream of such an adaptor) takes it back (poison_block).
            verify_poison(same->first, same->second.size, same->second.label);
            const std::size_t rest = same->second.size - bytes;
            same->second.live = true;
            same->second.size = bytes;
            same->second.used = 0;
            if (rest > 0) {
              Block tail;
              tail.size = rest;
              tail.live = false;
              tail.label = same->second.label;
              alloc.blocks.emplace(addr + bytes, std::move(tail));
            }
            same->second.label.clear();
            lock.unlock();
            flush_deferred();
            return;
          }
          // Dead blocks that the new one covers are forgotten; a live one means two owners.
          auto first = alloc.blocks.upper_bound(addr);
          if (first != alloc.blocks.begin()) {
            auto prev = std::prev(first);
            if (prev->first + prev->second.size > addr) first = prev;
          }
          auto last = first;
          while (last != alloc.blocks.end() && last->first < addr + bytes) {
            if (!last->second.live) {
              // freed and poisoned: reused now, so whatever changed there since was written
              // through a stale pointer
              verify_poison(last->first, last->second.size, last->second.label);
            }
            if (last->second.live) {
              bad = make_violation(SimViolation::Kind::overlap, "sub-allocation", ptr, bytes,
                                   stream_id, last->second.label);
            }
            ++last;
          }
          alloc.blocks.erase(first, last);
          Block block;
          block.size = bytes;
          alloc.blocks.emplace(addr, std::move(block));
        }
      }
      flush_deferred();
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
    if (it != allocs_.end() && !it->second.sub && it->second.state == AllocState::live &&
        !it->second.external && it->first == addr &&
        (bytes == it->second.requested || bytes == it->second.size)) {
      // A whole allocation marked freed by an adaptor that holds it back from its upstream
      // (HoldbackAdaptor): tracked as one block from now on.
      Block whole;
      whole.size = it->second.size;
      whole.label = it->second.label;
      it->second.sub = true;
      it->second.blocks.emplace(addr, std::move(whole));
    }
    if (it == allocs_.end() || !it->second.sub) {
      bad = make_violation(SimViolation::Kind::bad_free, "sub-allocation free", ptr, bytes, 0);
    } else {
      auto& blocks = it->second.blocks;
      auto block = blocks.find(addr);
      if (block != blocks.end() && block->second.live && bytes > block->second.size) {
        // Freed by a longer extent that dead blocks complete (a block given back to the upstream
        // it came from by an adaptor that held it back with its requested size): one block again.
        auto next = std::next(block);
        std::uintptr_t end = addr + block->second.size;
        while (next != blocks.end() && next->first == end && !next->second.live &&
               end < addr + bytes) {
          end += next->second.size;
          ++next;
        }
        if (end == addr + bytes) {
          blocks.erase(std::next(block), next);
          block->second.size = bytes;
          block->second.used = 0;
        }
      }
      // Freed by the size its owner asked for (mark_requested) or by the block's own.
      if (block == blocks.end() || !block->second.live ||
          (block->second.size != bytes && block->second.used != bytes)) {
        bad = make_violation(SimViolation::Kind::bad_free, "sub-allocation free", ptr, bytes, 0,
                             block != blocks.end() ? block->second.label : "");
      } else {
        block->second.live = false;
        if (options_.poison) {
          const DeviceAccessScope device_access;  // guarded device memory: the sim's own write
          fill_device_bytes(const_cast<void*>(ptr), poison_value, block->second.size);
        }
      }
    }
  }
  if (bad) report(std::move(*bad));
}

void SimDevice::mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                           std::span<EventImpl* const> after) noexcept {
  const SimClock::Call vt(clock());
  if (ptr == nullptr || bytes == 0) return;
  try {
    // Dead once the stream and every event have passed this point: a countdown that the last
    // of them brings to zero, so that waiting for the events adds no dependency between streams.
    auto remaining = std::make_shared<std::atomic<std::size_t>>(after.size() + 1);
    auto count_down = [this, ptr, bytes, remaining] {
      if (remaining->fetch_sub(1, std::memory_order_acq_rel) == 1) poison_block(ptr, bytes);
    };
    SimStream& on = sim_stream(stream);
    RaceDetector::Step step(races());
    // For the detector the free is ordered after the stream's work and the events' records; the
    // streams the events were recorded on do not wait for it.
    VectorClock waits_for;
    bool waits = false;
    std::vector<std::shared_ptr<SimEventNode>> nodes;
    nodes.reserve(after.size());
    for (EventImpl* event : after) {
      auto node = static_cast<SimEvent*>(event)->latest();
      if (node && node->clock && node->clock->owner == races()) {
        waits_for.join(node->clock->clock);
        waits = true;
      }
      nodes.push_back(std::move(node));
    }
    const RangeUse use{ptr, bytes, Use::free};
    step.stream_op(on.race_agent, on.id(), "sub-allocation free", std::span(&use, 1),
                   waits ? &waits_for : nullptr);
    for (auto& node : nodes) {
      if (node) {
        node->on_complete(count_down);
      } else {
        count_down();
      }
    }
    on.enqueue_bookkeeping(count_down);
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
    alloc.requested = bytes;
    alloc.external = true;  // host stays null: the destructor frees nothing of it
    alloc.external_refs = 1;
    allocs_.emplace(addr, std::move(alloc));
    lock.unlock();
    // The owner wrote the bytes; from now on the device's work on them is checked.
    const RangeUse uses[] = {{ptr, bytes, Use::fresh}, {ptr, bytes, Use::write}};
    RaceDetector::Step(races()).host_op("borrowed memory (register_external)", uses);
    return true;
  } catch (...) {
    return false;  // unregistered: accesses are reported, which is safe
  }
}

void SimDevice::unregister_external(const void* ptr) noexcept {
  std::size_t bytes = 0;
  {
    std::unique_lock lock(memory_mutex_);
    auto it = find_alloc(address(ptr));
    if (it != allocs_.end() && it->second.external && --it->second.external_refs == 0) {
      bytes = it->second.size;
      allocs_.erase(it);
    }
  }
  if (bytes == 0) return;
  try {
    const RangeUse use{ptr, bytes, Use::free};
    RaceDetector::Step(races()).host_op("borrowed memory returned (unregister_external)",
                                        std::span(&use, 1));
  } catch (...) {
    report_error("sim: could not check the end of a borrow");
  }
}

void SimDevice::mark_requested(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  const SimClock::Call vt(clock());
  if (ptr == nullptr || bytes == 0) return;
  try {
    sim_stream(stream).enqueue_bookkeeping([this, ptr, bytes] {
      std::unique_lock lock(memory_mutex_);
      const auto addr = address(ptr);
      auto it = find_alloc(addr);
      if (it == allocs_.end()) return;
      Alloc& alloc = it->second;
      if (!alloc.sub) {
        if (it->first == addr && bytes <= alloc.size) alloc.requested = bytes;
        return;
      }
      auto block = alloc.blocks.find(addr);
      if (block != alloc.blocks.end() && bytes <= block->second.size) block->second.used = bytes;
    });
  } catch (...) {
    // accesses stay checked against the rounded size
  }
}

void SimDevice::label(const void* ptr, std::string text, StreamImpl& stream) noexcept {
  const SimClock::Call vt(clock());
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
      } else if (addr + bytes > it->first + alloc.requested) {
        kind = Kind::out_of_bounds;  // past what was asked for, even inside the rounding
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
          const std::size_t usable =
              block->second.used != 0 ? block->second.used : block->second.size;
          if (!block->second.live) {
            kind = Kind::use_after_free;
          } else if (addr + bytes > block->first + usable) {
            kind = Kind::out_of_bounds;  // past what its owner asked for
          } else {
            return true;
          }
        }
      }
    }
  }
  report(make_violation(kind, operation, ptr, bytes, stream_id, std::move(owner)));
  return false;
}

std::string SimDevice::owner_of(const void* ptr, std::size_t bytes) noexcept {
  (void)bytes;
  try {
    std::shared_lock lock(memory_mutex_);
    const auto addr = address(ptr);
    auto it = find_alloc(addr);
    if (it == allocs_.end()) return {};
    const Alloc& alloc = it->second;
    if (!alloc.sub) return alloc.label;
    auto block = alloc.blocks.upper_bound(addr);
    if (block == alloc.blocks.begin()) return {};
    --block;
    if (addr >= block->first + block->second.size) return {};
    return block->second.label;
  } catch (...) {
    return {};
  }
}

}  // namespace gpulife::detail::sim
