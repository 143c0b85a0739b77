// SPDX-License-Identifier: Apache-2.0
// The simulated device's virtual memory management, the model of cuMemAddressReserve,
// cuMemCreate + cuMemMap + cuMemSetAccess, cuMemUnmap + cuMemRelease and cuMemAddressFree: a
// reserved range is host address space with nothing committed (mmap, MAP_NORESERVE); mapping a
// chunk counts it against the device's capacity; unmapping gives the host pages back
// (MADV_DONTNEED) and the capacity. For the memory model a range is memory lent to the device
// (external: never freed by cudaFree) whose live parts are the blocks a pool marks, so every
// queued access is checked as in any pool segment; an unmap of memory that a live block still
// covers is reported.

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>
#include <optional>
#include <stdexcept>

#include "runtime/sim_device.hpp"
#include "runtime/sim_device_guard.hpp"

namespace gpulife::detail::sim {

SimDevice::VmmRange::~VmmRange() {
  device_guard::remove(base);
  ::munmap(base, bytes);
}

void* SimDevice::reserve_address_range(std::size_t bytes) {
  const std::size_t g = options_.vmm_granularity;
  if (g == 0) throw std::logic_error(name() + " has no virtual memory management");
  if (bytes == 0 || bytes % g != 0) {
    throw std::invalid_argument("bytes: " + std::to_string(bytes) +
                                " is not a positive multiple of the granularity " +
                                std::to_string(g));
  }
  // Aligned to the granularity: reserve one chunk more and trim.
  void* raw = ::mmap(nullptr, bytes + g, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    throw OutOfMemoryError("out of memory: cuMemAddressReserve of " + format_bytes(bytes) +
                               " on " + name() + ": the host has no address space left",
                           bytes);
  }
  const std::uintptr_t start = address(raw);
  const std::uintptr_t base = (start + g - 1) / g * g;
  if (base > start) ::munmap(raw, base - start);
  if (start + g > base) ::munmap(reinterpret_cast<void*>(base + bytes), start + g - base);
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
  std::optional<SimViolation> bad;
  {
    std::unique_lock lock(memory_mutex_);
    auto range = vmm_.find(address(base));
    if (range == vmm_.end() || range->second.bytes != bytes) {
      bad = make_violation(SimViolation::Kind::bad_free, "cuMemAddressFree", base, bytes, 0);
    } else {
      std::size_t still_mapped = 0;
      for (std::uint8_t c : range->second.chunks) still_mapped += c;
      // The poison of freed blocks in chunks still mapped is verified as at an unmap.
      const std::size_t g = options_.vmm_granularity;
      const Alloc& alloc = allocs_.at(address(base));
      for (const auto& [at, block] : alloc.blocks) {
        if (block.live) continue;
        for (std::uintptr_t p = at; p < at + block.size;) {
          const std::uintptr_t chunk_end = (p - address(base)) / g * g + g + address(base);
          const std::uintptr_t to = std::min(chunk_end, at + block.size);
          if (range->second.chunks[(p - address(base)) / g] != 0) {
            verify_poison(p, to - p, block.label);
          }
          p = to;
        }
      }
      used_ -= still_mapped * options_.vmm_granularity;  // cuMemAddressFree of a mapped range
      allocs_.erase(address(base));
      vmm_.erase(range);
      if (races_) races_->forget(address(base), address(base) + bytes);
    }
  }
  flush_deferred();
  if (bad) report(std::move(*bad));
}

void SimDevice::map_memory(void* ptr, std::size_t bytes) {
  maybe_fail(FaultSite::allocation, "cuMemCreate", "mapping " + format_bytes(bytes), bytes);
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
    if (r.chunks[c] != 0) {
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
  for (std::size_t c = offset / g; c < (offset + bytes) / g; ++c) r.chunks[c] = 1;
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
    std::memset(ptr, fresh_value, bytes);
  }
  // New physical memory: what happened at these addresses before is history the driver has
  // ordered (the race detector forgets it).
  const RangeUse use{ptr, bytes, Use::fresh};
  RaceDetector::Step(races()).host_op("cuMemMap", std::span(&use, 1));
}

void SimDevice::unmap_memory(void* ptr, std::size_t bytes) noexcept {
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
      for (std::size_t c = offset / g; ok && c < (offset + bytes) / g; ++c) ok = r.chunks[c] != 0;
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
        for (std::size_t c = offset / g; c < (offset + bytes) / g; ++c) r.chunks[c] = 0;
        used_ -= bytes;
        // The freed blocks there: their poison is verified now (a write through a stale
        // pointer that nobody declared), and they stay known, cut at the unmapped range's ends,
        // so that a stale access to the unmapped memory is a use after free; mapping forgets
        // them. Then the host pages go back; reads see zeros.
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
        ::madvise(ptr, bytes, MADV_DONTNEED);
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
