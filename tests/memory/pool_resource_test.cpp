// SPDX-License-Identifier: Apache-2.0
// What only the pool does: rounding, segments, best fit, splitting and coalescing, the small and
// large pools, the no-split threshold, reuse rules across streams and their events, the release
// policy, the out-of-memory path, statistics, and thread safety under a randomised load.
// Every test runs as `.../sim` and `.../cuda` (expandable segments where the device maps memory),
// except the few on `PoolResourceSimTest`, which need what only the simulated device has and say
// why: a small capacity to run out of, exact device-wide memory figures, violation reports.

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;

std::size_t round_up_to_mib(std::size_t bytes) { return (bytes + MiB - 1) / MiB * MiB; }

/// The pool over an `AsyncResource` on the backend `backend()` names.
class PoolFixture : public testing::BackendFixture {
 protected:
  static SimOptions options() {
    SimOptions o;
    o.capacity_bytes = std::size_t{256} << 20;
    return o;
  }
  /// Segments from upstream: these tests are about the segment map, not expandable ranges.
  static PoolOptions segments(PoolOptions o = {}) {
    o.expandable_segments = false;
    return o;
  }
  PoolFixture() : BackendFixture(options()) {}
  void SetUp() override {
    BackendFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    upstream_ = std::make_shared<AsyncResource>(device_);
    pool_ = std::make_unique<PoolResource>(upstream_, segments());
  }
  void TearDown() override {
    pool_.reset();
    upstream_.reset();
    BackendFixture::TearDown();
  }
  void remake(PoolOptions o) {
    pool_.reset();
    pool_ = std::make_unique<PoolResource>(upstream_, segments(o));
  }
  /// Skips the test (the caller returns if `IsSkipped()`) unless the device maps physical
  /// memory (CUDA's virtual memory management), in chunks of `chunk` bytes if that is not 0.
  void require_vmm(std::size_t chunk = 0) {
    const std::size_t granularity = upstream_->mapping_granularity();
    if (granularity == 0) {
      GTEST_SKIP() << device_.name() << " has no virtual memory management: no expandable segments";
    }
    if (chunk != 0 && granularity != chunk) {
      GTEST_SKIP() << "the figures assume " << chunk << "-byte chunks; " << device_.name()
                   << " maps " << granularity;
    }
  }

  std::shared_ptr<AsyncResource> upstream_;
  std::unique_ptr<PoolResource> pool_;
};

/// Every test runs as `.../sim` and `.../cuda` (skipped, saying why, without a GPU).
class PoolResourceTest : public PoolFixture,
                         public ::testing::WithParamInterface<testing::Backend> {
 protected:
  [[nodiscard]] testing::Backend backend() const override { return GetParam(); }
};

/// The same fixture, on the simulated device only: each test says why.
class PoolResourceSimTest : public PoolResourceTest {};

TEST(PoolSizeClass, RoundsUpTo512Bytes) {
  EXPECT_EQ(PoolResource::size_class(1), 512U);
  EXPECT_EQ(PoolResource::size_class(512), 512U);
  EXPECT_EQ(PoolResource::size_class(513), 1024U);
  EXPECT_EQ(PoolResource::size_class(86 * MiB), 86 * MiB) << "an 86 MiB weight takes 86 MiB";
  EXPECT_EQ(PoolResource::size_class(MiB + 1), MiB + 512);
}

TEST_P(PoolResourceTest, BadOptionsAreNamed) {
  EXPECT_THROW(PoolResource(upstream_, PoolOptions{.small_size = 100}), std::invalid_argument);
  try {
    PoolResource pool(upstream_, PoolOptions{.max_split_size = 1024});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("options.max_split_size", 0), 0U) << e.what();
  }
}

TEST_P(PoolResourceTest, SameStreamReusesAFreedBlockAtOnce) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);  // the freeing stream has not even reached the free
  void* a = pool_->allocate(1000, stream);
  pool_->deallocate(a, 1000, stream);
  void* b = pool_->allocate(900, stream);
  EXPECT_EQ(a, b);
  const ResourceStatistics stats = pool_->statistics();
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.misses, 1U);
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  gate.open();
  pool_->deallocate(b, 900, stream);
}

TEST_P(PoolResourceTest, SmallRequestsShareTwoMebibyteSegmentsLargeOnesGetTheirOwn) {
  Stream stream(device_);
  void* a = pool_->allocate(1000, stream);
  void* b = pool_->allocate(MiB, stream);  // the largest small request
  void* c = pool_->allocate(3 * MiB, stream);   // large, below 10 MiB: a 20 MiB segment
  void* d = pool_->allocate(5 * MiB, stream);   // shares it
  void* e = pool_->allocate(13 * MiB + 1, stream);  // its own segment, rounded to 14 MiB
  EXPECT_EQ(static_cast<char*>(b), static_cast<char*>(a) + 1024) << "carved from one segment";
  EXPECT_EQ(static_cast<char*>(d), static_cast<char*>(c) + 3 * MiB);
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.small.segments, 1U);
  EXPECT_EQ(st.small.reserved_bytes, 2 * MiB);
  EXPECT_EQ(st.small.allocated_bytes, 1024 + MiB);
  EXPECT_EQ(st.small.requested_bytes, 1000 + MiB);
  EXPECT_EQ(st.large.segments, 2U);
  EXPECT_EQ(st.large.reserved_bytes, 20 * MiB + 14 * MiB);
  EXPECT_EQ(st.upstream_allocations, 3U);
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 36 * MiB);
  for (auto [p, n] : {std::pair{a, 1000UL}, {b, MiB}, {c, 3 * MiB}, {d, 5 * MiB},
                      {e, 13 * MiB + 1}}) {
    pool_->deallocate(p, n, stream);
  }
  EXPECT_EQ(pool_->memory_stats().total.allocated_bytes, 0U);
}

