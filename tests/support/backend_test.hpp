// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test support: suites whose subject does not depend on the backend run once per backend.
//
//   class DeviceTensorTest : public testing::BackendContextTest {};
//   TEST_P(DeviceTensorTest, CopiesShareTheMemory) { ... device_, ctx() ... }
//   INSTANTIATE_TEST_SUITE_P(Backends, DeviceTensorTest, testing::backends(),
//                            testing::backend_name);
//
// Every test then runs as `.../sim` on a fresh simulated device and as `.../cuda` on CUDA device
// 0. The CUDA variant skips, saying why, where no device answers (it fails instead under
// GPULIFE_DEVICE_REQUIRED, the gpu preset and scripts/gpu-check.sh). At tear-down the device is
// synchronised, and the simulated device's violations and every error gpulife reported through
// the error handler fail the test, on both backends.
//
// A test that needs what only the simulated device has (its violation reports, injected faults,
// host code as kernels, device memory the host can read) stays on a `SimTest` fixture, or says
// so: `if (!on_sim()) GTEST_SKIP() << "...";`.

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/device.hpp>

#include "support/sim_test.hpp"

namespace gpulife::testing {

/// The backend a parametrised test runs on.
enum class Backend { sim, cuda };

/// @return both backends, for INSTANTIATE_TEST_SUITE_P
::testing::internal::ParamGenerator<Backend> backends();
/// @return "sim" or "cuda", the test name's suffix
std::string backend_name(const ::testing::TestParamInfo<Backend>& info);

/// Fixture base: `device_` is a new simulated device (with the options given) or CUDA device 0,
/// as `backend()` says. `BackendTest` takes the backend from the test's parameter; a suite
/// parametrised over more than the backend derives from this and says where it is.
class BackendFixture : public ::testing::Test {
 protected:
  explicit BackendFixture(SimOptions sim_options = {});
  /// Derived fixtures call this first and return if `IsSkipped() || HasFatalFailure()`.
  void SetUp() override;
  /// Derived fixtures release what they hold first, then call this.
  void TearDown() override;

  /// @return the backend this test runs on
  [[nodiscard]] virtual Backend backend() const = 0;
  [[nodiscard]] bool on_sim() const { return backend() == Backend::sim; }
  /// Synchronises the device and returns the simulated device's violations (none on CUDA).
  std::vector<SimViolation> take_violations();
  /// Returns the messages reported through the error handler so far.
  std::vector<std::string> take_errors() { return take_reported_errors(); }

  Device device_;

 private:
  SimOptions sim_options_;
};

/// Fixture: `BackendFixture` on the backend the test's parameter names.
class BackendTest : public BackendFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  using BackendFixture::BackendFixture;
  [[nodiscard]] Backend backend() const override { return GetParam(); }
};

/// Fixture: `BackendTest` with a context on the device (`ctx()`), destroyed before the checks.
class BackendContextTest : public BackendTest {
 protected:
  explicit BackendContextTest(SimOptions sim_options = {}, ContextOptions context_options = {})
      : BackendTest(std::move(sim_options)), context_options_(std::move(context_options)) {}
  void SetUp() override;
  void TearDown() override;
  Context& ctx() { return *ctx_; }

  std::optional<Context> ctx_;

 private:
  ContextOptions context_options_;
};

}  // namespace gpulife::testing
