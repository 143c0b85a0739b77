// SPDX-License-Identifier: Apache-2.0
// The simulated device's virtual memory management, the model of cuMemAddressReserve,
// cuMemCreate + cuMemMap + cuMemSetAccess, cuMemUnmap + cuMemRelease and cuMemAddressFree: a
// reserved range is host address space with nothing committed (mmap, MAP_NORESERVE); mapping a
// chunk counts it against the device's capacity; unmapping gives the capacity back, and the host
// pages too (MADV_DONTNEED) once the device retains its capacity's worth of unmapped ones; a
// released range's pages go to the device's HostPages. For the memory model a range is memory
// lent to the device (external: never freed by cudaFree) whose live parts are the blocks a pool
// marks, so every queued access is checked as in any pool segment; an unmap of memory that a
// live block still covers is reported.

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>
#include <optional>
#include <stdexcept>

#include "runtime/sim_bytes.hpp"
#include "runtime/sim_device.hpp"
#include "runtime/sim_device_guard.hpp"

namespace gpulife::detail::sim {

SimDevice::VmmRange::~VmmRange() {
  if (base == nullptr) return;
  device_guard::remove(base);
  ::munmap(base, bytes);
}

void* SimDevice::reserve_address_range(std::size_t bytes) {
  const SimClock::Call vt(clock());  // cuMemAddressReserve: no modelled cost
  const std::size_t g = options_.vmm_granularity;
  if (g == 0) throw std::logic_error(name() + " has no virtual memory management");
  if (bytes == 0 || bytes % g != 0) {
    throw std::invalid_argument("bytes: " + std::to_string(bytes) +
                                " is not a positive multiple of the granularity " +
                                std::to_string(g));
  }
  void* host = host_pages_.map(bytes, g, HostPages::Kind::reserved, options_.fill_fresh);
  if (host == nullptr) {
    throw OutOfMemoryError("out of memory: cuMemAddressReserve of " + format_bytes(bytes) +
                               " on " + name() + ": the host has no address space left",
                           bytes);
  }
  const std::uintptr_t base = address(host);
  std::unique_lock lock(memory_mutex_);
  try {
    auto [range, added] = vmm_.try_emplace(base, reinterpret_cast<void*>(base), bytes);
    (void)added;
    range->second.chunks.assign(bytes / g, 0);
    Alloc& alloc = allocs_[base];
    alloc.size = bytes;
    alloc.requested = bytes;
    alloc.state = AllocState::live;
    alloc.sub = true;        // live only where a pool marked blocks
    alloc.external = true;   // cudaFree of it is a bad free; the device frees nothing of it
    alloc.external_refs = 1;
    alloc.vmm = true;
  } catch (...) {
    vmm_.erase(base);
    throw;
  }
  // The whole range, mapped chunks or not, is device memory the host cannot touch.
  if (options_.guard_device_memory) device_guard::add(reinterpret_cast<void*>(base), bytes);
  return reinterpret_cast<void*>(base);
}

void SimDevice::release_address_range(void* base, std::size_t bytes) noexcept {
  const SimClock::Call vt(clock());
  std::optional<SimViolation> bad;
  {
    std::unique_lock lock(memory_mutex_);
    auto range = vmm_.find(address(base));
    if (range == vmm_.end() || range->second.bytes != bytes) {
      bad = make_violation(SimViolation::Kind::bad_free, "cuMemAddressFree", base, bytes, 0);
    } else {
      std::size_t still_mapped = 0;
      std::size_t retained = 0;
      for (std::uint8_t c : range->second.chunks) {
        still_mapped += c == chunk_mapped ? 1 : 0;
        retained += c == chunk_retained ? 1 : 0;
      }
      // The poison of freed blocks in chunks still mapped is verified as at an unmap.
      const std::size_t g = options_.vmm_granularity;
      const Alloc& alloc = allocs_.at(address(base));
      for (const auto& [at, block] : alloc.blocks) {
        if (block.live) continue;
        for (std::uintptr_t p = at; p < at + block.size;) {
          const std::uintptr_t chunk_end = (p - address(base)) / g * g + g + address(base);
          const std::uintptr_t to = std::min(chunk_end, at + block.size);
          if (range->second.chunks[(p - address(base)) / g] == chunk_mapped) {
            verify_poison(p, to - p, block.label);
          }
          p = to;
        }
      }
      used_ -= still_mapped * g;  // cuMemAddressFree of a mapped range
      vmm_retained_bytes_ -= retained * g;  // those pages go to host_pages_ with the range
      allocs_.erase(address(base));
      // The pages of mapped and retained chunks back a later range; the addresses go.
      device_guard::remove(base);
      host_pages_.unmap(base, bytes, HostPages::Kind::reserved, (still_mapped + retained) * g);
      range->second.base = nullptr;
      vmm_.erase(range);
      if (races_) races_->forget(address(base), address(base) + bytes);
    }
  }
  flush_deferred();
  if (bad) report(std::move(*bad));
}

void SimDevice::map_memory(void* ptr, std::size_t bytes) {
  // cuMemCreate + cuMemMap + cuMemSetAccess: modelled as a cudaMalloc (the profile's malloc_us).
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().malloc_us);
  maybe_fail(FaultSite::allocation, "cuMemCreate", "mapping", bytes);
  const std::size_t g = options_.vmm_granularity;
  std::unique_lock lock(memory_mutex_);
  auto range = vmm_.upper_bound(address(ptr));
  if (range == vmm_.begin() || g == 0) {
    throw std::invalid_argument("ptr: not in a reserved range of " + name());
  }
  --range;
  VmmRange& r = range->second;
  const std::uintptr_t offset = address(ptr) - range->first;
  if (offset % g != 0 || bytes % g != 0 || bytes == 0 || offset + bytes > r.bytes) {
    throw std::invalid_argument("bytes: [" + format_pointer(ptr) + ", +" + std::to_string(bytes) +
                                ") is not whole chunks of a reserved range");
  }
  for (std::size_t c = offset / g; c < (offset + bytes) / g; ++c) {
    if (r.chunks[c] == chunk_mapped) {
      throw std::invalid_argument("ptr: chunk " + std::to_string(c) + " is mapped already");
    }
  }
  if (bytes > options_.capacity_bytes - used_) {
    const std::size_t used = used_;
    lock.unlock();
    throw OutOfMemoryError("out of memory: cuMemCreate of " + format_bytes(bytes) + " on " +
                               name() + ": " + format_bytes(used) + " in use, " +
                               format_bytes(options_.capacity_bytes - used) + " free",
                           bytes);
  }
  used_ += bytes;
  for (std::size_t c = offset / g; c < (offset + bytes) / g; ++c) {
    if (r.chunks[c] == chunk_retained) vmm_retained_bytes_ -= g;
    r.chunks[c] = chunk_mapped;
  }
  // Freed blocks there lost their poison with the unmapped pages: forget them, so that reusing
  // the addresses does not count the new memory's contents as a stray write.
  std::erase_if(allocs_.at(range->first).blocks, [&](const auto& entry) {
    return !entry.second.live && entry.first < address(ptr) + bytes &&
           entry.first + entry.second.size > address(ptr);
  });
  lock.unlock();
  // New physical memory holds garbage on a GPU, not the zeros of fresh host pages.
  if (options_.fill_fresh) {
    const DeviceAccessScope device_access;  // guarded device memory: the sim's own write
    fill_device_bytes(ptr, fresh_value, bytes);
  }
  // New physical memory: what happened at these addresses before is history the driver has
  // ordered (the race detector forgets it).
  const RangeUse use{ptr, bytes, Use::fresh};
  RaceDetector::Step(races()).host_op("cuMemMap", std::span(&use, 1));
}