TEST_P(PoolResourceTest, FreedNeighboursCoalesceIntoOneBlock) {
  Stream stream(device_);
  std::vector<void*> parts;
  for (int i = 0; i < 4; ++i) parts.push_back(pool_->allocate(512 * KiB, stream));
  EXPECT_EQ(pool_->memory_stats().small.segments, 1U);
  // Freed out of order; the stream's quick list keeps them until a request needs more.
  for (int i : {1, 3, 2, 0}) pool_->deallocate(parts[static_cast<std::size_t>(i)], 512 * KiB, stream);
  EXPECT_EQ(pool_->validate(), "");
  void* again = pool_->allocate(512 * KiB, stream);  // an exact fit from the quick list
  EXPECT_EQ(pool_->memory_stats().merges, 0U);
  pool_->deallocate(again, 512 * KiB, stream);
  // A request no freed block fits merges them: the whole segment serves it, and split and
  // merge conserved its bytes.
  void* whole = pool_->allocate(MiB, stream);
  void* rest = pool_->allocate(MiB, stream);
  EXPECT_EQ(whole, parts[0]);
  EXPECT_EQ(rest, parts[2]);
  EXPECT_EQ(pool_->memory_stats().merges, 3U);
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  EXPECT_EQ(pool_->validate(), "");
  pool_->deallocate(whole, MiB, stream);
  pool_->deallocate(rest, MiB, stream);
}

TEST_P(PoolResourceTest, ARequestTakesTheSmallestFreeBlockThatFits) {
  Stream stream(device_);
  // Free blocks of 3, 5 and 4 MiB in one 20 MiB segment, kept apart by live blocks.
  void* b3 = pool_->allocate(3 * MiB, stream);
  void* l1 = pool_->allocate(2 * MiB, stream);
  void* b5 = pool_->allocate(5 * MiB, stream);
  void* l2 = pool_->allocate(2 * MiB, stream);
  void* b4 = pool_->allocate(4 * MiB, stream);
  void* l3 = pool_->allocate(4 * MiB, stream);  // the segment is full now
  EXPECT_EQ(pool_->memory_stats().large.segments, 1U);
  pool_->deallocate(b3, 3 * MiB, stream);
  pool_->deallocate(b5, 5 * MiB, stream);
  pool_->deallocate(b4, 4 * MiB, stream);
  void* x = pool_->allocate(3 * MiB + 5, stream);  // fits the 4 and 5 MiB blocks: takes the 4
  EXPECT_EQ(x, b4);
  void* y = pool_->allocate(2 * MiB + 1, stream);  // 3 MiB block
  EXPECT_EQ(y, b3);
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  for (auto [p, n] : {std::pair{x, 3 * MiB + 5}, {y, 2 * MiB + 1}, {l1, 2 * MiB}, {l2, 2 * MiB},
                      {l3, 4 * MiB}}) {
    pool_->deallocate(p, n, stream);
  }
}

TEST_P(PoolResourceTest, LargeBlocksAreNotSplitForRestsSmallerThanTheSmallLimit) {
  Stream stream(device_);
  void* a = pool_->allocate(4 * MiB, stream);
  pool_->deallocate(a, 4 * MiB, stream);  // merged back: one 20 MiB free block
  void* b = pool_->allocate(20 * MiB - 600 * KiB, stream);  // the rest (600 KiB) stays with it
  const auto live = pool_->live_blocks();
  ASSERT_EQ(live.size(), 1U);
  EXPECT_EQ(live[0].capacity, 20 * MiB);
  EXPECT_EQ(live[0].bytes, 20 * MiB - 600 * KiB);
  pool_->deallocate(b, 20 * MiB - 600 * KiB, stream);
}

TEST_P(PoolResourceTest, BlocksAboveTheSplitThresholdAreNeitherSplitNorLentToSmallRequests) {
  // (Growing past the high-water mark would give the free oversize segment back: kept here.)
  remake(PoolOptions{.max_split_size = 32 * MiB,
                     .oversize_slack = 8 * MiB,
                     .give_back_before_growing = false});
  Stream stream(device_);
  void* huge = pool_->allocate(64 * MiB, stream);
  pool_->deallocate(huge, 64 * MiB, stream);
  void* small = pool_->allocate(4 * MiB, stream);
  EXPECT_NE(small, huge) << "a request below the threshold took an oversize block";
  void* near = pool_->allocate(60 * MiB, stream);  // within the slack: takes it whole
  EXPECT_EQ(near, huge);
  ASSERT_EQ(pool_->live_blocks().size(), 2U);
  pool_->deallocate(near, 60 * MiB, stream);
  void* far = pool_->allocate(40 * MiB, stream);  // 24 MiB smaller than the block: beyond slack
  EXPECT_NE(far, huge);
  pool_->deallocate(far, 40 * MiB, stream);
  pool_->deallocate(small, 4 * MiB, stream);
}

TEST_P(PoolResourceTest, CompletedPolicyReusesAnotherStreamsBlockOnlyAfterItsFreeExecuted) {
  remake(PoolOptions{.cross_stream = CrossStreamReuse::completed});
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  void* first = pool_->allocate(20 * MiB, a);  // a whole segment: no rest to take instead
  pool_->deallocate(first, 20 * MiB, a);
  void* while_pending = pool_->allocate(20 * MiB, b);
  EXPECT_NE(while_pending, first) << "b took a block that a's queued work may still use";
  gate.open();
  a.synchronize();
  void* after = pool_->allocate(20 * MiB, b);
  EXPECT_EQ(after, first) << "a's free has executed: its block is b's to take";
  EXPECT_EQ(pool_->memory_stats().stream_waits, 0U);
  EXPECT_EQ(upstream_->statistics().allocations, 2U);
  pool_->deallocate(while_pending, 20 * MiB, b);
  pool_->deallocate(after, 20 * MiB, b);
}

TEST_P(PoolResourceTest, DefaultPolicyWaitsOnTheDeviceRatherThanGrow) {
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  void* first = pool_->allocate(4096, a);
  pool_->deallocate(first, 4096, a);
  const auto upstream_before = upstream_->statistics().allocations;
  void* taken = pool_->allocate(4096, b);
  EXPECT_EQ(taken, first) << "b should take a's block and wait for a on the device";
  EXPECT_EQ(upstream_->statistics().allocations, upstream_before);
  // b's work now waits for a: nothing queued on b runs before the gate opens.
  b.view().memset(taken, 7, 4096);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(b.view().query()) << "b did not wait for a's work";
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.stream_waits, 1U);
  EXPECT_EQ(st.events_recorded, 1U) << "one event closes a's batch of frees";
  gate.open();
  b.synchronize();
  pool_->deallocate(taken, 4096, b);
  EXPECT_TRUE(take_violations().empty());
}

