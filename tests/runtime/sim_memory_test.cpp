// SPDX-License-Identifier: Apache-2.0
// Memory of the simulated device: capacity (with CUDA's reuse of pending stream-ordered frees),
// out-of-memory, bad frees, the sub-allocation marks through which a pool tells the device which
// of its blocks are live, and the hygiene that makes stale pointers and uninitialised reads
// visible (fresh fill, requested sizes, poison verified, addresses kept out of reuse).

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;
using testing::SimTest;

class SimMemoryTest : public SimTest {
 protected:
  static SimOptions small() {
    SimOptions options;
    options.capacity_bytes = std::size_t{1} << 20;
    return options;
  }
  SimMemoryTest() : SimTest(small()) {}
};

TEST_F(SimMemoryTest, AllocationsAreAlignedAndCounted) {
  void* a = device_.impl().allocate(100);
  void* b = device_.impl().allocate(1000);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 256, 0U);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % 256, 0U);
  const MemoryInfo info = device_.memory_info();
  EXPECT_EQ(info.total_bytes, std::size_t{1} << 20);
  EXPECT_EQ(info.free_bytes, info.total_bytes - 256 - 1024);
  device_.impl().deallocate(a, 100);
  device_.impl().deallocate(b, 1000);
  EXPECT_EQ(device_.memory_info().free_bytes, device_.memory_info().total_bytes);
}

TEST_F(SimMemoryTest, AllocationBeyondCapacityThrowsOutOfMemory) {
  void* a = device_.impl().allocate(768 * 1024);
  try {
    (void)device_.impl().allocate(512 * 1024);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("512.00 KiB"), std::string::npos) << message;
    EXPECT_NE(message.find("768.00 KiB in use"), std::string::npos) << message;
    EXPECT_NE(message.find(device_.name()), std::string::npos) << message;
    EXPECT_EQ(e.requested_bytes(), 512U * 1024);
  }
  device_.impl().deallocate(a, 768 * 1024);
  EXPECT_EQ(device_.memory_info().free_bytes, device_.memory_info().total_bytes);
}

TEST_F(SimMemoryTest, DoubleFreeIsAViolation) {
  void* a = device_.impl().allocate(256);
  device_.impl().deallocate(a, 256);
  device_.impl().deallocate(a, 256);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::bad_free);
}

TEST_F(SimMemoryTest, DoubleAsyncFreeIsCaughtAtTheCall) {
  Stream stream(device_);
  void* a = device_.impl().allocate_async(256, *stream.view().impl());
  device_.impl().deallocate_async(a, 256, *stream.view().impl());
  device_.impl().deallocate_async(a, 256, *stream.view().impl());
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::bad_free);
  EXPECT_EQ(violations[0].operation, "cudaFreeAsync");
}

TEST_F(SimMemoryTest, SubAllocatedBlockIsDeadAfterItsFreeAndNamesItsOwner) {
  Stream stream(device_);
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  auto& impl = *stream.view().impl();
  device_.impl().mark_allocated(chunk, 1024, impl);
  device_.impl().label(chunk, "tensor #7 'weights'", impl);
  stream.view().memset(chunk, 1, 1024);  // live: fine
  device_.impl().mark_freed(chunk, 1024, impl, {});
  stream.view().memset(chunk, 2, 16);  // after the free, in stream order
  stream.view().memset(chunk + 2048, 2, 16);  // never handed out
  auto violations = take_violations();
  ASSERT_EQ(violations.size(), 2U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
  EXPECT_EQ(violations[0].owner, "tensor #7 'weights'");
  EXPECT_EQ(violations[1].kind, SimViolation::Kind::unallocated);
  EXPECT_EQ(chunk[0], 0xDB) << "a freed block is poisoned";
  device_.impl().deallocate(chunk, 4096);
}

TEST_F(SimMemoryTest, SubAllocatorHandingOutOverlappingBlocksIsCaught) {
  Stream stream(device_);
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  auto& impl = *stream.view().impl();
  device_.impl().mark_allocated(chunk, 1024, impl);
  device_.impl().mark_allocated(chunk + 512, 1024, impl);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::overlap);
  device_.impl().deallocate(chunk, 4096);
}

