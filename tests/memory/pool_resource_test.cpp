// SPDX-License-Identifier: Apache-2.0
// What only the pool does: size classes, reuse rules per stream, caching limits, trimming,
// retry on out-of-memory, and thread safety under a randomised load.

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;

class PoolResourceTest : public testing::SimTest {
 protected:
  static SimOptions options() {
    SimOptions o;
    o.capacity_bytes = std::size_t{256} << 20;
    return o;
  }
  PoolResourceTest()
      : SimTest(options()),
        upstream_(std::make_shared<AsyncResource>(device_)),
        pool_(std::make_unique<PoolResource>(upstream_)) {}
  void TearDown() override {
    pool_.reset();
    SimTest::TearDown();
  }

  std::shared_ptr<AsyncResource> upstream_;
  std::unique_ptr<PoolResource> pool_;
};

TEST(PoolSizeClass, RoundsToAt256BytesThenFourClassesPerPowerOfTwo) {
  EXPECT_EQ(PoolResource::size_class(1), 256U);
  EXPECT_EQ(PoolResource::size_class(256), 256U);
  EXPECT_EQ(PoolResource::size_class(257), 512U);
  EXPECT_EQ(PoolResource::size_class(1024), 1024U);
  EXPECT_EQ(PoolResource::size_class(1025), 1280U);
  EXPECT_EQ(PoolResource::size_class(2048), 2048U);
  EXPECT_EQ(PoolResource::size_class(2049), 2560U);
  EXPECT_EQ(PoolResource::size_class((1U << 20) + 1), (1U << 20) + (1U << 18));
  // at most 25 % waste, always a multiple of 256, never smaller than the request
  std::mt19937_64 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const std::size_t bytes = rng() % (std::size_t{1} << 34) + 1;
    const std::size_t size = PoolResource::size_class(bytes);
    ASSERT_GE(size, bytes);
    ASSERT_EQ(size % 256, 0U);
    ASSERT_LE(size - bytes, std::max<std::size_t>(bytes / 4, 255)) << bytes;
  }
}

TEST_F(PoolResourceTest, SameStreamReusesAFreedBlockAtOnce) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);  // the freeing stream has not even reached the free
  void* a = pool_->allocate(1000, stream);
  pool_->deallocate(a, 1000, stream);
  void* b = pool_->allocate(900, stream);  // same class
  EXPECT_EQ(a, b);
  const ResourceStatistics stats = pool_->statistics();
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.misses, 1U);
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  gate.open();
  pool_->deallocate(b, 900, stream);
}

TEST_F(PoolResourceTest, ARequestTakesACachedBlockOfASlightlyLargerClass) {
  Stream stream(device_);
  // The classes from 28 KiB up are 28, 32, 40, 48, 56 KiB: 48 KiB is three classes above, the
  // default allowance.
  EXPECT_EQ(pool_->largest_block_for(28 << 10), std::size_t{48} << 10);
  void* large = pool_->allocate(48 << 10, stream);
  pool_->deallocate(large, 48 << 10, stream);
  void* small = pool_->allocate(28 << 10, stream);
  EXPECT_EQ(small, large) << "went upstream while a block three classes up was cached";
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  EXPECT_EQ(pool_->statistics().bytes_in_use, std::size_t{48} << 10) << "the block's own size";
  const auto live = pool_->live_blocks();
  ASSERT_EQ(live.size(), 1U);
  EXPECT_EQ(live[0].bytes, std::size_t{28} << 10);
  EXPECT_EQ(live[0].capacity, std::size_t{48} << 10);
  pool_->deallocate(small, 28 << 10, stream);  // freed with the size it was asked for
  EXPECT_TRUE(take_errors().empty());
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U);
  // Back in its own class: a request of that class gets it again.
  EXPECT_EQ(pool_->allocate(48 << 10, stream), large);
  pool_->deallocate(large, 48 << 10, stream);
}

TEST_F(PoolResourceTest, ABlockBeyondTheAllowanceOrAnExactFitElsewhereIsNotTaken) {
  Stream stream(device_);
  void* far = pool_->allocate(56 << 10, stream);  // four classes above 28 KiB
  void* near = pool_->allocate(32 << 10, stream);
  void* exact = pool_->allocate(28 << 10, stream);
  pool_->deallocate(far, 56 << 10, stream);
  pool_->deallocate(near, 32 << 10, stream);
  pool_->deallocate(exact, 28 << 10, stream);
  EXPECT_EQ(pool_->allocate(28 << 10, stream), exact) << "its own class comes first";
  EXPECT_EQ(pool_->allocate(28 << 10, stream), near) << "then the nearest larger class";
  void* fresh = pool_->allocate(28 << 10, stream);
  EXPECT_NE(fresh, far) << "56 KiB is beyond three classes";
  EXPECT_EQ(upstream_->statistics().allocations, 4U);
  pool_->deallocate(exact, 28 << 10, stream);
  pool_->deallocate(near, 28 << 10, stream);
  pool_->deallocate(fresh, 28 << 10, stream);
  EXPECT_TRUE(take_errors().empty());
}