TEST_P(PoolResourceTest, AStreamAlreadyWaitingForAnotherStreamsFreesDoesNotWaitAgain) {
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  // a uses the whole of one 20 MiB segment, then frees two blocks of it in one batch.
  void* x = pool_->allocate(2 * MiB, a);
  void* sep = pool_->allocate(2 * MiB, a);
  void* y = pool_->allocate(16 * MiB, a);
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  pool_->deallocate(x, 2 * MiB, a);
  pool_->deallocate(y, 16 * MiB, a);
  void* first = pool_->allocate(2 * MiB, b);
  void* second = pool_->allocate(2 * MiB, b);
  EXPECT_EQ(upstream_->statistics().allocations, 1U) << "both came from a's freed blocks";
  EXPECT_EQ(pool_->memory_stats().stream_waits, 1U)
      << "b's queue already waits for a's batch: the second block needs no second wait";
  // The second block is still ordered after a's work, through the first wait.
  b.view().memset(second, 7, 4096);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(b.view().query()) << "b did not wait for a's work";
  gate.open();
  b.synchronize();
  pool_->deallocate(first, 2 * MiB, b);
  pool_->deallocate(second, 2 * MiB, b);
  pool_->deallocate(sep, 2 * MiB, a);
  EXPECT_TRUE(take_violations().empty());
}

TEST_P(PoolResourceTest, OwnStreamPolicyNeverLendsABlockToAnotherStream) {
  remake(PoolOptions{.cross_stream = CrossStreamReuse::own_stream});
  Stream a(device_);
  Stream b(device_);
  void* first = pool_->allocate(4096, a);
  pool_->deallocate(first, 4096, a);
  a.synchronize();
  void* other = pool_->allocate(4096, b);
  EXPECT_NE(other, first);
  EXPECT_EQ(pool_->memory_stats().events_recorded, 0U);
  pool_->deallocate(other, 4096, b);
}

TEST_P(PoolResourceTest, WaitPolicyTakesTheBestFitOfAnyStream) {
  remake(PoolOptions{.cross_stream = CrossStreamReuse::wait});
  Stream a(device_);
  Stream b(device_);
  // a's segment: an exact 2 MiB fit, freed behind a gate; b's segment: a free 3 MiB block.
  void* exact_a = pool_->allocate(2 * MiB, a);
  void* fill_a = pool_->allocate(18 * MiB, a);
  void* big_b = pool_->allocate(3 * MiB, b);
  void* fill_b = pool_->allocate(17 * MiB, b);
  EXPECT_EQ(upstream_->statistics().allocations, 2U);
  pool_->deallocate(big_b, 3 * MiB, b);
  Gate gate;
  gate.block(a);
  pool_->deallocate(exact_a, 2 * MiB, a);
  void* got = pool_->allocate(2 * MiB, b);
  EXPECT_EQ(got, exact_a) << "the best fit was a's 2 MiB block";
  EXPECT_EQ(pool_->memory_stats().stream_waits, 1U);
  gate.open();
  pool_->deallocate(got, 2 * MiB, b);
  pool_->deallocate(fill_a, 18 * MiB, a);
  pool_->deallocate(fill_b, 17 * MiB, b);
}

TEST_P(PoolResourceTest, RecordedStreamsKeepABlockAsideUntilTheirWorkIsDone) {
  remake(PoolOptions{.cross_stream = CrossStreamReuse::completed});
  Stream a(device_);
  Stream c(device_);
  Gate gate;
  gate.block(c);
  Event used(device_);
  c.view().record(used);  // c still uses the block
  void* p = pool_->allocate(8192, a);
  std::vector<Event> after;
  after.push_back(std::move(used));
  pool_->deallocate_after(p, 8192, a, std::move(after));
  void* q = pool_->allocate(8192, a);
  EXPECT_NE(q, p) << "reused before the recorded stream's work was done";
  gate.open();
  c.synchronize();
  pool_->deallocate(q, 8192, a);
  // Once the group's events are known complete the block joins its neighbours again, and the
  // whole segment is free.
  EXPECT_EQ(pool_->trim(), 2 * MiB);
}

TEST_P(PoolResourceTest, ManyStreamsPassOneBlockAlong) {
  std::vector<Stream> streams;
  for (int i = 0; i < 16; ++i) streams.emplace_back(device_);
  void* first = nullptr;
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < streams.size(); ++i) {
      void* p = pool_->allocate(4096, streams[i]);
      if (first == nullptr) first = p;
      pool_->deallocate(p, 4096, streams[i]);
      streams[i].synchronize();
    }
  }
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  EXPECT_EQ(pool_->memory_stats().stream_waits, 0U) << "every free had executed";
}

TEST_P(PoolResourceTest, SteadyStateMakesNoUpstreamCallsAndRecordsNoEvents) {
  Stream stream(device_);
  const std::vector<std::size_t> sizes = {1000, 50000, 4096, 1 << 20, 300, 70000, 3 << 20};
  auto step = [&] {
    std::vector<void*> ptrs;
    for (std::size_t s : sizes) ptrs.push_back(pool_->allocate(s, stream));
    for (std::size_t i = 0; i < sizes.size(); ++i) pool_->deallocate(ptrs[i], sizes[i], stream);
  };
  step();
  const auto upstream_before = upstream_->statistics().allocations;
  for (int i = 0; i < 1000; ++i) step();
  EXPECT_EQ(upstream_->statistics().allocations, upstream_before);
  EXPECT_EQ(upstream_->statistics().deallocations, 0U);
  EXPECT_EQ(pool_->memory_stats().events_recorded, 0U) << "one stream needs no events";
}

