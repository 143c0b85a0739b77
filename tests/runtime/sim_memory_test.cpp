// SPDX-License-Identifier: Apache-2.0
// Memory of the simulated device: capacity, out-of-memory, bad frees, and the sub-allocation
// marks through which a pool tells the device which of its blocks are live.

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>

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
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
  EXPECT_EQ(violations[0].stream_id, reader.id());
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

}  // namespace
}  // namespace gpulife
