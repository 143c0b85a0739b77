// SPDX-License-Identifier: Apache-2.0
// Finalizers: Python's weakref.finalize carried to device memory.

#include <atomic>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/tensor/weak_tensor.hpp>
#include <gpulife/weak/weak_key_map.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class FinalizerTest : public testing::BackendContextTest {};

TEST_P(FinalizerTest, RunsOnceWhenTheMemoryIsReleased) {
  int runs = 0;
  TensorInfo seen;
  DeviceTensor t = ctx().empty({16}, DType::f32, {}, "x");
  const void* data = t.data();
  const std::uint64_t id = t.id();
  Finalizer f = t.on_release([&](const TensorInfo& info) {
    ++runs;
    seen = info;
  });
  EXPECT_TRUE(f.alive());
  DeviceTensor copy = t;
  t.reset();
  EXPECT_EQ(runs, 0);
  copy.reset();
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(f.alive());
  EXPECT_EQ(seen.data, data);
  EXPECT_EQ(seen.bytes, 64U);
  EXPECT_EQ(seen.id, id);
  EXPECT_EQ(seen.tag, "x");
  EXPECT_EQ(seen.dtype, DType::f32);
  EXPECT_EQ(seen.shape, Shape({16}));
  EXPECT_FALSE(f.detach()) << "a finalizer that ran is no longer pending";
}

TEST_P(FinalizerTest, SeveralRunNewestFirst) {
  std::vector<int> order;
  {
    DeviceTensor t = ctx().empty({1}, DType::f32);
    for (int i = 0; i < 5; ++i) (void)t.on_release([&order, i](const TensorInfo&) { order.push_back(i); });
  }
  EXPECT_EQ(order, (std::vector<int>{4, 3, 2, 1, 0}));
}

TEST_P(FinalizerTest, DetachCancelsAndPeekDescribesWhileAlive) {
  int runs = 0;
  DeviceTensor t = ctx().empty({3}, DType::i32, {}, "peeked");
  Finalizer f = t.on_release([&](const TensorInfo&) { ++runs; });
  const auto info = f.peek();
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->tag, "peeked");
  EXPECT_EQ(info->id, t.id());
  EXPECT_TRUE(f.detach());
  EXPECT_FALSE(f.detach());
  EXPECT_FALSE(f.alive());
  EXPECT_FALSE(f.peek().has_value());
  t.reset();
  EXPECT_EQ(runs, 0);
}

TEST_P(FinalizerTest, DroppingTheHandleDoesNotCancel) {
  int runs = 0;
  DeviceTensor t = ctx().empty({3}, DType::i32);
  (void)t.on_release([&](const TensorInfo&) { ++runs; });
  t.reset();
  EXPECT_EQ(runs, 1);
}

TEST_P(FinalizerTest, RunsOnTheThreadThatDropsTheLastReference) {
  std::thread::id ran_on;
  DeviceTensor t = ctx().empty({3}, DType::i32);
  (void)t.on_release([&](const TensorInfo&) { ran_on = std::this_thread::get_id(); });
  std::thread dropper([moved = std::move(t)]() mutable { moved.reset(); });
  const std::thread::id dropper_id = dropper.get_id();
  dropper.join();
  EXPECT_EQ(ran_on, dropper_id);
}

TEST_P(FinalizerTest, MayCreateAndDropTensorsAndRegisterMoreFinalizers) {
  int inner_runs = 0;
  DeviceTensor survivor;
  {
    DeviceTensor other = ctx().empty({8}, DType::f32);
    DeviceTensor t = ctx().empty({8}, DType::f32);
    (void)t.on_release([&, other](const TensorInfo&) mutable {
      // No gpulife lock is held here: everything below would deadlock otherwise.
      survivor = ctx().empty({4}, DType::f32);
      (void)survivor.on_release([&](const TensorInfo&) { ++inner_runs; });
      other.reset();  // drops the last reference of another tensor: its release runs here
      (void)ctx().statistics();
    });
  }
  EXPECT_TRUE(survivor.defined());
  EXPECT_EQ(ctx().statistics().live_tensors, 1U);
  survivor.reset();
  EXPECT_EQ(inner_runs, 1);
}

TEST_P(FinalizerTest, ExceptionIsReportedAndTheOthersAndTheReleaseStillHappen) {
  int runs = 0;
  {
    DeviceTensor t = ctx().empty({8}, DType::f32, {}, "faulty");
    (void)t.on_release([&](const TensorInfo&) { ++runs; });
    (void)t.on_release([](const TensorInfo&) { throw std::runtime_error("finalizer failed"); });
    (void)t.on_release([&](const TensorInfo&) { ++runs; });
  }
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_EQ(ctx().statistics().resource.bytes_in_use, 0U);
  EXPECT_EQ(ctx().statistics().finalizer_errors, 1U);
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("'faulty' threw: finalizer failed"), std::string::npos) << errors[0];
}

TEST_P(FinalizerTest, OnAViewItWaitsForTheMemory) {
  int runs = 0;
  DeviceTensor t = ctx().empty({4, 4}, DType::f32);
  DeviceTensor row = t.slice(0, 0, 1);
  (void)row.on_release([&](const TensorInfo& info) {
    ++runs;
    EXPECT_EQ(info.bytes, 64U) << "the finalizer describes the memory";
  });
  row.reset();
  EXPECT_EQ(runs, 0) << "the memory is still owned by t";
  t.reset();
  EXPECT_EQ(runs, 1);
}