TEST_P(PoolResourceTest, CachedBytesAreCappedByGivingBackWholeSegmentsLeastRecentlyUsedFirst) {
  remake(PoolOptions{.max_cached_bytes = 24 * MiB});
  Stream stream(device_);
  void* a = pool_->allocate(12 * MiB, stream);
  void* b = pool_->allocate(12 * MiB, stream);
  void* c = pool_->allocate(12 * MiB, stream);
  pool_->deallocate(a, 12 * MiB, stream);
  pool_->deallocate(b, 12 * MiB, stream);
  EXPECT_EQ(upstream_->statistics().deallocations, 0U);
  pool_->deallocate(c, 12 * MiB, stream);  // 36 MiB cached: a's segment, the oldest, goes
  EXPECT_EQ(upstream_->statistics().deallocations, 1U);
  EXPECT_EQ(pool_->statistics().bytes_cached, 24 * MiB);
  void* x = pool_->allocate(12 * MiB, stream);
  void* y = pool_->allocate(12 * MiB, stream);
  EXPECT_TRUE((x == b && y == c) || (x == c && y == b));
  pool_->deallocate(x, 12 * MiB, stream);
  pool_->deallocate(y, 12 * MiB, stream);
}

TEST_P(PoolResourceTest, SegmentsIdleForLongAreGivenBackInStreamOrder) {
  remake(PoolOptions{.release_after_allocations = 1500});
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  void* big = pool_->allocate(64 * MiB, stream);
  pool_->deallocate(big, 64 * MiB, stream);
  for (int i = 0; i < 3000; ++i) pool_->deallocate(pool_->allocate(4096, stream), 4096, stream);
  EXPECT_EQ(pool_->memory_stats().large.segments, 0U) << "the idle segment is still held";
  EXPECT_EQ(pool_->memory_stats().device_synchronizations, 0U);
  EXPECT_EQ(pool_->memory_stats().small.segments, 1U) << "the segment in use stays";
  gate.open();
  stream.synchronize();
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 2 * MiB);
}

TEST_P(PoolResourceTest, TrimGivesWholeFreeSegmentsBack) {
  Stream stream(device_);
  void* a = pool_->allocate(MiB, stream);
  void* b = pool_->allocate(4 * MiB, stream);
  void* c = pool_->allocate(4 * MiB, stream);
  pool_->deallocate(a, MiB, stream);
  pool_->deallocate(b, 4 * MiB, stream);
  EXPECT_EQ(pool_->statistics().bytes_cached, 2 * MiB + 16 * MiB);
  EXPECT_EQ(pool_->trim(), 2 * MiB) << "the large segment still holds c";
  pool_->deallocate(c, 4 * MiB, stream);
  EXPECT_EQ(pool_->trim(), 20 * MiB);
  EXPECT_EQ(pool_->statistics().bytes_cached, 0U);
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 0U) << "the segments went back upstream";
  EXPECT_EQ(upstream_->statistics().deallocations, 2U);
  EXPECT_EQ(pool_->memory_stats().device_synchronizations, 0U);
}

// Sim only: on a real device the driver's pool keeps what it is given back (and other users
// share the device), so the device's free memory says nothing about the pool.
TEST_P(PoolResourceSimTest, TrimmedSegmentsAreFreeOnTheDeviceAgain) {
  Stream stream(device_);
  const std::size_t free_before = device_.memory_info().free_bytes;
  void* a = pool_->allocate(MiB, stream);
  void* b = pool_->allocate(4 * MiB, stream);
  EXPECT_EQ(device_.memory_info().free_bytes, free_before - 22 * MiB);
  pool_->deallocate(a, MiB, stream);
  pool_->deallocate(b, 4 * MiB, stream);
  EXPECT_EQ(pool_->trim(), 22 * MiB);
  device_.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, free_before);
}

// Sim only: the 256 MiB simulated device runs out of memory at a figure the test can choose.
TEST_P(PoolResourceSimTest, OutOfMemoryGivesBackFreeSegmentsBeforeSynchronising) {
  remake(PoolOptions{.give_back_before_growing = false});  // the out-of-memory path alone
  Stream a(device_);
  Stream b(device_);
  std::vector<void*> blocks;
  for (int i = 0; i < 7; ++i) blocks.push_back(pool_->allocate(32 * MiB, a));
  void* keep = pool_->allocate(12 * MiB, a);
  for (void* p : blocks) pool_->deallocate(p, 32 * MiB, a);
  a.synchronize();
  // 224 MiB cached in 32 MiB segments, 12 MiB live: 100 MiB fits only once they go back.
  void* big = pool_->allocate(100 * MiB, b);
  EXPECT_NE(big, nullptr);
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.oom_retries, 1U);
  EXPECT_EQ(st.device_synchronizations, 0U) << "no device-wide synchronisation was needed";
  EXPECT_EQ(st.large.segments, 2U);
  pool_->deallocate(big, 100 * MiB, b);
  pool_->deallocate(keep, 12 * MiB, a);
}

TEST_P(PoolResourceTest, OutOfMemoryMessageNamesReservedButUnallocatedBytesAndTheLargestBlock) {
  Stream stream(device_);
  // Fragmentation: twelve 20 MiB segments, each with a live 8 MiB block and 12 MiB free.
  std::vector<void*> live;
  std::vector<void*> freed;
  for (int i = 0; i < 12; ++i) {
    live.push_back(pool_->allocate(8 * MiB, stream));
    freed.push_back(pool_->allocate(8 * MiB, stream));
  }
  EXPECT_EQ(pool_->memory_stats().large.segments, 12U);
  for (void* q : freed) pool_->deallocate(q, 8 * MiB, stream);
  // Twice the device's memory: out of memory on every backend, whatever else uses the device.
  const std::size_t request = round_up_to_mib(2 * device_.memory_info().total_bytes);
  try {
    (void)pool_->allocate(request, stream);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("pool(async) could not allocate "), std::string::npos) << message;
    EXPECT_NE(message.find("96.00 MiB in use, 144.00 MiB reserved but unallocated (largest "
                           "free block 12.00 MiB)"),
              std::string::npos)
        << message;
    EXPECT_EQ(e.requested_bytes(), request);
  }
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.failed_allocations, 1U);
  EXPECT_EQ(st.device_synchronizations, 1U) << "synchronised once, as the last resort";
  for (void* p : live) pool_->deallocate(p, 8 * MiB, stream);
}

