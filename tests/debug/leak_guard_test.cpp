// SPDX-License-Identifier: Apache-2.0
// The GoogleTest helpers of gpulife::testing: LeakGuard and LeakCheckedTest.

#include <string>
#include <vector>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/testing/leak_guard.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

using testing::BackendContextTest;

ContextOptions leak_mode() {
  ContextOptions options;
  options.debug.leaks = true;
  options.debug.use_environment = false;
  return options;
}

class LeakGuardTest : public BackendContextTest {
 protected:
  LeakGuardTest() : BackendContextTest({}, leak_mode()) {}
};

TEST_P(LeakGuardTest, PassesWhenTheScopeDropsWhatItMade) {
  gpulife::testing::LeakGuard guard(ctx());
  DeviceTensor t = ctx().empty({16}, DType::f32, {}, "scratch");
  DeviceTensor v = t.view({4, 4});
  t.reset();
  v.reset();
  const LeakReport report = guard.check();
  EXPECT_TRUE(report.tracking);
  EXPECT_TRUE(report.tensors.empty());
}

TEST_P(LeakGuardTest, FailsNamingTheTensorThatSurvived) {
  DeviceTensor survivor;
  EXPECT_NONFATAL_FAILURE(
      {
        gpulife::testing::LeakGuard guard(ctx());
        DeviceTensor scratch = ctx().empty({8}, DType::u8, {}, "scratch");
        survivor = ctx().empty({16}, DType::f32, {}, "survivor");
      },
      "1 tensor made in this scope is still alive");
  EXPECT_NONFATAL_FAILURE(
      {
        gpulife::testing::LeakGuard guard(ctx());
        survivor = ctx().empty({16}, DType::f32, {}, "survivor");
      },
      "'survivor' f32 [16]");
  survivor.reset();
}

TEST_P(LeakGuardTest, IgnoresTensorsMadeBeforeIt) {
  DeviceTensor before = ctx().empty({16}, DType::u8, {}, "before");
  {
    gpulife::testing::LeakGuard guard(ctx());
    DeviceTensor inside = ctx().empty({16}, DType::u8, {}, "inside");
  }
  before.reset();
}

TEST_P(LeakGuardTest, IgnoresPinnedCacheEntries) {
  const std::vector<std::uint8_t> table(16, 7);
  {
    gpulife::testing::LeakGuard guard(ctx());
    (void)ctx().cache().upload(std::span<const std::uint8_t>(table), {16}, {},
                               {.retention = Retention::pinned, .tag = "pinned"});
  }  // the guard passes: the cache pins the entry, no user handle is left
  ctx().cache().clear();
}

TEST_P(LeakGuardTest, DismissStopsTheCheck) {
  DeviceTensor kept;
  {
    gpulife::testing::LeakGuard guard(ctx());
    kept = ctx().empty({16}, DType::u8);
    guard.dismiss();
  }
  kept.reset();
}

class LeakGuardWithoutLeakMode : public BackendContextTest {
 protected:
  LeakGuardWithoutLeakMode() : BackendContextTest({}, {.debug = {.use_environment = false}}) {}
};

TEST_P(LeakGuardWithoutLeakMode, FailsRatherThanPassWithoutLooking) {
  EXPECT_NONFATAL_FAILURE({ gpulife::testing::LeakGuard guard(ctx()); },
                          "the context is not in leak mode");
}

// LeakCheckedTest makes its context in its constructor, where a test cannot skip: without a CUDA
// device the cuda variant makes it on a simulated device and skips in SetUp, saying why.
class LeakCheckedFixture : public gpulife::testing::LeakCheckedTest,
                           public ::testing::WithParamInterface<testing::Backend> {
 protected:
  LeakCheckedFixture() : LeakCheckedTest({.device = device_for(GetParam())}) {}
  static Device device_for(testing::Backend backend) {
    if (backend == testing::Backend::cuda && Device::probe_cuda().available) return Device::cuda(0);
    return Device::sim();
  }
  void SetUp() override {
    if (GetParam() == testing::Backend::cuda) {
      const CudaProbe probe = Device::probe_cuda();
#if defined(GPULIFE_DEVICE_REQUIRED)
      ASSERT_TRUE(probe.available) << "GPULIFE_DEVICE_REQUIRED: no CUDA device: " << probe.reason;
#else
      if (!probe.available) GTEST_SKIP() << "no CUDA device: " << probe.reason;
#endif
    }
    LeakCheckedTest::SetUp();
  }
};

TEST_P(LeakCheckedFixture, GivesAContextInLeakMode) {
  EXPECT_TRUE(ctx().debug_options().leaks);
  DeviceTensor t = ctx().empty({4}, DType::u8);
  EXPECT_EQ(ctx().leak_report().tensors.size(), 1U);
}

TEST_P(LeakCheckedFixture, FailsAtTearDownWhenATensorSurvives) {
  DeviceTensor survivor = ctx().empty({4}, DType::u8, {}, "fixture-survivor");
  EXPECT_NONFATAL_FAILURE(TearDown(), "'fixture-survivor'");
  survivor.reset();  // the second TearDown, gtest's own, has nothing left to check
}

INSTANTIATE_TEST_SUITE_P(Backends, LeakGuardTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, LeakGuardWithoutLeakMode, testing::backends(),
                         testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, LeakCheckedFixture, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
