// SPDX-License-Identifier: Apache-2.0
// The simulated device's memory model: upstream allocations, blocks a sub-allocator hands out,
// pinned host memory, and the check of every queued access against them.

#include "runtime/sim_device.hpp"

#include "runtime/sim_scheduler.hpp"

namespace gpulife::detail::sim {

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
    if (auto it = allocs_.find(base);
        it != allocs_.end() && it->second.state == AllocState::pending)
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
      report(
          SimViolation{SimViolation::Kind::bad_free, "cudaFreeAsync", ptr, bytes, stream.id(), {}});
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
  check_not_in_host_function("cudaMallocHost");
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
  check_not_in_host_function("cudaFreeHost");
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
          bad = SimViolation{
              SimViolation::Kind::unallocated, "sub-allocation", ptr, bytes, stream_id, {}};
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
              bad =
                  SimViolation{SimViolation::Kind::overlap, "sub-allocation", ptr, bytes, stream_id,
                               last->second.label};
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
      if (block == it->second.blocks.end() || !block->second.live || block->second.size != bytes) {
        bad = SimViolation{SimViolation::Kind::bad_free,
                           "sub-allocation free",
                           ptr,
                           bytes,
                           0,
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

}  // namespace gpulife::detail::sim