TEST_P(PoolResourceTest, ExpandableSegmentsMapChunksAsTheyGrow) {
  require_vmm(2 * MiB);
  if (IsSkipped()) return;
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(upstream_);  // the default: expandable where supported
  ASSERT_TRUE(pool_->uses_expandable_segments());
  Stream stream(device_);
  void* a = pool_->allocate(3 * MiB, stream);  // maps two 2 MiB chunks
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 4 * MiB) << "the upstream counts mapped bytes";
  void* b = pool_->allocate(2 * MiB, stream);  // the free 1 MiB after a and one more chunk
  EXPECT_EQ(static_cast<char*>(b), static_cast<char*>(a) + 3 * MiB) << "the range grew in place";
  PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.large.reserved_bytes, 6 * MiB);
  EXPECT_EQ(st.map_calls, 2U);
  EXPECT_EQ(st.upstream_allocations, 0U) << "no segment came from upstream";
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 6 * MiB);
  pool_->deallocate(a, 3 * MiB, stream);
  // The free chunk under a (its users done) goes back without a synchronisation; b stays.
  stream.synchronize();
  EXPECT_EQ(pool_->trim(), 2 * MiB);
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 4 * MiB);
  st = pool_->memory_stats();
  EXPECT_EQ(st.unmap_calls, 1U);
  EXPECT_EQ(st.device_synchronizations, 0U);
  EXPECT_EQ(pool_->validate(), "");
  // Mapping again reuses the hole, and the memory is usable: written and read back in order.
  void* c = pool_->allocate(MiB, stream);  // the small pool: its own range
  void* d = pool_->allocate(2 * MiB, stream);
  EXPECT_EQ(d, a);
  stream.view().memset(d, 0x3C, 2 * MiB);
  std::vector<unsigned char> back(2 * MiB);
  stream.view().copy(back.data(), d, back.size(), CopyKind::device_to_host);
  EXPECT_EQ(back, std::vector<unsigned char>(2 * MiB, 0x3C));
  pool_->deallocate(b, 2 * MiB, stream);
  pool_->deallocate(c, MiB, stream);
  pool_->deallocate(d, 2 * MiB, stream);
  EXPECT_EQ(pool_->validate(), "");
  pool_.reset();
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 0U) << "destruction unmapped everything";
}

// Sim only: the simulated device's used memory is exactly what is mapped (a real device's
// includes other users' and the driver's), and it reports a stale access as a violation (on a
// real device that access is an illegal-address fault that ruins the context).
TEST_P(PoolResourceSimTest, ExpandableSegmentsAreTheDevicesUsedMemoryAndStaleAccessIsCaught) {
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(upstream_);
  ASSERT_TRUE(pool_->uses_expandable_segments());
  Stream stream(device_);
  auto used = [&] { return device_.memory_info().total_bytes - device_.memory_info().free_bytes; };
  void* a = pool_->allocate(3 * MiB, stream);  // maps two 2 MiB chunks
  EXPECT_EQ(used(), 4 * MiB);
  void* b = pool_->allocate(2 * MiB, stream);
  EXPECT_EQ(used(), 6 * MiB);
  pool_->deallocate(a, 3 * MiB, stream);
  stream.synchronize();
  EXPECT_EQ(pool_->trim(), 2 * MiB);
  EXPECT_EQ(used(), 4 * MiB);
  // A stale access to the unmapped memory is caught, not a crash.
  stream.view().memset(a, 0, 64);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
  pool_->deallocate(b, 2 * MiB, stream);
  pool_.reset();
  EXPECT_EQ(used(), 0U) << "destruction unmapped everything";
}

// Sim only: the 256 MiB simulated device runs out of memory at a figure the test can choose.
TEST_P(PoolResourceSimTest, ExpandableSegmentsRunOutOfMemoryGently) {
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(
      upstream_, PoolOptions{.give_back_before_growing = false});  // the out-of-memory path
  Stream a(device_);
  Stream b(device_);
  // 200 MiB mapped on a, freed; b needs 240 MiB, more than that block, in its own range: a's
  // free chunks are unmapped (their users are done) without synchronising the device.
  void* big = pool_->allocate(200 * MiB, a);
  pool_->deallocate(big, 200 * MiB, a);
  a.synchronize();
  void* other = pool_->allocate(240 * MiB, b);
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.device_synchronizations, 0U);
  EXPECT_GE(st.oom_retries, 1U);
  EXPECT_EQ(st.total.reserved_bytes, 240 * MiB);
  pool_->deallocate(other, 240 * MiB, b);
  EXPECT_EQ(pool_->validate(), "");
}

// The fuzzer's pool-trim finding: the event that was to close a stream's batch of frees failed
// to record (an injected fault) and the stream freed nothing more. The batch's blocks were then
// of unknown state for good: trim() could never unmap them, and the memory was lost to the
// device until the pool died. A later sweep must cover the batch with another event.
TEST_P(PoolResourceSimTest, AFailedEventRecordLeavesNoMemoryTrimCannotGiveBack) {
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(upstream_);  // expandable segments
  ASSERT_TRUE(pool_->uses_expandable_segments());
  Stream stream(device_);
  auto used = [&] { return device_.memory_info().total_bytes - device_.memory_info().free_bytes; };
  void* a = pool_->allocate(2 * MiB, stream);
  pool_->deallocate(a, 2 * MiB, stream);
  EXPECT_EQ(used(), 2 * MiB);
  // Every event record fails: trim learns nothing and unmaps nothing.
  device_.set_faults(SimFaults{.probability = 1.0,
                               .copies = false,
                               .memsets = false,
                               .kernels = false,
                               .stream_operations = true});
  EXPECT_EQ(pool_->trim(), 0U);
  EXPECT_GE(device_.injected_faults(), 1U);
  const auto errors = take_errors();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors[0].find("recording an event failed"), std::string::npos) << errors[0];
  device_.set_faults(SimFaults{});
  stream.synchronize();
  // The stream freed nothing since: the failed batch still gets its event, and goes back.
  EXPECT_EQ(pool_->trim(), 2 * MiB);
  EXPECT_EQ(used(), 0U);
  EXPECT_EQ(pool_->memory_stats().total.reserved_bytes, 0U);
  EXPECT_EQ(pool_->validate(), "");
}

