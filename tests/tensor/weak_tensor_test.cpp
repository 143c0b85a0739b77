// SPDX-License-Identifier: Apache-2.0
// WeakTensor: Python's weakref.ref (and proxy) for device tensors.

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class WeakTensorTest : public testing::BackendContextTest {};

/// Busy-waits about `n` iterations without the compiler removing the loop.
void spin(unsigned n) {
  std::atomic<unsigned> counter{0};
  while (counter.fetch_add(1, std::memory_order_relaxed) < n) {
  }
}

TEST_P(WeakTensorTest, LockGivesAStrongHandleWhileAliveAndNothingAfter) {
  DeviceTensor t = ctx().empty({8}, DType::f32);
  WeakTensor weak = t;
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(weak.id(), t.id());
  {
    DeviceTensor again = weak.lock();
    EXPECT_EQ(again, t);
    EXPECT_EQ(t.use_count(), 2);
  }
  EXPECT_EQ(t.use_count(), 1) << "a weak reference does not count";
  t.reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_FALSE(weak.lock().defined());
  EXPECT_NE(weak.id(), 0U) << "the id stays known after expiry";
}

TEST_P(WeakTensorTest, GetThrowsExpiredTensorErrorLikeADeadProxy) {
  DeviceTensor t = ctx().empty({8}, DType::f32);
  WeakTensor weak = t;
  EXPECT_EQ(weak.get(), t);
  t.reset();
  EXPECT_THROW((void)weak.get(), ExpiredTensorError);
  EXPECT_THROW((void)WeakTensor{}.get(), ExpiredTensorError);
  EXPECT_TRUE(WeakTensor{}.expired());
}

TEST_P(WeakTensorTest, ExpiryCallbackRunsOnceWhenTheTensorDies) {
  int runs = 0;
  std::uint64_t seen_id = 0;
  DeviceTensor t = ctx().empty({8}, DType::f32);
  WeakTensor weak(t, [&](const TensorInfo& info) {
    ++runs;
    seen_id = info.id;
  });
  WeakTensor copy = weak;
  const std::uint64_t id = t.id();
  t.reset();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(seen_id, id);
}

TEST_P(WeakTensorTest, ExpiryCallbackIsCancelledWhenTheWeakReferenceGoesFirst) {
  int runs = 0;
  DeviceTensor t = ctx().empty({8}, DType::f32);
  {
    WeakTensor weak(t, [&](const TensorInfo&) { ++runs; });
    WeakTensor copy = weak;
  }
  t.reset();
  EXPECT_EQ(runs, 0);
}

TEST_P(WeakTensorTest, BadArgumentsAreRejected) {
  EXPECT_THROW(WeakTensor(DeviceTensor{}, [](const TensorInfo&) {}), std::invalid_argument);
  DeviceTensor t = ctx().empty({1}, DType::f32);
  EXPECT_THROW(WeakTensor(t, FinalizerFunction{}), std::invalid_argument);
}

// A lock racing with the last drop gets a live handle or an empty one, never freed memory.
// Run under ThreadSanitizer by the tsan preset.
TEST_P(WeakTensorTest, LockRacingWithTheLastDropNeverSeesFreedMemory) {
  constexpr int rounds = 3000;
  int locked = 0;
  int missed = 0;
  int bad = 0;
  WeakTensor weak;
  std::vector<std::int32_t> expected;
  std::barrier sync(2);
  // The locker and the dropper meet at a barrier each round, then each waits a random few
  // spins, so that the lock lands before, during and after the release. Which of them leaves the
  // barrier first depends on the machine's load (and on the device's mode: stream threads or the
  // seeded scheduler), so the rounds steer a bias: after the lock won, the drop comes earlier or
  // the lock later; after the drop won, the other way. Both outcomes keep happening.
  bool last_locked = false;  // written by the locker before the round's second barrier
  int bias = 10000;          // > 0: the dropper waits up to 2 * bias spins; < 0: the locker does
  std::thread locker([&] {
    std::mt19937 rng(1);
    for (int round = 0; round < rounds; ++round) {
      sync.arrive_and_wait();
      const unsigned extra =
          bias < 0 ? static_cast<unsigned>(rng() % (2 * static_cast<unsigned>(-bias) + 1)) : 0;
      spin(static_cast<unsigned>(rng() % 2000) + extra);
      if (DeviceTensor got = weak.lock()) {
        // Holding the handle, the memory must be live and hold this round's bytes.
        if (got.to_host<std::int32_t>() != expected) ++bad;
        ++locked;
        last_locked = true;
      } else {
        ++missed;
        last_locked = false;
      }
      sync.arrive_and_wait();
    }
  });
  std::mt19937 rng(2);
  for (int round = 0; round < rounds; ++round) {
    expected.assign(64, round);
    DeviceTensor t = ctx().upload(std::span<const std::int32_t>(expected), {64});
    t.stream().synchronize();
    weak = t;
    sync.arrive_and_wait();
    if (bias > 0) spin(static_cast<unsigned>(rng() % (2 * static_cast<unsigned>(bias) + 1)));
    t.reset();
    sync.arrive_and_wait();
    // The side that lost waits less (by a quarter), the side that won waits more (twice as
    // long), and the bias crosses zero when one side is already as early as it can be.
    const int quarter = std::max(1, std::abs(bias) / 4);
    if (last_locked) {
      bias = bias > 0 ? bias - quarter : std::max(2 * bias - 1, -(1 << 20));
    } else {
      bias = bias < 0 ? bias + quarter : std::min(2 * bias + 1, 1 << 26);
    }
  }
  locker.join();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(locked + missed, rounds);
  std::printf("lock won %d times, lost %d times\n", locked, missed);
  EXPECT_GT(locked, 0) << "the race never let the lock win: the test proves nothing";
  EXPECT_GT(missed, 0) << "the race never let the drop win: the test proves nothing";
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

INSTANTIATE_TEST_SUITE_P(Backends, WeakTensorTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