TEST_F(SimMemoryTest, FreeThatWaitsForEventsAddsNoDependencyBetweenStreams) {
  Stream home(device_);
  Stream reader(device_);
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  std::memset(chunk, 0, 4096);  // fresh host memory may hold an earlier device's poison
  device_.impl().mark_allocated(chunk, 1024, *home.view().impl());
  home.view().memset(chunk, 0, 1024);  // fresh memory may hold an earlier test's poison
  home.synchronize();

  Gate gate;
  gate.block(reader);
  auto* pinned = static_cast<unsigned char*>(device_.allocate_pinned(1024));
  reader.view().copy(pinned, chunk, 1024, CopyKind::device_to_host);  // still reads the block
  Event done_reading(device_);
  reader.view().record(done_reading);
  detail::EventImpl* after[] = {done_reading.impl()};
  device_.impl().mark_freed(chunk, 1024, *home.view().impl(), after);
  home.synchronize();  // the home stream does not wait for the reader
  EXPECT_NE(chunk[0], 0xDB) << "poisoned before the reader was done";
  gate.open();
  reader.synchronize();
  EXPECT_TRUE(take_violations().empty());
  EXPECT_EQ(chunk[0], 0xDB);
  device_.deallocate_pinned(pinned);
  device_.impl().deallocate(chunk, 4096);
}

TEST_F(SimMemoryTest, FreeWithoutTheReadersEventIsCaught) {
  Stream home(device_);
  Stream reader(device_);
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  device_.impl().mark_allocated(chunk, 1024, *home.view().impl());
  Gate gate;
  gate.block(reader);
  auto* pinned = static_cast<unsigned char*>(device_.allocate_pinned(1024));
  reader.view().copy(pinned, chunk, 1024, CopyKind::device_to_host);
  device_.impl().mark_freed(chunk, 1024, *home.view().impl(), {});
  home.synchronize();
  gate.open();
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 3U);
  // When queued: the read is ordered neither after the block's allocation nor before its free.
  int races = 0;
  for (const SimViolation& v : violations) {
    if (v.kind != SimViolation::Kind::race) continue;
    ++races;
    if (v.operation == "sub-allocation free (frees)") {
      EXPECT_EQ(v.other_stream_id, reader.id());
    } else {
      EXPECT_EQ(v.other_operation, "sub-allocation (allocates)");
    }
  }
  EXPECT_EQ(races, 2);
  // When it ran: the block was dead.
  const SimViolation* dead = testing::find_violation(violations, SimViolation::Kind::use_after_free);
  ASSERT_NE(dead, nullptr);
  EXPECT_EQ(dead->stream_id, reader.id());
  device_.deallocate_pinned(pinned);
  device_.impl().deallocate(chunk, 4096);
}

TEST_F(SimMemoryTest, LentHostMemoryIsDeviceMemoryWhileRegisteredAndNeverFreedOrPoisoned) {
  std::vector<unsigned char> lent(512, 7);  // another owner's memory (a DLPack producer's)
  Stream stream(device_);
  stream.view().memset(lent.data(), 1, 64);
  EXPECT_EQ(take_violations().size(), 1U) << "unknown memory before registration";

  ASSERT_TRUE(device_.impl().register_external(lent.data(), lent.size()));
  ASSERT_TRUE(device_.impl().register_external(lent.data() + 128, 64)) << "a second borrower";
  stream.view().memset(lent.data(), 2, 512);
  device_.impl().deallocate(lent.data(), 512);  // not the device's to free
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::bad_free);
  EXPECT_EQ(lent[511], 2) << "the memset ran";

  device_.impl().unregister_external(lent.data());
  stream.view().memset(lent.data() + 128, 3, 64);
  EXPECT_TRUE(take_violations().empty()) << "the second borrower still holds its range";
  device_.impl().unregister_external(lent.data() + 128);
  stream.view().memset(lent.data(), 4, 64);
  EXPECT_EQ(take_violations().size(), 1U) << "unregistered: a violation again";
  EXPECT_EQ(lent[0], 2) << "a checked operation on dead memory does not run";
  EXPECT_EQ(lent[300], 2) << "never poisoned";

  void* own = device_.impl().allocate(256);
  EXPECT_FALSE(device_.impl().register_external(own, 256)) << "the device's own memory";
  device_.impl().deallocate(own, 256);
}

TEST_F(SimMemoryTest, APendingFreeOnTheSameStreamSatisfiesAnAllocation) {
  // CUDA's stream-ordered pool hands a free that has not run yet to a later allocation on the
  // same stream: in stream order the memory is free by then. No out-of-memory error.
  constexpr std::size_t big = 768 << 10;
  Stream stream(device_);
  Gate gate;
  gate.block(stream);  // the free below stays pending
  void* first = device_.impl().allocate_async(big, *stream.view().impl());
  device_.impl().deallocate_async(first, big, *stream.view().impl());
  void* second = device_.impl().allocate_async(big, *stream.view().impl());
  EXPECT_NE(second, nullptr);
  EXPECT_EQ(device_.memory_info().free_bytes, (std::size_t{1} << 20) - big);
  gate.open();
  stream.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, (std::size_t{1} << 20) - big)
      << "the reused free's bytes are not given back twice";
  device_.impl().deallocate_async(second, big, *stream.view().impl());
  stream.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, std::size_t{1} << 20);
}