TEST_P(PoolResourceTest, GrowingPastTheHighWaterMarkGivesBackOtherRangesFreeChunksFirst) {
  require_vmm(2 * MiB);
  if (IsSkipped()) return;
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(upstream_);
  Stream stream(device_);
  // 96 MiB of large blocks, freed: the large range keeps them mapped. Then small blocks (the
  // small pool's own range) grow past the pool's high-water mark: the large range's free
  // chunks go back first, so that the pool holds about what is in use, not the sum of both
  // ranges' peaks.
  std::vector<void*> large;
  for (int i = 0; i < 3; ++i) large.push_back(pool_->allocate(32 * MiB, stream));
  for (void* p : large) pool_->deallocate(p, 32 * MiB, stream);
  stream.synchronize();
  const std::size_t peak = pool_->memory_stats().total.peak_reserved_bytes;
  EXPECT_EQ(peak, 96 * MiB);
  std::vector<void*> small;
  for (int i = 0; i < 160; ++i) small.push_back(pool_->allocate(512 * KiB, stream));  // 80 MiB
  PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.total.peak_reserved_bytes, peak) << "the pool grew past its high-water mark";
  EXPECT_EQ(st.small.reserved_bytes, 80 * MiB);
  EXPECT_EQ(st.large.reserved_bytes, 16 * MiB) << "the large range's free chunks went back";
  EXPECT_EQ(st.oom_retries, 0U);
  EXPECT_EQ(st.device_synchronizations, 0U);
  EXPECT_EQ(pool_->validate(), "");
  for (void* p : small) pool_->deallocate(p, 512 * KiB, stream);
  // Without the option the two ranges' peaks add up.
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(upstream_,
                                         PoolOptions{.give_back_before_growing = false});
  large.clear();
  for (int i = 0; i < 3; ++i) large.push_back(pool_->allocate(32 * MiB, stream));
  for (void* p : large) pool_->deallocate(p, 32 * MiB, stream);
  stream.synchronize();
  small.clear();
  for (int i = 0; i < 160; ++i) small.push_back(pool_->allocate(512 * KiB, stream));
  EXPECT_EQ(pool_->memory_stats().total.peak_reserved_bytes, 176 * MiB);
  for (void* p : small) pool_->deallocate(p, 512 * KiB, stream);
}

// A pool reused for independent runs (the fuzzer's one workload) forgets its history when
// nothing is allocated: a run after reset_if_unused() behaves as on a new pool. The history
// here is a high-water mark, which decides whether growth gives memory back first: trim() alone
// keeps it, and the run below would keep the large range's free chunks mapped.
TEST_P(PoolResourceSimTest, AResetPoolBehavesAsANewOne) {
  pool_.reset();
  Stream stream(device_);
  Stream other(device_);
  auto used = [&] { return device_.memory_info().total_bytes - device_.memory_info().free_bytes; };
  // 16 MiB of large blocks freed, then 16 MiB of small ones: past the high-water mark of a new
  // pool, so the large range's free chunks go back first.
  auto run = [&](PoolResource& pool) {
    std::vector<void*> large;
    for (int i = 0; i < 2; ++i) large.push_back(pool.allocate(8 * MiB, stream));
    for (void* p : large) pool.deallocate(p, 8 * MiB, stream);
    stream.synchronize();
    std::vector<void*> small;
    for (int i = 0; i < 32; ++i) small.push_back(pool.allocate(512 * KiB, stream));
    const PoolStatistics st = pool.memory_stats();
    for (void* p : small) pool.deallocate(p, 512 * KiB, stream);
    stream.synchronize();
    return std::vector<std::uint64_t>{st.large.reserved_bytes,
                                      st.small.reserved_bytes,
                                      st.total.peak_reserved_bytes,
                                      st.map_calls,
                                      st.unmap_calls,
                                      st.events_recorded,
                                      st.allocations,
                                      st.streams.size()};
  };
  std::vector<std::uint64_t> alone;
  {
    PoolResource fresh(upstream_);
    ASSERT_TRUE(fresh.uses_expandable_segments());
    alone = run(fresh);
  }
  ASSERT_EQ(used(), 0U);
  EXPECT_LT(alone[0], 16 * MiB) << "the new pool gave the large range's free chunks back";

  PoolResource pool(upstream_);
  // A history: a higher peak, two streams, a cross-stream reuse.
  void* big = pool.allocate(64 * MiB, stream);
  void* held = pool.allocate(MiB, other);
  EXPECT_FALSE(pool.reset_if_unused()) << "a block is allocated";
  EXPECT_EQ(pool.memory_stats().allocations, 2U) << "a refused reset changes nothing";
  EXPECT_EQ(pool.validate(), "");
  pool.deallocate(big, 64 * MiB, stream);
  void* reused = pool.allocate(32 * MiB, other);
  pool.deallocate(reused, 32 * MiB, other);
  pool.deallocate(held, MiB, other);
  EXPECT_TRUE(pool.reset_if_unused());
  EXPECT_EQ(used(), 0U) << "every chunk unmapped";
  const PoolStatistics st = pool.memory_stats();
  EXPECT_EQ(st.allocations, 0U);
  EXPECT_EQ(st.total.peak_reserved_bytes, 0U);
  EXPECT_EQ(st.total.segments, 0U) << "the ranges were released";
  EXPECT_TRUE(st.streams.empty());
  EXPECT_EQ(pool.validate(), "");
  EXPECT_EQ(run(pool), alone);
  EXPECT_TRUE(take_violations().empty());
}

