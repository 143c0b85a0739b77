// SPDX-License-Identifier: Apache-2.0
// Host pages for simulated device memory (see sim_host_pages.hpp).

#include "runtime/sim_host_pages.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4  // Linux 5.7; older kernels refuse it and the pages go back instead
#endif

namespace gpulife::detail::sim {

namespace {

constexpr std::size_t huge_page = std::size_t{2} << 20;

std::size_t page_size() noexcept {
  static const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

std::uintptr_t address(const void* ptr) noexcept { return reinterpret_cast<std::uintptr_t>(ptr); }

/// The alignment a mapping of `bytes` gets at least: a huge page where it spans one.
std::size_t natural_alignment(std::size_t bytes) noexcept {
  return bytes >= huge_page ? huge_page : page_size();
}

/// An anonymous private mapping of `bytes` at a multiple of `alignment`, or nullptr.
void* map_aligned(std::size_t bytes, std::size_t alignment, int prot, int flags) noexcept {
  const std::size_t slack = alignment > page_size() ? alignment : 0;
  void* raw = ::mmap(nullptr, bytes + slack, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  if (slack == 0) return raw;
  const std::uintptr_t start = address(raw);
  const std::uintptr_t base = (start + alignment - 1) / alignment * alignment;
  if (base > start) ::munmap(raw, base - start);
  const std::uintptr_t end = start + bytes + slack;
  if (end > base + bytes) ::munmap(reinterpret_cast<void*>(base + bytes), end - base - bytes);
  return reinterpret_cast<void*>(base);
}

int kind_flags(HostPages::Kind kind) noexcept {
  return kind == HostPages::Kind::reserved ? MAP_NORESERVE : 0;
}

}  // namespace

HostPages::~HostPages() {
  for (const Spare& spare : spares_) ::munmap(spare.ptr, spare.bytes);
}

void* HostPages::map(std::size_t bytes, std::size_t alignment, Kind kind, bool reuse) noexcept {
  alignment = std::max(alignment, natural_alignment(bytes));
  if (reuse) {
    std::unique_lock lock(mutex_);
    // An allocation may take a larger one (up to twice its size), cut to size; a virtual range
    // only one of its own size (a pool reserves ranges of one size).
    auto it = std::find_if(spares_.begin(), spares_.end(), [&](const Spare& s) {
      const bool fits =
          kind == Kind::committed ? s.bytes >= bytes && s.bytes / 2 <= bytes : s.bytes == bytes;
      return fits && s.kind == kind && address(s.ptr) % alignment == 0;
    });
    if (it != spares_.end()) {
      const Spare spare = *it;
      spares_.erase(it);
      kept_ -= spare.committed;
      lock.unlock();
      // Cut in place (the tail's pages go back); a guarded range went away inaccessible, its
      // pages come back open.
      const bool cut =
          spare.bytes == bytes || ::mremap(spare.ptr, spare.bytes, bytes, 0) != MAP_FAILED;
      if (cut && ::mprotect(spare.ptr, bytes, PROT_READ | PROT_WRITE) == 0) return spare.ptr;
      ::munmap(spare.ptr, cut ? bytes : spare.bytes);
    }
  }
  void* ptr = map_aligned(bytes, alignment, PROT_READ | PROT_WRITE, kind_flags(kind));
  if (ptr != nullptr && bytes >= huge_page) ::madvise(ptr, bytes, MADV_HUGEPAGE);
  return ptr;
}

void HostPages::unmap(void* ptr, std::size_t bytes, Kind kind, std::size_t committed) noexcept {
  if (!keep(ptr, bytes, kind, committed, false)) ::munmap(ptr, bytes);
}

bool HostPages::release_pages(void* ptr, std::size_t bytes, Kind kind,
                              std::size_t committed) noexcept {
  if (keep(ptr, bytes, kind, committed, true)) {
    // The pages moved out; the addresses stay mapped without them. Nothing may touch them.
    if (::mprotect(ptr, bytes, PROT_NONE) == 0) return true;
  }
  // Kept or not, the addresses go on as a reserved, inaccessible range without pages.
  void* again =
      ::mmap(ptr, bytes, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return again != MAP_FAILED;
}

bool HostPages::keep(void* ptr, std::size_t bytes, Kind kind, std::size_t committed,
                     bool keep_addresses) noexcept {
  if (committed > budget_) return false;
  void* to = ptr;
  if (kind == Kind::committed || keep_addresses) {
    // Addresses of their own for the pages, never handed out before.
    to = map_aligned(bytes, natural_alignment(bytes), PROT_NONE, MAP_NORESERVE);
    if (to == nullptr) return false;
    const int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (keep_addresses ? MREMAP_DONTUNMAP : 0);
    if (::mremap(ptr, bytes, bytes, flags, to) == MAP_FAILED) {
      ::munmap(to, bytes);  // e.g. [ptr, +bytes) spans mappings of different protections
      return false;
    }
  }
  std::scoped_lock lock(mutex_);
  try {
    spares_.push_back(Spare{to, bytes, kind, committed});
  } catch (...) {
    ::munmap(to, bytes);  // the pages moved: they are ours to give back
    return true;
  }
  kept_ += committed;
  while (kept_ > budget_) {  // the oldest go back to the host
    ::munmap(spares_.front().ptr, spares_.front().bytes);
    kept_ -= spares_.front().committed;
    spares_.pop_front();
  }
  return true;
}

std::size_t HostPages::kept_bytes() const noexcept {
  std::scoped_lock lock(mutex_);
  return kept_;
}

}  // namespace gpulife::detail::sim