TEST_F(SimMemoryTest, APendingFreeSatisfiesAnotherStreamOnlyOnceThatStreamWaitedForIt) {
  constexpr std::size_t big = 768 << 10;
  Stream home(device_);
  Stream other(device_);
  Gate gate;
  gate.block(home);
  void* first = device_.impl().allocate_async(big, *home.view().impl());
  device_.impl().deallocate_async(first, big, *home.view().impl());
  EXPECT_THROW((void)device_.impl().allocate_async(big, *other.view().impl()), OutOfMemoryError)
      << "nothing orders the other stream after the free";
  Event freed(device_);
  home.view().record(freed);
  other.view().wait(freed);
  void* second = device_.impl().allocate_async(big, *other.view().impl());
  EXPECT_NE(second, nullptr);
  gate.open();
  device_.impl().deallocate_async(second, big, *other.view().impl());
  device_.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, std::size_t{1} << 20);
}

TEST_F(SimMemoryTest, FreshMemoryHoldsAPatternNotZeros) {
  auto* p = static_cast<unsigned char*>(device_.impl().allocate(1000));
  std::vector<unsigned char> host(1000, 0);
  Stream stream(device_);
  stream.view().copy(host.data(), p, host.size(), CopyKind::device_to_host);
  EXPECT_EQ(std::count(host.begin(), host.end(), 0xCF), 1000);
  device_.impl().deallocate(p, 1000);
}

TEST_F(SimMemoryTest, AccessesAreCheckedAgainstTheRequestedSizeNotTheRounding) {
  Stream stream(device_);
  auto* p = static_cast<unsigned char*>(device_.impl().allocate(1000));  // 1024 held
  stream.view().memset(p, 0, 1000);
  EXPECT_TRUE(take_violations().empty());
  stream.view().memset(p, 0, 1001);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::out_of_bounds);
  // A pool's block is checked against what its user asked for, too.
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  device_.impl().mark_allocated(chunk, 1024, *stream.view().impl());
  device_.impl().mark_requested(chunk, 1000, *stream.view().impl());
  stream.view().memset(chunk, 0, 1001);
  const auto in_block = take_violations();
  ASSERT_EQ(in_block.size(), 1U);
  EXPECT_EQ(in_block[0].kind, SimViolation::Kind::out_of_bounds);
  device_.impl().mark_freed(chunk, 1024, *stream.view().impl(), {});
  device_.impl().deallocate(chunk, 4096);
  device_.impl().deallocate(p, 1000);
}

TEST_F(SimMemoryTest, AWriteToFreedMemoryIsFoundWhenItLeavesTheQuarantine) {
  Stream stream(device_);
  auto* chunk = static_cast<unsigned char*>(device_.impl().allocate(4096));
  device_.impl().mark_allocated(chunk, 1024, *stream.view().impl());
  device_.impl().mark_freed(chunk, 1024, *stream.view().impl(), {});
  // A kernel that declares nothing of the block writes through a stale pointer: no check sees
  // it when it runs.
  for_each_index(stream, 1, [stale = chunk + 100](std::size_t) { *stale = 1; }, {}, "stale");
  stream.synchronize();
  EXPECT_TRUE(take_violations().empty());
  // Reused: the block's poison is verified first.
  device_.impl().mark_allocated(chunk, 1024, *stream.view().impl());
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::freed_memory_written);
  EXPECT_EQ(violations[0].ptr, chunk + 100);
  EXPECT_EQ(violations[0].bytes, 1U);
  device_.impl().mark_freed(chunk, 1024, *stream.view().impl(), {});
  device_.impl().deallocate(chunk, 4096);
}

TEST_F(SimMemoryTest, AFreedLargeAllocationKeepsItsAddressesOutOfReuse) {
  // Larger than the whole quarantine, so its memory goes back at once; its addresses do not.
  SimOptions options;
  options.quarantine_bytes = 64 << 10;
  options.on_violation = [](const SimViolation&) {};
  const Device device = Device::sim(options);
  constexpr std::size_t size = std::size_t{2} << 20;
  Stream stream(device);
  std::vector<void*> seen;
  for (int i = 0; i < 8; ++i) {
    void* p = device.impl().allocate_async(size, *stream.view().impl());
    EXPECT_EQ(std::find(seen.begin(), seen.end(), p), seen.end()) << "address handed out again";
    seen.push_back(p);
    device.impl().deallocate_async(p, size, *stream.view().impl());
  }
  // A stale pointer into one of them is a use after free, not an access to new memory.
  stream.view().memset(seen[3], 0, 64);
  device.synchronize();
  const auto violations = device.take_violations();
  ASSERT_FALSE(violations.empty());
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
}

}  // namespace
}  // namespace gpulife
