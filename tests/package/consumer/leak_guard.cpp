// SPDX-License-Identifier: Apache-2.0
// An application's test with gpulife::testing: LeakGuard and LeakCheckedTest, from the package.

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <gpulife/gpulife.hpp>
#include <gpulife/testing/leak_guard.hpp>

namespace {

gpulife::ContextOptions leak_mode() {
  gpulife::ContextOptions options;
  options.device = gpulife::Device::sim();
  options.debug.leaks = true;
  options.debug.report_when_clean = false;
  return options;
}

TEST(ConsumerLeakGuard, PassesWhenTheScopeDropsItsTensors) {
  gpulife::Context ctx(leak_mode());
  gpulife::testing::LeakGuard guard(ctx);
  gpulife::DeviceTensor scratch = ctx.empty({64}, gpulife::DType::f32, {}, "scratch");
}

TEST(ConsumerLeakGuard, FailsNamingATensorThatOutlivesTheScope) {
  gpulife::Context ctx(leak_mode());
  gpulife::DeviceTensor kept;
  EXPECT_NONFATAL_FAILURE(
      {
        gpulife::testing::LeakGuard guard(ctx);
        kept = ctx.empty({64}, gpulife::DType::f32, {}, "kept_on_purpose");
      },
      "'kept_on_purpose'");
}

class ConsumerFixture : public gpulife::testing::LeakCheckedTest {};

TEST_F(ConsumerFixture, GivesALeakCheckedContext) {
  EXPECT_TRUE(ctx().debug_options().leaks);
  gpulife::DeviceTensor t = ctx().empty({8}, gpulife::DType::u8);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
