// SPDX-License-Identifier: Apache-2.0
// Thrust algorithms with gpulife's host policy on the simulated device: right results, and every
// temporary buffer comes from the resource and goes back to it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <thrust/execution_policy.h>
#include <thrust/reduce.h>
#include <thrust/sort.h>

#include <gpulife/kernels/thrust_policy.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

class ThrustPolicyTest : public testing::SimTest {
 protected:
  explicit ThrustPolicyTest(SimOptions options = {})
      : SimTest(std::move(options)),
        pool_(std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device_))),
        stream_(device_) {}
  void TearDown() override {
    pool_.reset();
    SimTest::TearDown();
  }

  /// Device memory from the pool holding `values`, ready for a host algorithm.
  template <class T>
  T* upload(const std::vector<T>& values) {
    auto* data = static_cast<T*>(pool_->allocate(values.size() * sizeof(T), stream_));
    stream_.view().copy(data, values.data(), values.size() * sizeof(T), CopyKind::host_to_device);
    stream_.synchronize();  // the host policy runs on this thread, not in stream order
    return data;
  }
  template <class T>
  std::vector<T> download(const T* data, std::size_t n) {
    std::vector<T> values(n);
    stream_.view().copy(values.data(), data, n * sizeof(T), CopyKind::device_to_host);
    return values;
  }

  std::shared_ptr<PoolResource> pool_;
  Stream stream_;
};

TEST_F(ThrustPolicyTest, SortTakesItsTemporariesFromThePool) {
  constexpr std::size_t n = 100000;
  std::mt19937_64 rng(11);
  std::vector<std::uint32_t> values(n);
  for (auto& v : values) v = static_cast<std::uint32_t>(rng());
  std::uint32_t* data = upload(values);
  const ResourceStatistics before = pool_->statistics();

  thrust::sort(thrust_host_policy(*pool_, stream_), data, data + n);

  const ResourceStatistics after = pool_->statistics();
  EXPECT_GT(after.allocations, before.allocations) << "the sort took no temporaries from the pool";
  EXPECT_EQ(after.deallocations - before.deallocations, after.allocations - before.allocations);
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);  // every temporary went back
  EXPECT_GT(after.peak_bytes_in_use, before.bytes_in_use);
  std::sort(values.begin(), values.end());
  EXPECT_EQ(download(data, n), values);
  pool_->deallocate(data, n * sizeof(std::uint32_t), stream_);
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U);
}

TEST_F(ThrustPolicyTest, RepeatedAlgorithmsReuseTheCachedTemporaries) {
  constexpr std::size_t n = 20000;
  std::vector<std::int64_t> keys(n);
  std::vector<std::int64_t> payload(n);
  std::mt19937_64 rng(12);
  for (std::size_t i = 0; i < n; ++i) {
    keys[i] = static_cast<std::int64_t>(rng() % 1000);
    payload[i] = static_cast<std::int64_t>(i);
  }
  std::int64_t* dkeys = upload(keys);
  std::int64_t* dpayload = upload(payload);
  const auto bucket_less = [](std::int64_t a, std::int64_t b) { return a / 10 < b / 10; };
  // A stable merge sort by key, twice: the second run's temporaries are pool hits, handed to
  // this thread only once the stream has passed the first run's frees.
  for (int run = 0; run < 2; ++run) {
    thrust::stable_sort_by_key(thrust_host_policy(*pool_, stream_), dkeys, dkeys + n, dpayload,
                               bucket_less);
  }
  EXPECT_GT(pool_->statistics().hits, 0U);

  // the reference: the same stable sort on the host
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return bucket_less(keys[a], keys[b]); });
  const auto sorted_keys = download(dkeys, n);
  const auto sorted_payload = download(dpayload, n);
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_EQ(sorted_keys[i], keys[order[i]]) << i;
    ASSERT_EQ(sorted_payload[i], payload[order[i]]) << i;
  }

  // reduce_by_key over the buckets: one sum per bucket of ten keys
  std::int64_t* dbuckets = upload(std::vector<std::int64_t>(n));
  std::int64_t* dsums = upload(std::vector<std::int64_t>(n));
  const auto ends = thrust::reduce_by_key(
      thrust_host_policy(*pool_, stream_), dkeys, dkeys + n, dpayload, dbuckets, dsums,
      [](std::int64_t a, std::int64_t b) { return a / 10 == b / 10; });
  const auto groups = static_cast<std::size_t>(ends.second - dsums);
  std::vector<std::int64_t> expected(100, 0);
  for (std::size_t i = 0; i < n; ++i)
    expected[static_cast<std::size_t>(keys[i] / 10)] += payload[i];
  ASSERT_EQ(groups, expected.size());
  const auto sums = download(dsums, groups);
  EXPECT_EQ(sums, expected);

  for (std::int64_t* ptr : {dkeys, dpayload, dbuckets, dsums}) {
    pool_->deallocate(ptr, n * sizeof(std::int64_t), stream_);
  }
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U);
}

// With the stream worker delayed, the poisoning of a freed temporary lands late. A pool block
// freed by one sort is reused by the next on the same stream at once; the host policy must not
// hand it to the calling thread before the stream has passed that poisoning.
class DelayedThrustPolicyTest : public ThrustPolicyTest {
 protected:
  DelayedThrustPolicyTest() : ThrustPolicyTest(testing::delayed_options(21)) {}
};

TEST_F(DelayedThrustPolicyTest, BackToBackSortsSeeNoStalePoison) {
  constexpr std::size_t n = 50000;
  std::mt19937_64 rng(13);
  const auto random_values = [&] {
    std::vector<std::uint32_t> values(n);
    for (auto& v : values) v = static_cast<std::uint32_t>(rng());
    return values;
  };
  for (int round = 0; round < 20; ++round) {
    auto first = random_values();
    auto second = random_values();
    std::uint32_t* a = upload(first);
    std::uint32_t* b = upload(second);
    thrust::sort(thrust_host_policy(*pool_, stream_), a, a + n);
    thrust::sort(thrust_host_policy(*pool_, stream_), b, b + n);
    std::sort(first.begin(), first.end());
    std::sort(second.begin(), second.end());
    ASSERT_EQ(download(a, n), first) << "round " << round;
    ASSERT_EQ(download(b, n), second) << "round " << round;
    pool_->deallocate(a, n * sizeof(std::uint32_t), stream_);
    pool_->deallocate(b, n * sizeof(std::uint32_t), stream_);
  }
  EXPECT_GT(pool_->statistics().hits, 0U);
}

TEST_F(ThrustPolicyTest, RejectsAnEmptyStream) {
  EXPECT_THROW((void)thrust_host_policy(*pool_, StreamView{}), std::invalid_argument);
}

}  // namespace
}  // namespace gpulife