TEST_F(PoolResourceTest, WithoutLargerClassesEveryRequestUsesItsOwnClass) {
  pool_ = std::make_unique<PoolResource>(upstream_, PoolOptions{.larger_classes = 0});
  Stream stream(device_);
  EXPECT_EQ(pool_->largest_block_for(28 << 10), std::size_t{28} << 10);
  void* large = pool_->allocate(32 << 10, stream);
  pool_->deallocate(large, 32 << 10, stream);
  void* small = pool_->allocate(28 << 10, stream);
  EXPECT_NE(small, large);
  pool_->deallocate(small, 28 << 10, stream);
}

TEST_F(PoolResourceTest, FreeingALentBlockWithTheWrongSizeIsReported) {
  Stream stream(device_);
  void* large = pool_->allocate(40 << 10, stream);
  pool_->deallocate(large, 40 << 10, stream);
  void* small = pool_->allocate(28 << 10, stream);
  ASSERT_EQ(small, large);
  pool_->deallocate(small, 40 << 10, stream);  // the block's size, not the request's
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("allocated in size class 28.00 KiB"), std::string::npos) << errors[0];
}

TEST_F(PoolResourceTest, ManyStreamsPassOneBlockAlong) {
  // Each stream takes the block its predecessor freed (that free has executed) and frees it
  // itself: every stream's first free in the class adds a free list there and drops the lists
  // that streams before it left empty.
  std::vector<Stream> streams;
  for (int i = 0; i < 16; ++i) streams.emplace_back(device_);
  void* first = nullptr;
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < streams.size(); ++i) {
      void* p = pool_->allocate(4096, streams[i]);
      if (first == nullptr) first = p;
      EXPECT_EQ(p, first) << "round " << round << ", stream " << i;
      pool_->deallocate(p, 4096, streams[i]);
      streams[i].synchronize();
    }
  }
  EXPECT_EQ(upstream_->statistics().allocations, 1U);
  EXPECT_EQ(pool_->statistics().hits, 3 * streams.size() - 1);
}

TEST_F(PoolResourceTest, OtherStreamReusesOnlyAfterTheFreeHasExecuted) {
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  void* first = pool_->allocate(4096, a);
  pool_->deallocate(first, 4096, a);
  void* while_pending = pool_->allocate(4096, b);
  EXPECT_NE(while_pending, first) << "b took a block that a's queued work may still use";
  gate.open();
  a.synchronize();
  void* after_event = pool_->allocate(4096, b);
  EXPECT_EQ(after_event, first);
  pool_->deallocate(while_pending, 4096, b);
  pool_->deallocate(after_event, 4096, b);
}

TEST_F(PoolResourceTest, SteadyStateMakesNoUpstreamCalls) {
  Stream stream(device_);
  const std::vector<std::size_t> sizes = {1000, 50000, 4096, 1 << 20, 300, 70000};
  for (int warm = 0; warm < 2; ++warm) {
    std::vector<void*> ptrs;
    for (std::size_t s : sizes) ptrs.push_back(pool_->allocate(s, stream));
    for (std::size_t i = 0; i < sizes.size(); ++i) pool_->deallocate(ptrs[i], sizes[i], stream);
  }
  const auto upstream_before = upstream_->statistics().allocations;
  for (int step = 0; step < 100; ++step) {
    std::vector<void*> ptrs;
    for (std::size_t s : sizes) ptrs.push_back(pool_->allocate(s, stream));
    for (std::size_t i = 0; i < sizes.size(); ++i) pool_->deallocate(ptrs[i], sizes[i], stream);
  }
  EXPECT_EQ(upstream_->statistics().allocations, upstream_before);
  EXPECT_EQ(pool_->statistics().hits, 100U * sizes.size() + sizes.size());
}

TEST_F(PoolResourceTest, CachedBytesAreCappedLeastRecentlyFreedFirst) {
  pool_ = std::make_unique<PoolResource>(upstream_, PoolOptions{.max_cached_bytes = 8192});
  Stream stream(device_);
  void* a = pool_->allocate(4096, stream);
  void* b = pool_->allocate(4096, stream);
  void* c = pool_->allocate(4096, stream);
  pool_->deallocate(a, 4096, stream);
  pool_->deallocate(b, 4096, stream);
  pool_->deallocate(c, 4096, stream);  // a is the oldest: it goes
  EXPECT_EQ(pool_->statistics().bytes_cached, 8192U);
  EXPECT_EQ(pool_->statistics().upstream_deallocations, 1U);
  EXPECT_EQ(upstream_->statistics().deallocations, 1U);
  void* x = pool_->allocate(4096, stream);
  void* y = pool_->allocate(4096, stream);
  EXPECT_TRUE((x == b && y == c) || (x == c && y == b));
  pool_->deallocate(x, 4096, stream);
  pool_->deallocate(y, 4096, stream);
}