TEST_P(PoolResourceTest, GrowingPastTheHighWaterMarkKeepsMemoryOtherStreamsMayStillUse) {
  require_vmm(2 * MiB);
  if (IsSkipped()) return;
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(
      upstream_, PoolOptions{.cross_stream = CrossStreamReuse::completed});  // b cannot wait
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  void* big = pool_->allocate(64 * MiB, a);
  pool_->deallocate(big, 64 * MiB, a);  // a's queued work may still use it
  void* other = pool_->allocate(8 * MiB, b);
  // b grew its own range; a's chunks could not go back: their users have not finished.
  PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.unmap_calls, 0U);
  EXPECT_EQ(st.total.reserved_bytes, 72 * MiB);
  gate.open();
  a.synchronize();
  pool_->deallocate(other, 8 * MiB, b);
  EXPECT_EQ(pool_->validate(), "");
  EXPECT_TRUE(take_violations().empty());
}

TEST_P(PoolResourceTest, GrowingPastTheHighWaterMarkGivesBackWholeFreeSegments) {
  remake(PoolOptions{});  // segments from upstream
  Stream stream(device_);
  std::vector<void*> blocks;
  for (int i = 0; i < 4; ++i) blocks.push_back(pool_->allocate(32 * MiB, stream));
  for (void* p : blocks) pool_->deallocate(p, 32 * MiB, stream);
  stream.synchronize();
  // 160 MiB fits no 32 MiB segment: growing by 160 MiB past the 128 MiB high-water mark, the
  // pool first gives back what is free and done (all four), and peaks at 160 MiB, not 288.
  void* big = pool_->allocate(160 * MiB, stream);
  PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.total.peak_reserved_bytes, 160 * MiB);
  EXPECT_EQ(st.large.segments, 1U);
  EXPECT_EQ(st.released_segments, 4U);
  EXPECT_EQ(st.oom_retries, 0U);
  pool_->deallocate(big, 160 * MiB, stream);
  // 100 MiB splits the free 160 MiB segment; 64 MiB fits no free block, and nothing wholly
  // free is left to give back: the pool grows past its mark.
  void* a = pool_->allocate(100 * MiB, stream);
  void* b = pool_->allocate(64 * MiB, stream);
  st = pool_->memory_stats();
  EXPECT_EQ(st.released_segments, 4U);
  EXPECT_EQ(st.total.reserved_bytes, 224 * MiB);
  pool_->deallocate(a, 100 * MiB, stream);
  pool_->deallocate(b, 64 * MiB, stream);
  EXPECT_EQ(pool_->validate(), "");
}

TEST_P(PoolResourceTest, StatisticsAndSummaryDescribeFragmentation) {
  Stream stream(device_);
  void* a = pool_->allocate(4 * MiB, stream);
  void* b = pool_->allocate(6 * MiB, stream);
  pool_->deallocate(a, 4 * MiB, stream);
  const PoolStatistics st = pool_->memory_stats();
  EXPECT_EQ(st.large.reserved_bytes, 20 * MiB);
  EXPECT_EQ(st.large.allocated_bytes, 6 * MiB);
  EXPECT_EQ(st.large.cached_bytes, 14 * MiB);
  EXPECT_EQ(st.large.inactive_split_bytes, 14 * MiB);
  EXPECT_EQ(st.large.largest_free_block, 10 * MiB);
  EXPECT_EQ(st.large.peak_allocated_bytes, 10 * MiB);
  ASSERT_EQ(st.streams.size(), 1U);
  EXPECT_EQ(st.streams[0].stream_id, stream.id());
  EXPECT_EQ(st.streams[0].allocated_bytes, 6 * MiB);
  const std::string summary = pool_->memory_summary();
  EXPECT_NE(summary.find("inactive split"), std::string::npos) << summary;
  EXPECT_NE(summary.find("14.00 MiB"), std::string::npos) << summary;
  EXPECT_NE(summary.find("largest free block"), std::string::npos) << summary;
  pool_->deallocate(b, 6 * MiB, stream);
}

TEST_P(PoolResourceTest, DoubleFreeAndForeignPointerAreReportedNotFatal) {
  void* a = pool_->allocate(512);
  pool_->deallocate(a, 512);
  pool_->deallocate(a, 512);
  int not_ours = 0;
  pool_->deallocate(&not_ours, 4);
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 2U);
  EXPECT_NE(errors[0].find("double free"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("not allocated by this pool"), std::string::npos) << errors[1];
}

TEST_P(PoolResourceTest, FreeingWithTheWrongSizeIsReported) {
  void* a = pool_->allocate(40 * KiB);
  pool_->deallocate(a, 28 * KiB);
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("allocated with 40.00 KiB"), std::string::npos) << errors[0];
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U) << "freed all the same";
}

TEST_P(PoolResourceTest, LiveBlocksListsWhatIsHandedOut) {
  Stream stream(device_);
  void* a = pool_->allocate(1000, stream);
  void* b = pool_->allocate(5000, stream);
  pool_->deallocate(a, 1000, stream);
  const auto live = pool_->live_blocks();
  ASSERT_EQ(live.size(), 1U);
  EXPECT_EQ(live[0].ptr, b);
  EXPECT_EQ(live[0].bytes, 5000U);
  EXPECT_EQ(live[0].capacity, PoolResource::size_class(5000));
  EXPECT_EQ(live[0].stream_id, stream.id());
  pool_->deallocate(b, 5000, stream);
}

TEST_P(PoolResourceTest, DestroyingWithLiveBlocksReportsThem) {
  Stream a(device_);
  Stream b(device_);
  (void)pool_->allocate(1000, a);
  (void)pool_->allocate(2000, b);
  pool_.reset();
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("2 blocks"), std::string::npos) << errors[0];
  device_.synchronize();
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 0U);
}

