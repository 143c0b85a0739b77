// SPDX-License-Identifier: Apache-2.0
// The simulated device's virtual memory management: reserved ranges cost no capacity, mapped
// chunks do, bad maps and unmaps are refused or reported, accesses are checked against what a
// pool marks live.

#include <cstring>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/launch.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

class SimVmmTest : public testing::SimTest {
 protected:
  static SimOptions options() {
    SimOptions o;
    o.capacity_bytes = 16 * MiB;
    return o;
  }
  SimVmmTest() : SimTest(options()) {}
  std::size_t used() { return device_.memory_info().total_bytes - device_.memory_info().free_bytes; }
};

TEST_F(SimVmmTest, MappedChunksAndOnlyThemCountAgainstTheCapacity) {
  auto& impl = device_.impl();
  ASSERT_EQ(impl.vmm_granularity(), 2 * MiB);
  auto* base = static_cast<char*>(impl.reserve_address_range(64 * MiB));  // beyond capacity
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(base) % (2 * MiB), 0U);
  EXPECT_EQ(used(), 0U);
  impl.map_memory(base + 4 * MiB, 6 * MiB);
  EXPECT_EQ(used(), 6 * MiB);
  EXPECT_THROW(impl.map_memory(base + 10 * MiB, 12 * MiB), OutOfMemoryError);
  EXPECT_EQ(used(), 6 * MiB) << "a failed map takes nothing";
  EXPECT_THROW(impl.map_memory(base + 4 * MiB, 2 * MiB), std::invalid_argument) << "mapped twice";
  EXPECT_THROW(impl.map_memory(base + 1, 2 * MiB), std::invalid_argument) << "unaligned";
  impl.unmap_memory(base + 6 * MiB, 2 * MiB);
  EXPECT_EQ(used(), 4 * MiB);
  impl.unmap_memory(base + 4 * MiB, 2 * MiB);
  impl.unmap_memory(base + 8 * MiB, 2 * MiB);
  EXPECT_EQ(used(), 0U);
  impl.release_address_range(base, 64 * MiB);
  EXPECT_TRUE(take_violations().empty());
}

TEST_F(SimVmmTest, UnmappingWhatIsNotMappedOrStillLiveIsReported) {
  auto& impl = device_.impl();
  auto* base = static_cast<char*>(impl.reserve_address_range(8 * MiB));
  impl.unmap_memory(base, 2 * MiB);  // never mapped
  impl.map_memory(base, 2 * MiB);
  impl.mark_allocated(base + 4096, 4096, impl.default_stream());
  impl.unmap_memory(base, 2 * MiB);  // a live block is in it
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 2U);
  EXPECT_EQ(violations[0].operation, "cuMemUnmap");
  EXPECT_EQ(violations[1].operation, "cuMemUnmap of a live block");
  impl.release_address_range(base, 8 * MiB);
}

TEST_F(SimVmmTest, AccessesAreCheckedAgainstTheBlocksAPoolMarks) {
  auto& impl = device_.impl();
  auto* base = static_cast<char*>(impl.reserve_address_range(4 * MiB));
  impl.map_memory(base, 2 * MiB);
  StreamView stream = device_.default_stream();
  impl.mark_allocated(base, 4096, impl.default_stream());
  stream.memset(base, 1, 4096);                     // live: fine
  stream.memset(base + 8192, 1, 16);                // mapped, never handed out
  impl.mark_freed(base, 4096, impl.default_stream(), {});
  stream.memset(base, 1, 16);                       // freed
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 2U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::unallocated);
  EXPECT_EQ(violations[1].kind, SimViolation::Kind::use_after_free);
  impl.unmap_memory(base, 2 * MiB);
  impl.release_address_range(base, 4 * MiB);
}