TEST_F(PoolResourceTest, TrimGivesCachedMemoryBack) {
  Stream stream(device_);
  const std::size_t free_before = device_.memory_info().free_bytes;
  void* a = pool_->allocate(1 << 20, stream);
  pool_->deallocate(a, 1 << 20, stream);
  EXPECT_EQ(pool_->statistics().bytes_cached, std::size_t{1} << 20);
  EXPECT_EQ(pool_->trim(), std::size_t{1} << 20);
  EXPECT_EQ(pool_->statistics().bytes_cached, 0U);
  device_.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, free_before);
}

TEST_F(PoolResourceTest, OutOfMemoryReleasesCachedBlocksAndRetries) {
  Stream a(device_);
  Stream b(device_);
  // Fill the device with cached blocks freed on stream a.
  std::vector<void*> blocks;
  for (int i = 0; i < 7; ++i) blocks.push_back(pool_->allocate(std::size_t{32} << 20, a));
  for (void* p : blocks) pool_->deallocate(p, std::size_t{32} << 20, a);
  // A different size class on another stream cannot reuse them; the pool must trim and retry.
  void* big = pool_->allocate(std::size_t{100} << 20, b);
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(pool_->statistics().bytes_cached, 0U);
  pool_->deallocate(big, std::size_t{100} << 20, b);
}

TEST_F(PoolResourceTest, OutOfMemoryAfterRetryNamesWhatIsInUse) {
  void* held = pool_->allocate(std::size_t{200} << 20);
  try {
    (void)pool_->allocate(std::size_t{100} << 20);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("pool(async) could not allocate 100.00 MiB"), std::string::npos)
        << message;
    EXPECT_NE(message.find("in use"), std::string::npos) << message;
    EXPECT_EQ(e.requested_bytes(), std::size_t{100} << 20);
  }
  pool_->deallocate(held, std::size_t{200} << 20);
}

TEST_F(PoolResourceTest, DoubleFreeAndForeignPointerAreReportedNotFatal) {
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

TEST_F(PoolResourceTest, LiveBlocksListsWhatIsHandedOut) {
  Stream stream(device_);
  void* a = pool_->allocate(1000, stream);
  void* b = pool_->allocate(5000, stream);
  pool_->deallocate(a, 1000, stream);
  const auto live = pool_->live_blocks();
  ASSERT_EQ(live.size(), 1U);
  EXPECT_EQ(live[0].ptr, b);
  EXPECT_EQ(live[0].bytes, PoolResource::size_class(5000));
  EXPECT_EQ(live[0].stream_id, stream.id());
  pool_->deallocate(b, 5000, stream);
}

TEST_F(PoolResourceTest, DestroyingWithLiveBlocksReportsThem) {
  (void)pool_->allocate(1000);
  pool_.reset();
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("1 blocks"), std::string::npos) << errors[0];
}

// Two threads, four streams, thousands of operations: no two live blocks overlap, every block
// keeps the bytes its owner wrote, and the simulated device sees no violation.
TEST_F(PoolResourceTest, RandomisedTwoThreadsNeverHandOutOverlappingBlocks) {
  std::vector<Stream> streams;
  for (int i = 0; i < 4; ++i) streams.emplace_back(device_);
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
        const std::size_t bytes = (std::size_t{1} << (rng() % 16)) + rng() % 100;
        const std::size_t s = rng() % streams.size();
        auto* ptr = static_cast<unsigned char*>(pool_->allocate(bytes, streams[s]));
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
        pool_->deallocate(h.ptr, h.bytes, streams[h.stream]);
      }
    }
    for (const Held& h : held) {
      {
        std::scoped_lock lock(live_mutex);
        live.erase(reinterpret_cast<std::uintptr_t>(h.ptr));
      }
      pool_->deallocate(h.ptr, h.bytes, streams[h.stream]);
    }
  };
  std::thread t1(worker, 1U);
  std::thread t2(worker, 2U);
  t1.join();
  t2.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(corrupted.load(), 0);
  const ResourceStatistics stats = pool_->statistics();
  EXPECT_EQ(stats.bytes_in_use, 0U);
  EXPECT_EQ(stats.allocations, stats.deallocations);
  EXPECT_GT(stats.hits, stats.misses) << "the pool should mostly reuse";
}

}  // namespace
}  // namespace gpulife