// Two threads, four streams, thousands of operations: no two live blocks overlap, every block
// keeps the bytes its owner wrote, and the simulated device sees no violation.
void randomised_two_threads(PoolResource& pool, std::vector<Stream>& streams,
                            const Device& device) {
  std::mutex live_mutex;
  std::map<std::uintptr_t, std::size_t> live;  // begin -> bytes, across both threads
  std::atomic<int> overlaps{0};
  std::atomic<int> corrupted{0};

  auto worker = [&](unsigned seed) {
    std::mt19937_64 rng(seed);
    struct Held {
      unsigned char* ptr;
      std::size_t bytes;
      std::size_t stream;
      unsigned char tag;
    };
    std::vector<Held> held;
    for (int op = 0; op < 3000; ++op) {
      if (held.size() < 24 && (held.empty() || rng() % 2 == 0)) {
        const std::size_t bytes = (std::size_t{1} << (rng() % 22)) + rng() % 100;
        const std::size_t s = rng() % streams.size();
        auto* ptr = static_cast<unsigned char*>(pool.allocate(bytes, streams[s]));
        const auto tag = static_cast<unsigned char>(rng());
        {
          std::scoped_lock lock(live_mutex);
          const auto begin = reinterpret_cast<std::uintptr_t>(ptr);
          auto next = live.lower_bound(begin);
          if (next != live.end() && next->first < begin + bytes) ++overlaps;
          if (next != live.begin() && std::prev(next)->first + std::prev(next)->second > begin)
            ++overlaps;
          live[begin] = bytes;
        }
        streams[s].view().memset(ptr, tag, bytes);
        held.push_back({ptr, bytes, s, tag});
      } else {
        const std::size_t victim = rng() % held.size();
        Held h = held[victim];
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(victim));
        unsigned char probe[2] = {0, 0};
        streams[h.stream].view().copy(&probe[0], h.ptr, 1, CopyKind::device_to_host);
        streams[h.stream].view().copy(&probe[1], h.ptr + h.bytes - 1, 1, CopyKind::device_to_host);
        if (probe[0] != h.tag || probe[1] != h.tag) ++corrupted;
        {
          std::scoped_lock lock(live_mutex);
          live.erase(reinterpret_cast<std::uintptr_t>(h.ptr));
        }
        if (rng() % 4 == 0) {
          // Another stream reads it too (record_stream): the free waits for that read.
          const std::size_t other = (h.stream + 1) % streams.size();
          Event read(device);
          streams[other].view().wait(read);  // never recorded: a no-op, keeps the API honest
          streams[other].view().memset(h.ptr, h.tag, h.bytes);
          streams[other].view().record(read);
          std::vector<Event> after;
          after.push_back(std::move(read));
          pool.deallocate_after(h.ptr, h.bytes, streams[h.stream], std::move(after));
        } else {
          pool.deallocate(h.ptr, h.bytes, streams[h.stream]);
        }
      }
    }
    for (const Held& h : held) {
      {
        std::scoped_lock lock(live_mutex);
        live.erase(reinterpret_cast<std::uintptr_t>(h.ptr));
      }
      pool.deallocate(h.ptr, h.bytes, streams[h.stream]);
    }
  };
  std::thread t1(worker, 1U);
  std::thread t2(worker, 2U);
  t1.join();
  t2.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(corrupted.load(), 0);
  const ResourceStatistics stats = pool.statistics();
  EXPECT_EQ(stats.bytes_in_use, 0U);
  EXPECT_EQ(stats.allocations, stats.deallocations);
  EXPECT_GT(stats.hits, stats.misses) << "the pool should mostly reuse";
  EXPECT_EQ(pool.validate(), "");
}

/// Parametrised over the cross-stream policy and the backend.
class PoolPolicyTest
    : public PoolFixture,
      public ::testing::WithParamInterface<std::tuple<CrossStreamReuse, testing::Backend>> {
 protected:
  [[nodiscard]] testing::Backend backend() const override { return std::get<1>(GetParam()); }
  [[nodiscard]] CrossStreamReuse policy() const { return std::get<0>(GetParam()); }
};

TEST_P(PoolPolicyTest, RandomisedTwoThreadsNeverHandOutOverlappingBlocks) {
  remake(PoolOptions{.cross_stream = policy()});
  std::vector<Stream> streams;
  for (int i = 0; i < 4; ++i) streams.emplace_back(device_);
  randomised_two_threads(*pool_, streams, device_);
}

TEST_P(PoolPolicyTest, RandomisedTwoThreadsWithExpandableSegments) {
  require_vmm();
  if (IsSkipped()) return;
  pool_.reset();
  pool_ = std::make_unique<PoolResource>(
      upstream_, PoolOptions{.release_after_allocations = 500, .cross_stream = policy()});
  ASSERT_TRUE(pool_->uses_expandable_segments());
  std::vector<Stream> streams;
  for (int i = 0; i < 4; ++i) streams.emplace_back(device_);
  randomised_two_threads(*pool_, streams, device_);
  pool_->trim();
  device_.synchronize();
  const std::size_t reserved = pool_->memory_stats().total.reserved_bytes;
  EXPECT_EQ(reserved, upstream_->statistics().bytes_in_use)
      << "the pool's mapped chunks are what its upstream counts in use";
  if (on_sim()) {  // sim only: a real device's used memory includes other users' and the driver's
    const MemoryInfo memory = device_.memory_info();
    EXPECT_EQ(reserved, memory.total_bytes - memory.free_bytes)
        << "the pool's mapped chunks are the device's used memory";
  }
}

std::string policy_name(CrossStreamReuse policy) {
  switch (policy) {
    case CrossStreamReuse::completed: return "completed";
    case CrossStreamReuse::wait_before_growing: return "wait_before_growing";
    case CrossStreamReuse::wait: return "wait";
    case CrossStreamReuse::own_stream: return "own_stream";
  }
  return "unknown";
}

INSTANTIATE_TEST_SUITE_P(
    Policies, PoolPolicyTest,
    ::testing::Combine(::testing::Values(CrossStreamReuse::completed,
                                         CrossStreamReuse::wait_before_growing,
                                         CrossStreamReuse::wait, CrossStreamReuse::own_stream),
                       testing::backends()),
    [](const ::testing::TestParamInfo<std::tuple<CrossStreamReuse, testing::Backend>>& param) {
      return policy_name(std::get<0>(param.param)) + "_" +
             (std::get<1>(param.param) == testing::Backend::sim ? "sim" : "cuda");
    });

INSTANTIATE_TEST_SUITE_P(Backends, PoolResourceTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Sim, PoolResourceSimTest, ::testing::Values(testing::Backend::sim),
                         testing::backend_name);

}  // namespace
}  // namespace gpulife