void SimDevice::unmap_memory(void* ptr, std::size_t bytes) noexcept {
  // cuMemUnmap + cuMemRelease: modelled as a cudaFree without its synchronisation (free_us).
  const SimClock::Call vt(clock());
  if (clock_) clock_->charge_us(clock_->profile().free_us);
  const std::size_t g = options_.vmm_granularity;
  std::optional<SimViolation> bad;
  {
    std::unique_lock lock(memory_mutex_);
    auto range = vmm_.upper_bound(address(ptr));
    bool ok = range != vmm_.begin() && g != 0;
    if (ok) {
      --range;
      const std::uintptr_t offset = address(ptr) - range->first;
      VmmRange& r = range->second;
      ok = offset % g == 0 && bytes % g == 0 && offset + bytes <= r.bytes;
      for (std::size_t c = offset / g; ok && c < (offset + bytes) / g; ++c) {
        ok = r.chunks[c] == chunk_mapped;
      }
      if (ok) {
        // Unmapping memory that a live block covers: the pool gave back memory still in use.
        const Alloc& alloc = allocs_.at(range->first);
        auto block = alloc.blocks.lower_bound(address(ptr) + bytes);  // the first one past it
        while (block != alloc.blocks.begin()) {
          --block;
          if (block->first + block->second.size <= address(ptr)) break;
          if (block->second.live) {
            bad = make_violation(
                SimViolation::Kind::bad_free, "cuMemUnmap of a live block", ptr, bytes, 0,
                "the live block at " + format_pointer(reinterpret_cast<void*>(block->first)) +
                    " (+" + std::to_string(block->second.size) + ")" +
                    (block->second.label.empty() ? "" : ", " + block->second.label));
            break;
          }
        }
        const bool retain =
            options_.fill_fresh && bytes <= options_.capacity_bytes - vmm_retained_bytes_;
        for (std::size_t c = offset / g; c < (offset + bytes) / g; ++c) {
          r.chunks[c] = retain ? chunk_retained : chunk_released;
        }
        if (retain) vmm_retained_bytes_ += bytes;
        used_ -= bytes;
        // The freed blocks there: their poison is verified now (a write through a stale
        // pointer that nobody declared), and they stay known, cut at the unmapped range's ends,
        // so that a stale access to the unmapped memory is a use after free; mapping forgets
        // them. The host pages stay (retained, within the device's capacity) or go back; either
        // way the chunk is inaccessible until mapped again, and mapping fills it afresh.
        Alloc& owner = allocs_.at(range->first);
        const std::uintptr_t lo = address(ptr);
        const std::uintptr_t hi = lo + bytes;
        std::vector<std::pair<std::uintptr_t, Block>> pieces;
        for (auto it = owner.blocks.begin(); it != owner.blocks.end();) {
          const std::uintptr_t b = it->first;
          const std::uintptr_t e = b + it->second.size;
          if (it->second.live || e <= lo || b >= hi) {
            ++it;
            continue;
          }
          const std::uintptr_t in_b = std::max(b, lo);
          const std::uintptr_t in_e = std::min(e, hi);
          verify_poison(in_b, in_e - in_b, it->second.label);
          for (auto [from, to] : {std::pair{b, in_b}, {in_b, in_e}, {in_e, e}}) {
            if (to <= from) continue;
            Block piece;
            piece.size = to - from;
            piece.live = false;
            piece.label = it->second.label;
            pieces.emplace_back(from, std::move(piece));
          }
          it = owner.blocks.erase(it);
        }
        for (auto& [at, piece] : pieces) owner.blocks.emplace(at, std::move(piece));
        if (!retain) ::madvise(ptr, bytes, MADV_DONTNEED);
      }
    }
    if (!ok && !bad) {
      bad = make_violation(SimViolation::Kind::bad_free, "cuMemUnmap", ptr, bytes, 0);
    }
  }
  flush_deferred();
  if (bad) report(std::move(*bad));
}

}  // namespace gpulife::detail::sim
