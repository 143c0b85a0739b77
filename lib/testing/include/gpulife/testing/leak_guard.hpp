// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief GoogleTest helpers for leak mode: `LeakGuard` and `LeakCheckedTest`.
///
/// Part of the `gpulife::testing` CMake target (header-only, links GoogleTest); the gpulife
/// library itself does not depend on GoogleTest.

#include <cstddef>
#include <gpulife/source_location.hpp>
#include <optional>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>

namespace gpulife::testing {

/// @brief Fails the running test, printing the leak report, if tensors made on a context while
/// the guard lives are still alive when it ends.
///
/// @code
/// TEST(Decoder, DropsItsScratchTensors) {
///   gpulife::Context ctx({.debug = {.leaks = true}});
///   gpulife::testing::LeakGuard guard(ctx);
///   run_decoder_step(ctx);
/// }  // fails here, naming each surviving tensor and where it was made
/// @endcode
///
/// Tensors made before the guard, tensors held by pinned cache entries and pool blocks are not
/// its business (the context's own report at destruction covers the last). The context must be
/// in leak mode: a guard on a context without it fails the test at once rather than pass
/// without looking. Declare the guard after the tensors the test keeps on purpose beyond it,
/// or `check()` before they drop.
class LeakGuard {
 public:
  /// @param ctx   the context whose tensors are watched; must outlive the guard
  /// @param where where the failure is reported; leave defaulted
  explicit LeakGuard(Context& ctx, SourceLocation where = SourceLocation::current())
      : ctx_(&ctx), where_(where), since_(ctx.leak_checkpoint()) {
    if (!ctx.debug_options().leaks) {
      fail(
          "LeakGuard: the context is not in leak mode, so leaks cannot be seen; make it with "
          "ContextOptions{.debug = {.leaks = true}} or run with GPULIFE_DEBUG=leaks");
      ctx_ = nullptr;
    }
  }
  LeakGuard(const LeakGuard&) = delete;
  LeakGuard& operator=(const LeakGuard&) = delete;
  ~LeakGuard() { check(); }

  /// @brief Checks now, and not again at the end of the scope.
  /// @return the report of the tensors made since the guard began that are still alive
  LeakReport check() {
    if (ctx_ == nullptr) return {};
    LeakReport report = std::exchange(ctx_, nullptr)->leak_report(since_);
    if (report.leaked_tensors() != 0) {
      const std::size_t count = report.leaked_tensors();
      fail("LeakGuard: " + std::to_string(count) +
           (count == 1 ? " tensor made in this scope is" : " tensors made in this scope are") +
           " still alive\n" + report.to_text());
    }
    return report;
  }
  /// @brief Stops watching: the guard checks nothing.
  void dismiss() noexcept { ctx_ = nullptr; }

 private:
  void fail(const std::string& message) const {
    ADD_FAILURE_AT(where_.file_name(), static_cast<int>(where_.line())) << message;
  }

  Context* ctx_;
  SourceLocation where_;
  LeakCheckpoint since_;
};

}  // namespace gpulife::testing

namespace gpulife::testing {

/// @brief Fixture: `ctx()` is a context in leak mode, and the test fails, printing the report,
/// if tensors made during the test are still alive at `TearDown`.
///
/// @code
/// class DecoderTest : public gpulife::testing::LeakCheckedTest {};
/// TEST_F(DecoderTest, DropsItsScratchTensors) { run_decoder_step(ctx()); }
/// @endcode
///
/// Tensors held by members of a derived fixture are still alive at `TearDown`: reset them in
/// the test (or override `TearDown` and reset them before calling this one).
class LeakCheckedTest : public ::testing::Test {
 protected:
  /// @param options the context's options; leak mode is turned on whatever they say
  explicit LeakCheckedTest(ContextOptions options = {}) {
    options.debug.leaks = true;
    ctx_.emplace(std::move(options));
  }
  void SetUp() override { guard_.emplace(*ctx_); }
  void TearDown() override {
    if (guard_) guard_->check();
    guard_.reset();
  }

  Context& ctx() { return *ctx_; }

 private:
  std::optional<Context> ctx_;
  std::optional<LeakGuard> guard_;  // destroyed before the context
};

}  // namespace gpulife::testing
