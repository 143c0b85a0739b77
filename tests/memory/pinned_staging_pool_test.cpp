// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;

std::vector<std::byte> bytes_of(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xFF);
  return v;
}

class PinnedStagingPoolTest : public testing::BackendTest {
 protected:
  PinnedStagingPoolTest() : BackendTest(testing::delayed_options(5)) {}
};

TEST_P(PinnedStagingPoolTest, UploadLargerThanTheRingArrivesIntact) {
  PinnedStagingPool staging(device_, {.buffer_bytes = 64 << 10, .buffers = 2});
  Stream stream(device_);
  const auto src = bytes_of((64 << 10) * 10 + 123, 1);
  void* dst = device_.impl().allocate(src.size());
  staging.upload(dst, src, stream);
  std::vector<std::byte> back(src.size());
  stream.view().copy(back.data(), dst, back.size(), CopyKind::device_to_host);
  EXPECT_EQ(back, src);
  device_.impl().deallocate(dst, src.size());
}

TEST_P(PinnedStagingPoolTest, SourceMayBeReusedWhenUploadReturns) {
  PinnedStagingPool staging(device_, {.buffer_bytes = 1 << 20, .buffers = 2});
  Stream stream(device_);
  Gate gate;
  gate.block(stream);  // no copy can run before upload returns
  auto src = bytes_of(1 << 20, 2);
  const auto expected = src;
  void* dst = device_.impl().allocate(src.size());
  staging.upload(dst, src, stream);
  std::fill(src.begin(), src.end(), std::byte{0});
  gate.open();
  std::vector<std::byte> back(src.size());
  stream.view().copy(back.data(), dst, back.size(), CopyKind::device_to_host);
  EXPECT_EQ(back, expected);
  device_.impl().deallocate(dst, src.size());
}

TEST_P(PinnedStagingPoolTest, AnUploaderDoesNotWaitForItsOwnPreviousCopyWhileABufferIsFree) {
  // The ring hands out the buffer released longest ago: an uploader whose previous chunk is
  // still in flight takes another buffer and copies into it while that DMA runs (a last-in
  // first-out pool would hand it the busy buffer again and wait).
  constexpr std::size_t chunk = 64 << 10;
  PinnedStagingPool staging(device_, {.buffer_bytes = chunk, .buffers = 2});
  Stream stream(device_);
  const auto first = bytes_of(chunk, 11);
  const auto second = bytes_of(chunk, 12);
  const auto third = bytes_of(chunk, 13);
  void* dst = device_.impl().allocate(3 * chunk);
  auto* out = static_cast<std::byte*>(dst);
  staging.upload(out, second, stream);  // takes both buffers once, so both have a recorded copy
  staging.upload(out, second, stream);
  stream.synchronize();
  Gate gate;
  gate.block(stream);  // from here no copy executes until the gate opens
  staging.upload(out, first, stream);
  auto overlapped = std::async(std::launch::async, [&] { staging.upload(out + chunk, second, stream); });
  const bool returned = overlapped.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "the second upload waited for the first one's copy although a "
                           "buffer was free";
  // Both buffers are in flight now: the next chunk must wait for the oldest copy.
  auto paced = std::async(std::launch::async, [&] { staging.upload(out + 2 * chunk, third, stream); });
  EXPECT_EQ(paced.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
      << "a buffer was overwritten while its copy had not executed";
  gate.open();
  overlapped.get();
  paced.get();
  std::vector<std::byte> back(3 * chunk);
  stream.view().copy(back.data(), dst, back.size(), CopyKind::device_to_host);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), back.begin()));
  EXPECT_TRUE(std::equal(second.begin(), second.end(), back.begin() + chunk));
  EXPECT_TRUE(std::equal(third.begin(), third.end(), back.begin() + 2 * chunk));
  device_.impl().deallocate(dst, 3 * chunk);
}

