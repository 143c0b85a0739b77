// SPDX-License-Identifier: Apache-2.0
#include <malloc.h>

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/weak/weak_key_map.hpp>

#include "support/backend_test.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {
namespace {

class WeakKeyMapTest : public testing::BackendContextTest {};

TEST_P(WeakKeyMapTest, ValuesDieWithTheirTensor) {
  WeakKeyMap<std::string> notes;
  DeviceTensor a = ctx().empty({4}, DType::f32);
  DeviceTensor b = ctx().empty({4}, DType::f32);
  EXPECT_TRUE(notes.insert_or_assign(a, "a"));
  EXPECT_TRUE(notes.insert_or_assign(b, "b"));
  EXPECT_FALSE(notes.insert_or_assign(a, "a2"));
  EXPECT_EQ(notes.get(a), "a2");
  EXPECT_EQ(notes.size(), 2U);
  a.reset();
  EXPECT_EQ(notes.size(), 1U);
  EXPECT_TRUE(notes.contains(b));
  EXPECT_FALSE(notes.get(a).has_value());
}

TEST_P(WeakKeyMapTest, DoesNotKeepItsKeysAlive) {
  WeakKeyMap<int> map;
  DeviceTensor t = ctx().empty({4}, DType::f32);
  map.insert_or_assign(t, 1);
  EXPECT_EQ(t.use_count(), 1);
}

TEST_P(WeakKeyMapTest, ViewsAreKeysOfTheirOwn) {
  WeakKeyMap<int> map;
  DeviceTensor t = ctx().empty({4, 4}, DType::f32);
  DeviceTensor row = t.slice(0, 0, 1);
  map.insert_or_assign(t, 1);
  map.insert_or_assign(row, 2);
  row.reset();
  EXPECT_EQ(map.size(), 1U);
  EXPECT_EQ(map.get(t), 1);
}

TEST_P(WeakKeyMapTest, EraseCancelsTheExpiryCallback) {
  WeakKeyMap<int> map;
  DeviceTensor t = ctx().empty({4}, DType::f32);
  // Many set/erase cycles on one long-lived tensor must not pile up callbacks.
  for (int i = 0; i < 10000; ++i) {
    map.insert_or_assign(t, i);
    EXPECT_TRUE(map.erase(t));
  }
  EXPECT_FALSE(map.erase(t));
  EXPECT_EQ(map.size(), 0U);
  ASSERT_NE(detail::TensorAccess::impl(t)->callbacks, nullptr);
  EXPECT_LE(detail::TensorAccess::impl(t)->callbacks->size(), 16U);
}

TEST_P(WeakKeyMapTest, MapDestroyedBeforeItsKeysIsFine) {
  DeviceTensor t = ctx().empty({4}, DType::f32);
  {
    WeakKeyMap<std::string> map;
    map.insert_or_assign(t, "gone with the map");
  }
  t.reset();
}

TEST_P(WeakKeyMapTest, AMillionTensorsLeaveNoEntriesAndNoMemoryBehind) {
  WeakKeyMap<std::uint64_t> map;
  // Tensors without device memory keep the test about the map, not the pool.
  auto cycle = [&](int count) {
    for (int i = 0; i < count; ++i) {
      DeviceTensor t = ctx().empty({0}, DType::f32);
      map.insert_or_assign(t, t.id());
    }
  };
  cycle(10000);  // warm up slabs and buckets
  malloc_trim(0);
  const std::size_t heap_before = mallinfo2().uordblks;
  cycle(1000000);
  malloc_trim(0);
  const std::size_t heap_after = mallinfo2().uordblks;
  EXPECT_EQ(map.size(), 0U);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_LT(heap_after, heap_before + (std::size_t{1} << 20))
      << "heap grew from " << heap_before << " to " << heap_after;
}

TEST_P(WeakKeyMapTest, ConcurrentInsertsLookupsAndDeaths) {
  WeakKeyMap<int> map;
  auto worker = [&](int seed) {
    std::vector<DeviceTensor> held;
    for (int i = 0; i < 5000; ++i) {
      DeviceTensor t = ctx().empty({0}, DType::f32);
      map.insert_or_assign(t, seed);
      if (map.get(t) != seed) ADD_FAILURE() << "lost an entry of a live key";
      held.push_back(std::move(t));
      if (held.size() > 16) held.erase(held.begin());
    }
  };
  std::thread t1(worker, 1);
  std::thread t2(worker, 2);
  t1.join();
  t2.join();
  EXPECT_EQ(map.size(), 0U);
}

INSTANTIATE_TEST_SUITE_P(Backends, WeakKeyMapTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
