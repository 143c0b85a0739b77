// SPDX-License-Identifier: Apache-2.0
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/memory/direct_resource.hpp>

#include "support/backend_test.hpp"
#include "support/scoped_env.hpp"
#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::SimTest;

class ContextOnSim : public SimTest {
 protected:
  static SimOptions small() {
    SimOptions options;
    options.capacity_bytes = std::size_t{64} << 20;
    return options;
  }
  ContextOnSim() : SimTest(small()) {}
};

class ContextTest : public testing::BackendTest {};

TEST_P(ContextTest, DefaultsToAPoolOverTheAsyncAllocator) {
  Context ctx({.device = device_});
  EXPECT_EQ(ctx.device(), device_);
  EXPECT_EQ(ctx.resource().name(), "pool(async)");
  EXPECT_EQ(ctx.default_stream(), device_.default_stream());
}

TEST_P(ContextTest, TakesAReplacementResource) {
  auto direct = std::make_shared<DirectResource>(device_);
  Context ctx({.device = device_, .resource = direct});
  DeviceTensor t = ctx.empty({1024}, DType::u8);
  EXPECT_EQ(direct->statistics().allocations, 1U);
}

TEST_P(ContextTest, RejectsAResourceOfAnotherDevice) {
  Device other = Device::sim();
  EXPECT_THROW(Context({.device = device_, .resource = std::make_shared<DirectResource>(other)}),
               std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Backends, ContextTest, testing::backends(), testing::backend_name);

// Out-of-memory and the pressure chain on a small simulated device.
TEST_F(ContextOnSim, DestructionGivesThePoolsCachedMemoryBack) {
  {
    Context ctx({.device = device_});
    DeviceTensor t = ctx.empty({1 << 20}, DType::u8);
  }
  device_.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, device_.memory_info().total_bytes);
}

struct Spare final : MemoryPressureListener {
  explicit Spare(DeviceTensor t) : held(std::move(t)) {}
  void on_memory_pressure(std::size_t requested, const Device&) noexcept override {
    ++calls;
    last_request = requested;
    held.reset();
  }
  DeviceTensor held;
  int calls = 0;
  std::size_t last_request = 0;
};

TEST_F(ContextOnSim, MemoryPressureAsksListenersAndRetries) {
  Context ctx({.device = device_});
  auto spare = std::make_shared<Spare>(ctx.empty({std::int64_t{40} << 20}, DType::u8));
  ctx.pressure_listeners().add(spare);
  DeviceTensor wanted = ctx.empty({std::int64_t{40} << 20}, DType::u8);
  EXPECT_TRUE(wanted.defined());
  EXPECT_EQ(spare->calls, 1);
  EXPECT_EQ(spare->last_request, std::size_t{40} << 20);
}

TEST_F(ContextOnSim, OutOfMemoryPropagatesWhenNothingCanBeFreed) {
  Context ctx({.device = device_});
  DeviceTensor held = ctx.empty({std::int64_t{40} << 20}, DType::u8, {}, "held");
  auto listener = std::make_shared<Spare>(DeviceTensor{});
  ctx.pressure_listeners().add(listener);
  EXPECT_THROW((void)ctx.empty({std::int64_t{40} << 20}, DType::u8), OutOfMemoryError);
  EXPECT_EQ(listener->calls, 1);
  EXPECT_EQ(ctx.statistics().live_tensors, 1U) << "the failed tensor left nothing behind";
}

TEST(DefaultContext, IsMadeOnFirstUseAndReplaceable) {
  auto mine = std::make_shared<Context>(ContextOptions{.device = Device::sim()});
  auto previous = set_default_context(mine);
  EXPECT_EQ(default_context(), mine);
  DeviceTensor t = default_context()->empty({4}, DType::f32);
  EXPECT_EQ(t.device(), mine->device());
  set_default_context(previous);
  if (!previous) {
    set_default_context(nullptr);
    const testing::ScopedEnv env("GPULIFE_DEVICE", "sim");
    auto made = default_context();
    EXPECT_EQ(made->device().kind(), BackendKind::sim);
    set_default_context(nullptr);
  }
}

}  // namespace
}  // namespace gpulife
