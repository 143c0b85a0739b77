// SPDX-License-Identifier: Apache-2.0
// The host pages behind simulated device memory: freed pages come back for a mapping of the same
// size and kind (only where the caller overwrites them), within a budget, an allocation's at
// addresses of its own; released addresses stay reserved and inaccessible.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/sim_host_pages.hpp"

namespace gpulife::detail::sim {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
using Kind = HostPages::Kind;

/// `pages.map` of `bytes` at page alignment, as bytes.
unsigned char* map_bytes(HostPages& pages, std::size_t bytes, Kind kind = Kind::committed,
                         bool reuse = true) {
  return static_cast<unsigned char*>(pages.map(bytes, 4096, kind, reuse));
}

/// Whether [ptr, +bytes) is mapped at all (mincore fails with ENOMEM on unmapped addresses).
bool mapped(void* ptr, std::size_t bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> residency((bytes + page - 1) / page);
  return mincore(ptr, bytes, residency.data()) == 0;
}

TEST(HostPagesTest, MappingsAreAlignedAndFreshOnesAreZero) {
  HostPages pages(8 * MiB);
  auto* a = map_bytes(pages, 4 * MiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % (2 * MiB), 0U) << "huge-page aligned";
  EXPECT_EQ(a[0], 0);
  EXPECT_EQ(a[4 * MiB - 1], 0);
  auto* b = static_cast<unsigned char*>(pages.map(4 * MiB, 8 * MiB, Kind::reserved, true));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % (8 * MiB), 0U);
  pages.unmap(a, 4 * MiB, Kind::committed, 4 * MiB);
  pages.unmap(b, 4 * MiB, Kind::reserved, 0);
}

TEST(HostPagesTest, AFreedAllocationsPagesComeBackElsewhereOnlyForTheSameSizeAndKind) {
  HostPages pages(8 * MiB);
  auto* a = map_bytes(pages, 2 * MiB);
  ASSERT_NE(a, nullptr);
  std::memset(a, 0x5A, 2 * MiB);
  pages.unmap(a, 2 * MiB, Kind::committed, 2 * MiB);
  EXPECT_EQ(pages.kept_bytes(), 2 * MiB);
  // Another size, another kind, or a caller that does not overwrite: fresh zero pages.
  auto* other_size = map_bytes(pages, 4 * MiB);
  auto* other_kind = map_bytes(pages, 2 * MiB, Kind::reserved);
  auto* no_reuse = map_bytes(pages, 2 * MiB, Kind::committed, false);
  EXPECT_EQ(other_size[0], 0);
  EXPECT_EQ(other_kind[0], 0);
  EXPECT_EQ(no_reuse[0], 0);
  EXPECT_EQ(pages.kept_bytes(), 2 * MiB);
  // The same size and kind: the old pages (their bytes show it), not at the freed addresses.
  auto* again = map_bytes(pages, 2 * MiB);
  EXPECT_EQ(again[0], 0x5A);
  EXPECT_EQ(again[2 * MiB - 1], 0x5A);
  EXPECT_NE(again, a);
  EXPECT_EQ(pages.kept_bytes(), 0U);
  again[0] = 1;  // writable
  for (auto* p : {other_size, again}) {
    pages.unmap(p, p == other_size ? 4 * MiB : 2 * MiB, Kind::committed, 0);
  }
  pages.unmap(other_kind, 2 * MiB, Kind::reserved, 0);
  pages.unmap(no_reuse, 2 * MiB, Kind::committed, 0);
}

TEST(HostPagesTest, AnAllocationTakesALargerFreedOneCutToSizeButNotOneTwiceAsLarge) {
  HostPages pages(16 * MiB);
  auto* a = map_bytes(pages, 4 * MiB);
  std::memset(a, 0x33, 4 * MiB);
  pages.unmap(a, 4 * MiB, Kind::committed, 4 * MiB);
  auto* small = map_bytes(pages, 1 * MiB);
  EXPECT_EQ(small[0], 0) << "a quarter of the size: fresh pages";
  auto* cut = map_bytes(pages, 3 * MiB);
  EXPECT_EQ(cut[0], 0x33);
  EXPECT_EQ(cut[3 * MiB - 1], 0x33);
  EXPECT_EQ(pages.kept_bytes(), 0U);
  EXPECT_FALSE(mapped(cut + 3 * MiB, 1 * MiB)) << "the tail went back to the host";
  pages.unmap(small, 1 * MiB, Kind::committed, 0);
  pages.unmap(cut, 3 * MiB, Kind::committed, 0);
}

TEST(HostPagesDeathTest, AReleasedRangeStaysReservedAndInaccessible) {
  HostPages pages(8 * MiB);
  auto* a = map_bytes(pages, 2 * MiB);
  std::memset(a, 0x77, 2 * MiB);
  ASSERT_TRUE(pages.release_pages(a, 2 * MiB, Kind::committed, 2 * MiB));
  EXPECT_TRUE(mapped(a, 2 * MiB)) << "the addresses stay reserved";
  auto* again = map_bytes(pages, 2 * MiB);
  ASSERT_NE(again, nullptr);
  EXPECT_NE(again, a);
  EXPECT_EQ(again[123], 0x77) << "the pages moved to the new mapping";
  EXPECT_DEATH({ a[0] = 1; }, "") << "the released addresses are inaccessible";
  munmap(a, 2 * MiB);
  pages.unmap(again, 2 * MiB, Kind::committed, 0);
}

TEST(HostPagesTest, TheBudgetBoundsWhatIsKeptOldestFirst) {
  HostPages pages(4 * MiB);
  std::vector<unsigned char*> held;
  for (int fill : {1, 2, 3}) {
    auto* p = map_bytes(pages, 2 * MiB);
    std::memset(p, fill, 2 * MiB);
    held.push_back(p);
  }
  auto* too_big = map_bytes(pages, 8 * MiB);
  pages.unmap(too_big, 8 * MiB, Kind::committed, 8 * MiB);
  EXPECT_EQ(pages.kept_bytes(), 0U) << "more than the budget is never kept";
  EXPECT_FALSE(mapped(too_big, 8 * MiB));
  for (auto* p : held) pages.unmap(p, 2 * MiB, Kind::committed, 2 * MiB);
  EXPECT_EQ(pages.kept_bytes(), 4 * MiB);
  // The first one went back to the host; the other two come back, oldest first.
  auto* x = map_bytes(pages, 2 * MiB);
  auto* y = map_bytes(pages, 2 * MiB);
  auto* z = map_bytes(pages, 2 * MiB);
  EXPECT_EQ(x[0], 2);
  EXPECT_EQ(y[0], 3);
  EXPECT_EQ(z[0], 0);
  for (auto* p : {x, y, z}) pages.unmap(p, 2 * MiB, Kind::committed, 0);
}

TEST(HostPagesTest, AVirtualRangeComesBackAtItsAddressesWithItsPages) {
  HostPages pages(8 * MiB);
  auto* r = static_cast<unsigned char*>(pages.map(8 * MiB, 2 * MiB, Kind::reserved, true));
  r[3 * MiB] = 9;  // one chunk committed
  pages.unmap(r, 8 * MiB, Kind::reserved, 2 * MiB);
  EXPECT_EQ(pages.kept_bytes(), 2 * MiB);
  auto* again = static_cast<unsigned char*>(pages.map(8 * MiB, 2 * MiB, Kind::reserved, true));
  EXPECT_EQ(again, r);
  EXPECT_EQ(again[3 * MiB], 9);
  pages.unmap(again, 8 * MiB, Kind::reserved, 0);
}

}  // namespace
}  // namespace gpulife::detail::sim
