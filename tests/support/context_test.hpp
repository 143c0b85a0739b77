// SPDX-License-Identifier: Apache-2.0
#pragma once

// Fixture: a context over a fresh simulated device, destroyed before the device checks run.

#include <memory>
#include <optional>

#include <gpulife/context.hpp>

#include "support/sim_test.hpp"

namespace gpulife::testing {

class ContextTest : public SimTest {
 protected:
  explicit ContextTest(SimOptions options = {}, ContextOptions context_options = {})
      : SimTest(std::move(options)) {
    context_options.device = device_;
    ctx_.emplace(std::move(context_options));
  }
  void TearDown() override {
    ctx_.reset();
    SimTest::TearDown();
  }
  Context& ctx() { return *ctx_; }

  std::optional<Context> ctx_;
};

}  // namespace gpulife::testing