TEST_P(PinnedStagingPoolTest, BuffersComeFromThePinnedHostCacheAndGoBackToIt) {
  const PinnedHostCacheStatistics before = device_.pinned_host_cache().statistics();
  {
    PinnedStagingPool staging(device_, {.buffer_bytes = 4096, .buffers = 3});
    Stream stream(device_);
    const auto src = bytes_of(3 * 4096, 4);
    void* dst = device_.impl().allocate(src.size());
    staging.upload(dst, src, stream);
    EXPECT_EQ(device_.pinned_host_cache().statistics().bytes_in_use,
              before.bytes_in_use + 3 * 4096);
    stream.synchronize();
    device_.impl().deallocate(dst, src.size());
  }
  const PinnedHostCacheStatistics after = device_.pinned_host_cache().statistics();
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
  EXPECT_EQ(after.system_frees, before.system_frees) << "cached for the next user, not freed";
  PinnedStagingPool next(device_, {.buffer_bytes = 4096, .buffers = 3});
  const auto src = bytes_of(3 * 4096, 5);
  void* dst = device_.impl().allocate(src.size());
  next.upload(dst, src, device_.default_stream());
  EXPECT_EQ(device_.pinned_host_cache().statistics().system_allocations,
            after.system_allocations)
      << "a second staging pool reuses the first one's buffers";
  device_.synchronize();
  device_.impl().deallocate(dst, src.size());
}

TEST_P(PinnedStagingPoolTest, ConcurrentUploadsShareTheRing) {
  PinnedStagingPool staging(device_, {.buffer_bytes = 16 << 10, .buffers = 3});
  std::atomic<int> wrong{0};
  auto worker = [&](unsigned seed) {
    Stream stream(device_);
    for (int i = 0; i < 20; ++i) {
      const auto src = bytes_of((16 << 10) * 5 + seed, seed + static_cast<unsigned>(i));
      void* dst = device_.impl().allocate(src.size());
      staging.upload(dst, src, stream);
      std::vector<std::byte> back(src.size());
      stream.view().copy(back.data(), dst, back.size(), CopyKind::device_to_host);
      if (back != src) ++wrong;
      device_.impl().deallocate(dst, src.size());
    }
  };
  std::thread a(worker, 1U);
  std::thread b(worker, 2U);
  a.join();
  b.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_P(PinnedStagingPoolTest, BadArgumentsAreRejected) {
  EXPECT_THROW(PinnedStagingPool(Device{}), std::invalid_argument);
  EXPECT_THROW(PinnedStagingPool(device_, {.buffer_bytes = 0}), std::invalid_argument);
  EXPECT_THROW(PinnedStagingPool(device_, {.buffers = 0}), std::invalid_argument);
  PinnedStagingPool staging(device_);
  const auto src = bytes_of(16, 3);
  EXPECT_THROW(staging.upload(nullptr, src, device_.default_stream()), std::invalid_argument);
  EXPECT_THROW(staging.upload(reinterpret_cast<void*>(256), src, StreamView{}),
               std::invalid_argument);
  Device other = Device::sim();
  EXPECT_THROW(staging.upload(reinterpret_cast<void*>(256), src, other.default_stream()),
               std::invalid_argument);
}

class StagedTensorUploadTest : public testing::BackendContextTest {
 protected:
  StagedTensorUploadTest()
      : BackendContextTest(testing::delayed_options(9),
                           ContextOptions{.staging = {.buffer_bytes = 4096, .buffers = 2},
                                          .staging_min_bytes = 1}) {}
};

TEST_P(StagedTensorUploadTest, ContextAndCacheUploadsGoThroughStaging) {
  std::vector<float> host(10000);
  std::iota(host.begin(), host.end(), 0.0F);
  Stream stream(device_);
  DeviceTensor a = ctx().upload(std::span<const float>(host), {10000}, stream);
  DeviceTensor b = ctx().cache().upload(std::span<const float>(host), {100, 100}, stream);
  EXPECT_EQ(a.to_host<float>(), host);
  EXPECT_EQ(b.to_host<float>(), host);
}

INSTANTIATE_TEST_SUITE_P(Backends, PinnedStagingPoolTest, testing::backends(),
                         testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, StagedTensorUploadTest, testing::backends(),
                         testing::backend_name);

}  // namespace
}  // namespace gpulife
