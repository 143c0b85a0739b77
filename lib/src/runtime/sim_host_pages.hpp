// SPDX-License-Identifier: Apache-2.0
// Host memory that backs the simulated device's memory: mappings aligned for transparent huge
// pages, and the pages of freed ranges kept to back later ones.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>

namespace gpulife::detail::sim {

/// Host pages for simulated device memory. On a VM a page fault costs several microseconds and
/// giving pages back costs a TLB shootdown, so a sim that maps fresh memory for every allocation
/// spends more time faulting than simulating. This class
///  - maps ranges aligned to (and advised as) 2 MiB huge pages: one fault per 2 MiB;
///  - keeps the pages of ranges the device frees, within a byte budget, and hands them out
///    again for a range of the same kind and size. An allocation's pages move (mremap) to
///    addresses of their own, so that its freed addresses are not handed out again by this
///    class and a stale pointer into them still finds no memory. A virtual range stays where it
///    was, as the host's mmap would place it again (moving its page tables costs more than the
///    faults it saves), and comes back at the same addresses.
/// Kept pages hold old bytes: `map` returns them only where the caller says it overwrites the
/// memory (the device fills fresh memory, SimOptions::fill_fresh). Thread-safe.
class HostPages {
 public:
  /// How the host backs a mapping.
  enum class Kind {
    committed,  ///< an allocation: the host commits (and may refuse) all of it up front
    reserved,   ///< a virtual range (MAP_NORESERVE): pages are committed as they are touched
  };

  /// `budget_bytes`: the most committed bytes kept for reuse.
  explicit HostPages(std::size_t budget_bytes) noexcept : budget_(budget_bytes) {}
  ~HostPages();
  HostPages(const HostPages&) = delete;
  HostPages& operator=(const HostPages&) = delete;

  /// A read/write mapping of `bytes` aligned to `alignment` (a power of two, at least a page):
  /// where `reuse` allows, kept pages of a freed range of the same kind and size (for an
  /// allocation: of up to twice the size, cut to it), else fresh zero pages. nullptr when the
  /// host has no address space (or, committed, no memory) left.
  [[nodiscard]] void* map(std::size_t bytes, std::size_t alignment, Kind kind, bool reuse) noexcept;

  /// Frees the mapping [ptr, +bytes) of `map`. Its pages are kept for reuse when `committed`
  /// (what the caller knows of its pages in use: all of it for an allocation, the mapped chunks
  /// for a range) fits in the budget; else they go back to the host.
  void unmap(void* ptr, std::size_t bytes, Kind kind, std::size_t committed) noexcept;

  /// As `unmap`, but the addresses stay reserved and inaccessible (PROT_NONE, no pages), so that
  /// nothing else is mapped there. false if they could not be kept reserved: nothing changed.
  [[nodiscard]] bool release_pages(void* ptr, std::size_t bytes, Kind kind,
                                   std::size_t committed) noexcept;

  /// Committed bytes kept for reuse now.
  [[nodiscard]] std::size_t kept_bytes() const noexcept;

 private:
  struct Spare {
    void* ptr;
    std::size_t bytes;
    Kind kind;
    std::size_t committed;
  };
  /// Moves the pages of [ptr, +bytes) to a new aligned address (leaving `ptr` mapped without
  /// pages where `keep_addresses`) and keeps them; false if they could not be kept.
  bool keep(void* ptr, std::size_t bytes, Kind kind, std::size_t committed,
            bool keep_addresses) noexcept;

  mutable std::mutex mutex_;
  std::deque<Spare> spares_;  // oldest first
  std::size_t kept_ = 0;      // committed bytes of spares_
  const std::size_t budget_;
};

}  // namespace gpulife::detail::sim
