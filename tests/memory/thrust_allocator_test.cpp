// SPDX-License-Identifier: Apache-2.0
// ThrustAllocator: memory comes from the resource on the allocator's stream and goes back to it.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>

#include <gtest/gtest.h>

#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/memory/thrust_allocator.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class ThrustAllocatorTest : public testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    pool_ = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device_));
    stream_ = Stream(device_);
  }
  void TearDown() override {
    pool_.reset();
    stream_ = Stream{};
    BackendTest::TearDown();
  }

  std::shared_ptr<PoolResource> pool_;
  Stream stream_;
};

TEST_P(ThrustAllocatorTest, AllocatesFromTheResourceOnItsStream) {
  ThrustAllocator<std::uint32_t> allocator(*pool_, stream_);
  std::uint32_t* ptr = allocator.allocate(100);
  ASSERT_NE(ptr, nullptr);
  EXPECT_EQ(pool_->statistics().bytes_in_use, PoolResource::size_class(400));
  ASSERT_EQ(pool_->live_blocks().size(), 1U);
  EXPECT_EQ(pool_->live_blocks()[0].stream_id, stream_.id());
  stream_.view().memset(ptr, 0, 400);  // usable in the stream's order
  allocator.deallocate(ptr, 100);
  const ResourceStatistics stats = pool_->statistics();
  EXPECT_EQ(stats.bytes_in_use, 0U);
  EXPECT_EQ(stats.allocations, 1U);
  EXPECT_EQ(stats.deallocations, 1U);
}

TEST_P(ThrustAllocatorTest, RebindsAndCompares) {
  const ThrustAllocator<std::byte> bytes(*pool_, stream_);
  const ThrustAllocator<double> doubles(bytes);
  EXPECT_EQ(&doubles.resource(), pool_.get());
  EXPECT_EQ(doubles.stream(), stream_.view());
  EXPECT_TRUE(ThrustAllocator<std::byte>(doubles) == bytes);
  EXPECT_FALSE(ThrustAllocator<std::byte>(*pool_, device_.default_stream()) == bytes);
  PoolResource other(std::make_shared<AsyncResource>(device_));
  EXPECT_FALSE(ThrustAllocator<std::byte>(other, stream_) == bytes);
}

TEST_P(ThrustAllocatorTest, RejectsBadArguments) {
  EXPECT_THROW(ThrustAllocator<int>(*pool_, StreamView{}), std::invalid_argument);
  Device other = Device::sim();
  Stream foreign(other);
  EXPECT_THROW(ThrustAllocator<int>(*pool_, foreign), std::invalid_argument);
  ThrustAllocator<std::uint64_t> allocator(*pool_, stream_);
  EXPECT_THROW((void)allocator.allocate(std::size_t{1} << 62), std::bad_array_new_length);
  EXPECT_EQ(allocator.allocate(0), nullptr);
  allocator.deallocate(nullptr, 0);
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U);
}

INSTANTIATE_TEST_SUITE_P(Backends, ThrustAllocatorTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
