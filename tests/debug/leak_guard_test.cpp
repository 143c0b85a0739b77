// SPDX-License-Identifier: Apache-2.0
// The GoogleTest helpers of gpulife::testing: LeakGuard and LeakCheckedTest.

#include <string>
#include <vector>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/testing/leak_guard.hpp>

#include "support/context_test.hpp"

namespace gpulife {
namespace {

using testing::ContextTest;

ContextOptions leak_mode() {
  ContextOptions options;
  options.debug.leaks = true;
  options.debug.use_environment = false;
  return options;
}

class LeakGuardTest : public ContextTest {
 protected:
  LeakGuardTest() : ContextTest({}, leak_mode()) {}
};

TEST_F(LeakGuardTest, PassesWhenTheScopeDropsWhatItMade) {
  gpulife::testing::LeakGuard guard(ctx());
  DeviceTensor t = ctx().empty({16}, DType::f32, {}, "scratch");
  DeviceTensor v = t.view({4, 4});
  t.reset();
  v.reset();
  const LeakReport report = guard.check();
  EXPECT_TRUE(report.tracking);
  EXPECT_TRUE(report.tensors.empty());
}

TEST_F(LeakGuardTest, FailsNamingTheTensorThatSurvived) {
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

TEST_F(LeakGuardTest, IgnoresTensorsMadeBeforeIt) {
  DeviceTensor before = ctx().empty({16}, DType::u8, {}, "before");
  {
    gpulife::testing::LeakGuard guard(ctx());
    DeviceTensor inside = ctx().empty({16}, DType::u8, {}, "inside");
  }
  before.reset();
}

TEST_F(LeakGuardTest, IgnoresPinnedCacheEntries) {
  const std::vector<std::uint8_t> table(16, 7);
  {
    gpulife::testing::LeakGuard guard(ctx());
    (void)ctx().cache().upload(std::span<const std::uint8_t>(table), {16}, {},
                               {.retention = Retention::pinned, .tag = "pinned"});
  }  // the guard passes: the cache pins the entry, no user handle is left
  ctx().cache().clear();
}

TEST_F(LeakGuardTest, DismissStopsTheCheck) {
  DeviceTensor kept;
  {
    gpulife::testing::LeakGuard guard(ctx());
    kept = ctx().empty({16}, DType::u8);
    guard.dismiss();
  }
  kept.reset();
}

class LeakGuardWithoutLeakMode : public ContextTest {
 protected:
  LeakGuardWithoutLeakMode() : ContextTest({}, {.debug = {.use_environment = false}}) {}
};

TEST_F(LeakGuardWithoutLeakMode, FailsRatherThanPassWithoutLooking) {
  EXPECT_NONFATAL_FAILURE({ gpulife::testing::LeakGuard guard(ctx()); },
                          "the context is not in leak mode");
}

class LeakCheckedFixture : public gpulife::testing::LeakCheckedTest {
 protected:
  LeakCheckedFixture() : LeakCheckedTest({.device = Device::sim()}) {}
};

TEST_F(LeakCheckedFixture, GivesAContextInLeakMode) {
  EXPECT_TRUE(ctx().debug_options().leaks);
  DeviceTensor t = ctx().empty({4}, DType::u8);
  EXPECT_EQ(ctx().leak_report().tensors.size(), 1U);
}

TEST_F(LeakCheckedFixture, FailsAtTearDownWhenATensorSurvives) {
  DeviceTensor survivor = ctx().empty({4}, DType::u8, {}, "fixture-survivor");
  EXPECT_NONFATAL_FAILURE(TearDown(), "'fixture-survivor'");
  survivor.reset();  // the second TearDown, gtest's own, has nothing left to check
}

}  // namespace
}  // namespace gpulife
