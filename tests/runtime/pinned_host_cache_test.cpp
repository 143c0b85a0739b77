// SPDX-License-Identifier: Apache-2.0
// PinnedHostCache: page-locked blocks are reused instead of freed, never while work recorded on
// them may still read them, and giving one back makes no device call (so it may happen anywhere,
// a host function included).

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/cache/host_buffer.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;

class PinnedHostCacheTest : public testing::SimTest {
 protected:
  PinnedHostCache& cache() { return device_.pinned_host_cache(); }
};

TEST_F(PinnedHostCacheTest, ABlockGivenBackIsReusedWithoutAnotherSystemAllocation) {
  void* first = cache().allocate(10000);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(device_.impl().is_pinned(first, 10000)) << "the device knows it as pinned";
  cache().deallocate(first);
  void* second = cache().allocate(9000);  // the same size class
  EXPECT_EQ(second, first);
  const PinnedHostCacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.allocations, 2U);
  EXPECT_EQ(stats.reuses, 1U);
  EXPECT_EQ(stats.system_allocations, 1U);
  EXPECT_EQ(stats.system_frees, 0U);
  EXPECT_GE(stats.bytes_in_use, 10000U);
  cache().deallocate(second);
  EXPECT_EQ(cache().statistics().bytes_in_use, 0U);
}

TEST_F(PinnedHostCacheTest, ABlockIsNotReusedBeforeTheWorkRecordedOnItHasRun) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  void* device_memory = device_.impl().allocate(4096);
  auto* block = static_cast<std::byte*>(cache().allocate(4096));
  std::memset(block, 0x5A, 4096);
  stream.view().copy(device_memory, block, 4096, CopyKind::host_to_device);  // reads it later
  ASSERT_TRUE(cache().record_use(block + 100, stream));  // any address inside the block
  cache().deallocate(block);
  void* other = cache().allocate(4096);
  EXPECT_NE(other, block) << "reused while a queued copy still reads it";
  gate.open();
  stream.synchronize();
  cache().deallocate(other);
  void* again = cache().allocate(4096);
  void* and_again = cache().allocate(4096);
  EXPECT_TRUE(again == block || and_again == block) << "once the copy ran, the block is reused";
  std::vector<std::byte> back(4096);
  stream.view().copy(back.data(), device_memory, 4096, CopyKind::device_to_host);
  EXPECT_EQ(back[4095], std::byte{0x5A}) << "the copy read the bytes written before it";
  cache().deallocate(again);
  cache().deallocate(and_again);
  device_.impl().deallocate(device_memory, 4096);
}

TEST_F(PinnedHostCacheTest, ReleaseCachedFreesIdleBlocksOnly) {
  void* kept = cache().allocate(4096);
  void* idle = cache().allocate(1 << 20);
  cache().deallocate(idle);
  const std::size_t released = cache().release_cached();
  EXPECT_GE(released, std::size_t{1} << 20);
  const PinnedHostCacheStatistics stats = cache().statistics();
  EXPECT_EQ(stats.system_frees, 1U);
  EXPECT_EQ(stats.bytes_cached, 0U);
  EXPECT_TRUE(cache().owns(kept));
  EXPECT_FALSE(cache().owns(idle));
  cache().deallocate(kept);
}

TEST_F(PinnedHostCacheTest, GivingABlockBackInsideAHostFunctionMakesNoDeviceCall) {
  // The simulated device reports a CUDA call made inside a host function (the tear-down fails
  // on the report): a cudaFreeHost there is what CUDA forbids.
  Stream stream(device_);
  void* block = cache().allocate(4096);
  stream.view().host_callback([this, block] { cache().deallocate(block); });
  stream.synchronize();
  EXPECT_EQ(cache().statistics().bytes_in_use, 0U);
}

TEST_F(PinnedHostCacheTest, PinnedHostBuffersShareTheCache) {
  const std::vector<std::byte> bytes(50000, std::byte{7});
  const void* first = nullptr;
  {
    const HostBuffer a = HostBuffer::copy_pinned(device_, bytes);
    first = a.data();
    EXPECT_EQ(a.memory(), HostMemory::pinned);
  }
  const HostBuffer b = HostBuffer::copy_pinned(device_, bytes);
  EXPECT_EQ(b.data(), first) << "the second buffer reuses the first one's block";
  EXPECT_EQ(cache().statistics().system_allocations, 1U);
}

TEST_F(PinnedHostCacheTest, BadUseIsReported) {
  int local = 0;
  EXPECT_FALSE(cache().record_use(&local, device_.default_stream())) << "not a block of it";
  EXPECT_THROW((void)cache().record_use(&local, StreamView{}), std::invalid_argument);
  Device other = Device::sim();
  void* block = cache().allocate(16);
  EXPECT_THROW((void)cache().record_use(block, other.default_stream()), std::invalid_argument);
  cache().deallocate(block);
  cache().deallocate(block);  // a double free is reported, not fatal
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("double free"), std::string::npos) << errors[0];
}

}  // namespace
}  // namespace gpulife
