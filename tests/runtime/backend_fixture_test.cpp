// SPDX-License-Identifier: Apache-2.0
// The fixture that runs a suite on every backend (tests/support/backend_test.hpp).

#include <gtest/gtest.h>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class BackendFixtureTest : public testing::BackendContextTest {};

TEST_P(BackendFixtureTest, TheDeviceAndTheContextAreTheParametersBackend) {
  EXPECT_EQ(device_.kind(), on_sim() ? BackendKind::sim : BackendKind::cuda);
  EXPECT_EQ(ctx().device(), device_);
  DeviceTensor t = ctx().empty({16}, DType::f32);
  EXPECT_EQ(t.device(), device_);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendFixtureTest, testing::backends(),
                         testing::backend_name);

}  // namespace
}  // namespace gpulife
