// SPDX-License-Identifier: Apache-2.0
// DebugOptions: the GPULIFE_DEBUG list and the environment.

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/debug/debug_options.hpp>

#include "support/sim_test.hpp"
#include "support/scoped_env.hpp"

namespace gpulife {
namespace {

using testing::ScopedEnv;

TEST(DebugOptions, EverythingIsOffByDefault) {
  const DebugOptions options;
  EXPECT_FALSE(options.leaks);
  EXPECT_FALSE(options.stacks);
  EXPECT_FALSE(options.timeline);
  EXPECT_FALSE(options.exit_on_leak);
  EXPECT_TRUE(options.report_path.empty());
}

TEST(DebugOptions, ParsesEveryItem) {
  DebugOptions options;
  apply_debug_flags(" timeline ,,exit", options);
  EXPECT_TRUE(options.timeline);
  EXPECT_TRUE(options.exit_on_leak);
  EXPECT_TRUE(options.leaks) << "exit implies leaks";
  EXPECT_FALSE(options.stacks);

  DebugOptions stacks;
  apply_debug_flags("stacks", stacks);
  EXPECT_TRUE(stacks.stacks);
  EXPECT_TRUE(stacks.leaks) << "stacks implies leaks";
  EXPECT_FALSE(stacks.timeline);
}

TEST(DebugOptions, RejectsAnUnknownItemByName) {
  DebugOptions options;
  try {
    apply_debug_flags("leaks,leak", options);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'leak'"), std::string::npos) << e.what();
  }
}

TEST(DebugOptions, EnvironmentTurnsOnWhatTheOptionsLeaveOff) {
  const ScopedEnv debug("GPULIFE_DEBUG", "leaks,timeline");
  const ScopedEnv report("GPULIFE_LEAK_REPORT", "/tmp/gpulife-leaks.json");
  const ScopedEnv trace("GPULIFE_TIMELINE", "/tmp/gpulife-trace.json");
  const DebugOptions resolved = resolve_debug_options({});
  EXPECT_TRUE(resolved.leaks);
  EXPECT_TRUE(resolved.timeline);
  EXPECT_FALSE(resolved.stacks);
  EXPECT_EQ(resolved.report_path, "/tmp/gpulife-leaks.json");
  EXPECT_EQ(resolved.timeline_path, "/tmp/gpulife-trace.json");

  DebugOptions own;
  own.report_path = "mine.txt";
  EXPECT_EQ(resolve_debug_options(own).report_path, "mine.txt") << "the options' path wins";

  DebugOptions sealed;
  sealed.use_environment = false;
  const DebugOptions untouched = resolve_debug_options(sealed);
  EXPECT_FALSE(untouched.leaks);
  EXPECT_FALSE(untouched.timeline);
  EXPECT_TRUE(untouched.report_path.empty());
}

TEST(DebugOptions, OomDumpFromTheEnvironmentWithItsDirectory) {
  const ScopedEnv debug("GPULIFE_DEBUG", "oom_dump");
  const ScopedEnv dir("GPULIFE_OOM_DUMP", "/tmp/gpulife-oom");
  const DebugOptions resolved = resolve_debug_options({});
  EXPECT_TRUE(resolved.oom_dump);
  EXPECT_TRUE(resolved.leaks) << "the snapshot's live set needs leak mode";
  EXPECT_TRUE(resolved.timeline) << "and its recent events the timeline";
  EXPECT_EQ(resolved.oom_dump_dir, "/tmp/gpulife-oom");

  DebugOptions own;
  own.oom_dump_dir = "mine";
  EXPECT_EQ(resolve_debug_options(own).oom_dump_dir, "mine") << "the options' directory wins";
}

TEST(DebugOptions, OomDumpInTheOptionsImpliesWhatItNeeds) {
  DebugOptions options;
  options.use_environment = false;
  options.oom_dump = true;
  const DebugOptions resolved = resolve_debug_options(options);
  EXPECT_TRUE(resolved.leaks);
  EXPECT_TRUE(resolved.timeline);
}

TEST(DebugOptions, PathsAloneTurnNothingOn) {
  const ScopedEnv debug("GPULIFE_DEBUG", nullptr);
  const ScopedEnv report("GPULIFE_LEAK_REPORT", "/tmp/gpulife-leaks.txt");
  const DebugOptions resolved = resolve_debug_options({});
  EXPECT_FALSE(resolved.leaks);
  EXPECT_EQ(resolved.report_path, "/tmp/gpulife-leaks.txt");
}

TEST(DebugOptions, ExitNeedsANonZeroCode) {
  DebugOptions options;
  options.use_environment = false;
  options.exit_on_leak = true;
  options.leak_exit_code = 0;
  EXPECT_THROW((void)resolve_debug_options(options), std::invalid_argument);
}

class DebugEnvironmentOnSim : public testing::SimTest {};

TEST_F(DebugEnvironmentOnSim, ContextTakesLeakModeFromTheEnvironment) {
  const ScopedEnv debug("GPULIFE_DEBUG", "leaks");
  Context ctx({.device = device_});
  EXPECT_TRUE(ctx.debug_options().leaks);
  DeviceTensor t = ctx.empty({4}, DType::f32);
  const LeakReport report = ctx.leak_report();
  EXPECT_TRUE(report.tracking);
  ASSERT_EQ(report.tensors.size(), 1U);
  EXPECT_EQ(report.tensors[0].id, t.id());
}

TEST_F(DebugEnvironmentOnSim, AnUnknownItemFailsContextCreation) {
  const ScopedEnv debug("GPULIFE_DEBUG", "leaks,typo");
  EXPECT_THROW(Context({.device = device_}), std::invalid_argument);
}

}  // namespace
}  // namespace gpulife
