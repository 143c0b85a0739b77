// SPDX-License-Identifier: Apache-2.0
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/weak/weak_set.hpp>

namespace gpulife {
namespace {

struct Listener {
  int calls = 0;
};

TEST(WeakSet, NotifiesLiveMembersAndPrunesDeadOnes) {
  WeakSet<Listener> set;
  auto a = std::make_shared<Listener>();
  auto b = std::make_shared<Listener>();
  set.add(a);
  set.add(b);
  set.add(a);  // already there
  EXPECT_EQ(set.size(), 2U);
  EXPECT_EQ(set.notify([](Listener& l) { ++l.calls; }), 2U);
  b.reset();
  EXPECT_EQ(set.size(), 1U);
  EXPECT_EQ(set.notify([](Listener& l) { ++l.calls; }), 1U);
  EXPECT_EQ(a->calls, 2);
  EXPECT_TRUE(set.remove(a));
  EXPECT_FALSE(set.remove(a));
  EXPECT_EQ(set.notify([](Listener& l) { ++l.calls; }), 0U);
  EXPECT_THROW(set.add(nullptr), std::invalid_argument);
}

TEST(WeakSet, DoesNotKeepMembersAlive) {
  WeakSet<Listener> set;
  auto a = std::make_shared<Listener>();
  set.add(a);
  EXPECT_EQ(a.use_count(), 1);
}

TEST(WeakSet, AListenerMayChangeTheSetWhileNotified) {
  WeakSet<Listener> set;
  auto a = std::make_shared<Listener>();
  auto b = std::make_shared<Listener>();
  set.add(a);
  set.notify([&](Listener&) {
    set.add(b);
    set.remove(a);
  });
  EXPECT_EQ(set.size(), 1U);
}

TEST(WeakSet, ConcurrentAddsNotifiesAndDeaths) {
  WeakSet<Listener> set;
  std::atomic<int> notified{0};
  auto worker = [&] {
    for (int i = 0; i < 2000; ++i) {
      auto l = std::make_shared<Listener>();
      set.add(l);
      set.notify([&](Listener&) { ++notified; });
    }
  };
  std::thread t1(worker);
  std::thread t2(worker);
  t1.join();
  t2.join();
  EXPECT_EQ(set.size(), 0U);
  EXPECT_GE(notified.load(), 4000);
}

}  // namespace
}  // namespace gpulife