TEST_F(SimVmmTest, MappedMemoryTakesPartInRaceDetectionAndHygiene) {
  auto& impl = device_.impl();
  auto* base = static_cast<unsigned char*>(impl.reserve_address_range(4 * MiB));
  impl.map_memory(base, 2 * MiB);
  // Fresh memory holds the fresh pattern, not the zeros of new host pages.
  EXPECT_EQ(base[0], 0xCF);
  EXPECT_EQ(base[2 * MiB - 1], 0xCF);
  Stream s1(device_);
  Stream s2(device_);
  impl.mark_allocated(base, 4096, *s1.view().impl());
  s1.view().memset(base, 1, 4096);
  // A kernel on s2 that declares a read of the block, with no event between the streams: a
  // race. (Its body touches nothing, so that the host sees no race of its own under TSan.)
  for_each_index(s2, 1, [](std::size_t) {}, {{base, 4096, Access::read}}, "reader");
  s1.synchronize();
  s2.synchronize();
  auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::race);
  // A copy whose host side is mapped device memory breaks CUDA's rules.
  unsigned char host[16] = {};
  s1.view().copy(base, host, sizeof host, CopyKind::device_to_host);
  s1.synchronize();
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::api_misuse);
  // A write nobody declared into a freed block is found when its chunk is unmapped.
  impl.mark_freed(base, 4096, *s1.view().impl(), {});
  s1.synchronize();
  base[100] = 7;  // through a stale pointer
  impl.unmap_memory(base, 2 * MiB);
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::freed_memory_written);
  // A stale access to the unmapped block is a use after free, not a crash.
  s1.view().memset(base, 0, 16);
  s1.synchronize();
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
  // Mapped again: new memory, the old blocks forgotten, nothing reported on reuse.
  impl.map_memory(base, 2 * MiB);
  impl.mark_allocated(base, 8192, *s1.view().impl());
  s1.view().memset(base, 0, 8192);
  impl.mark_freed(base, 8192, *s1.view().impl(), {});
  s1.synchronize();
  impl.unmap_memory(base, 2 * MiB);
  impl.release_address_range(base, 4 * MiB);
  EXPECT_TRUE(take_violations().empty());
}

TEST_F(SimVmmTest, MemoryMappedAgainIsFreshWhereverItsHostPagesCameFrom) {
  // Unmapped chunks and released ranges keep their host pages for reuse (faulting pages in costs
  // more than the simulated work); what was written there must not show through.
  auto& impl = device_.impl();
  auto* base = static_cast<unsigned char*>(impl.reserve_address_range(4 * MiB));
  impl.map_memory(base, 4 * MiB);
  std::memset(base, 0x5A, 4 * MiB);
  impl.unmap_memory(base, 2 * MiB);
  impl.map_memory(base, 2 * MiB);
  EXPECT_EQ(base[0], 0xCF);
  EXPECT_EQ(base[2 * MiB - 1], 0xCF);
  EXPECT_EQ(base[2 * MiB], 0x5A) << "the chunk that stayed mapped kept its bytes";
  impl.unmap_memory(base, 4 * MiB);
  impl.release_address_range(base, 4 * MiB);
  auto* again = static_cast<unsigned char*>(impl.reserve_address_range(4 * MiB));
  impl.map_memory(again, 4 * MiB);
  EXPECT_EQ(again[0], 0xCF);
  EXPECT_EQ(again[4 * MiB - 1], 0xCF);
  impl.unmap_memory(again, 4 * MiB);
  impl.release_address_range(again, 4 * MiB);
  EXPECT_TRUE(take_violations().empty());
}

TEST_F(SimVmmTest, WithoutTheFreshFillAChunkMappedAgainReadsZeros) {
  SimOptions o = options();
  o.fill_fresh = false;
  o.on_violation = [](const SimViolation&) {};
  const Device plain = Device::sim(o);
  auto& impl = plain.impl();
  auto* base = static_cast<unsigned char*>(impl.reserve_address_range(2 * MiB));
  impl.map_memory(base, 2 * MiB);
  std::memset(base, 0x5A, 2 * MiB);
  impl.unmap_memory(base, 2 * MiB);
  impl.map_memory(base, 2 * MiB);
  EXPECT_EQ(base[0], 0);
  EXPECT_EQ(base[2 * MiB - 1], 0);
  impl.unmap_memory(base, 2 * MiB);
  impl.release_address_range(base, 2 * MiB);
}

TEST_F(SimVmmTest, ADeviceWithoutGranularityHasNone) {
  SimOptions o;
  o.vmm_granularity = 0;
  const Device plain = Device::sim(o);
  EXPECT_EQ(plain.impl().vmm_granularity(), 0U);
  EXPECT_THROW((void)plain.impl().reserve_address_range(2 * MiB), std::logic_error);
}

}  // namespace
}  // namespace gpulife