TEST_P(FinalizerTest, ContextShutdownRunsPendingFinalizersOfLiveTensors) {
  std::vector<std::string> ran;
  DeviceTensor outlives = ctx().empty({16}, DType::f32, {}, "outlives");
  DeviceTensor also = ctx().empty({16}, DType::f32, {}, "also");
  (void)outlives.on_release([&](const TensorInfo& i) { ran.push_back(i.tag + " first"); });
  (void)also.on_release([&](const TensorInfo& i) { ran.push_back(i.tag); });
  Finalizer skipped = outlives.on_release([&](const TensorInfo& i) { ran.push_back(i.tag + " no"); });
  skipped.set_atexit(false);
  ctx_.reset();
  EXPECT_EQ(ran, (std::vector<std::string>{"also", "outlives first"})) << "newest first";
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("destroyed with 2 tensors still alive"), std::string::npos) << errors[0];
  // The tensors stay valid after their context, and still release normally.
  EXPECT_EQ(outlives.to_host<float>().size(), 16U);
  outlives.reset();
  EXPECT_EQ(ran.size(), 3U) << "the atexit=false finalizer runs at the real release";
  also.reset();
  EXPECT_EQ(ran.size(), 3U) << "a finalizer runs once";
}

TEST_P(FinalizerTest, FinalizerThatCapturesItsTensorRunsAtShutdownAndEndsTheCycle) {
  int runs = 0;
  WeakTensor weak;
  {
    DeviceTensor t = ctx().empty({16}, DType::f32, {}, "cycle");
    weak = t;
    (void)t.on_release([&runs, t](const TensorInfo&) { ++runs; });  // captures its own tensor
  }
  EXPECT_FALSE(weak.expired()) << "the captured handle pins the tensor";
  ctx_.reset();
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(weak.expired()) << "running the finalizer released its captured handle";
  (void)take_errors();
}

// finalizers_run counts the program's finalizers, those that threw too (they ran), and nothing
// else: not expiry callbacks (counted apart), not the cache's or WeakKeyMap's bookkeeping, not
// the release function of a wrapped tensor.
TEST_P(FinalizerTest, StatisticsCountTheProgramsFinalizersAndExpiryCallbacksApart) {
  const std::uint64_t finalizers_before = ctx().statistics().finalizers_run;
  WeakTensor watched;  // outlives the tensor, so that its callback runs
  {
    DeviceTensor t = ctx().empty({8}, DType::f32, {}, "counted");
    (void)t.on_release([](const TensorInfo&) {});
    (void)t.on_release([](const TensorInfo&) { throw std::runtime_error("it ran all the same"); });
    watched = WeakTensor(t, [](const TensorInfo&) {});
    WeakKeyMap<int> map;
    map.insert_or_assign(t, 1);  // an internal expiry callback
    const std::vector<float> host(16, 1.0F);
    DeviceTensor cached = ctx().cache().upload(std::span<const float>(host), {16});  // another
    std::vector<float> external(4);
    DeviceTensor wrapped = ctx().wrap(
        external.data(), {4}, {}, DType::f32, {}, [](const TensorInfo&) {}, "wrapped");
  }
  const ContextStatistics stats = ctx().statistics();
  EXPECT_EQ(stats.finalizers_run - finalizers_before, 2U) << "both finalizers, the thrower too";
  EXPECT_EQ(stats.expiry_callbacks_run, 1U) << "the weak reference's, not the containers'";
  EXPECT_EQ(stats.finalizer_errors, 1U);
  (void)take_errors();
}

TEST_P(FinalizerTest, AtShutdownCountsEachFinalizerThatRan) {
  DeviceTensor a = ctx().empty({4}, DType::f32, {}, "a");
  DeviceTensor b = ctx().empty({4}, DType::f32, {}, "b");
  // Registered first, so it runs last (newest first): the three others ran before it.
  std::uint64_t seen = 0;
  Context* raw = &ctx();
  (void)a.on_release([&seen, raw](const TensorInfo&) { seen = raw->statistics().finalizers_run; });
  (void)b.on_release([](const TensorInfo&) {});
  (void)b.on_release([](const TensorInfo&) { throw std::runtime_error("boom"); });
  (void)a.on_release([](const TensorInfo&) {});
  WeakTensor watched(a, [](const TensorInfo&) {});  // runs at the real release, not at shutdown
  ctx_.reset();
  EXPECT_EQ(seen, 3U) << "the three newer finalizers, the thrower included";
  (void)take_errors();
}

// Python's weakref.finalize exit handler runs finalizers registered while it runs (by another
// finalizer), newest first; so does a context's shutdown.
TEST_P(FinalizerTest, AFinalizerRegisteredDuringShutdownRunsInThatShutdown) {
  std::vector<std::string> ran;
  DeviceTensor early = ctx().empty({4}, DType::f32, {}, "early");
  DeviceTensor late = ctx().empty({4}, DType::f32, {}, "late");
  (void)early.on_release([&](const TensorInfo& i) { ran.push_back(i.tag); });
  (void)late.on_release([&](const TensorInfo& i) {
    ran.push_back(i.tag);
    // registered during shutdown, on another live tensor, and newer than early's
    (void)early.on_release(
        [&](const TensorInfo& j) { ran.push_back(j.tag + " (registered late)"); });
  });
  ctx_.reset();
  EXPECT_EQ(ran, (std::vector<std::string>{"late", "early (registered late)", "early"}));
  early.reset();
  late.reset();
  EXPECT_EQ(ran.size(), 3U) << "each ran once";
  (void)take_errors();
}

INSTANTIATE_TEST_SUITE_P(Backends, FinalizerTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
