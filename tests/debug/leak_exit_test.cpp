// SPDX-License-Identifier: Apache-2.0
// DebugOptions::exit_on_leak: a leak makes the process's exit status non-zero. Each case runs in
// a child process (a death test in the "threadsafe" style, which starts the test binary afresh,
// so that the exit handler is registered there exactly as in a real program).

#include <cstdlib>
#include <memory>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>

namespace gpulife {
namespace {

constexpr int leak_status = 7;

ContextOptions exit_on_leak() {
  ContextOptions options;
  options.device = Device::sim();
  options.debug.exit_on_leak = true;
  options.debug.leak_exit_code = leak_status;
  options.debug.use_environment = false;
  return options;
}

/// A tensor that outlives its context and the exit: a leak.
DeviceTensor* kept = nullptr;
[[gnu::noinline]] void leak_from(Context& ctx) {
  kept = new DeviceTensor(ctx.empty({16}, DType::u8, {}, "kept"));
}

class LeakExitTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(LeakExitTest, ALeakMakesTheExitStatusNonZero) {
  EXPECT_EXIT(
      {
        {
          Context ctx(exit_on_leak());
          leak_from(ctx);
        }  // the report is printed here; the process goes on
        std::fputs("still running after the context\n", stderr);
        std::exit(0);
      },
      ::testing::ExitedWithCode(leak_status),
      "1 tensor leaked holding 16 B(.|\n)*still running after the context");
}

TEST_F(LeakExitTest, NoLeakLeavesTheExitStatusAlone) {
  EXPECT_EXIT(
      {
        {
          Context ctx(exit_on_leak());
          DeviceTensor t = ctx.empty({16}, DType::u8);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "no leaks");
}

std::unique_ptr<Context>& late_context() {
  static auto* context = new std::unique_ptr<Context>();
  return *context;
}

TEST_F(LeakExitTest, AContextDestroyedDuringExitEndsTheProcessAtOnce) {
  EXPECT_EXIT(
      {
        // Registered before the context arms gpulife's handler, so it runs after that handler:
        // as a static object made before the context would be destroyed.
        std::atexit([] { late_context().reset(); });
        ContextOptions options = exit_on_leak();
        options.debug.stacks = true;
        late_context() = std::make_unique<Context>(std::move(options));
        leak_from(*late_context());
        // A report now builds the symbol cache; the late one must still find it usable.
        (void)late_context()->leak_report().to_text();
        std::exit(0);
      },
      ::testing::ExitedWithCode(leak_status),
      "1 tensor leaked(.|\n)*at [^\n]*leak_from[^\n]*leak_exit_test\\.cpp:");
}

}  // namespace
}  // namespace gpulife
