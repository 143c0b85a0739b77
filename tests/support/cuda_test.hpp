// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test support: a fixture for tests that need a CUDA device. Without one they skip, saying why;
// under GPULIFE_DEVICE_REQUIRED (the gpu preset) they fail instead. At tear-down the device is
// synchronised and every error gpulife reported through the error handler (a failed free, a lost
// device, a throwing finalizer) fails the test, as the simulated device's fixture does.

#include <gtest/gtest.h>

#include <gpulife/runtime/device.hpp>

#include "support/sim_test.hpp"

namespace gpulife::testing {

class CudaTest : public ::testing::Test {
 protected:
  /// Derived fixtures call this first and return if `IsSkipped() || HasFatalFailure()`.
  void SetUp() override {
    const CudaProbe probe = Device::probe_cuda();
#if defined(GPULIFE_DEVICE_REQUIRED)
    ASSERT_TRUE(probe.available) << "GPULIFE_DEVICE_REQUIRED: no CUDA device: " << probe.reason;
#else
    if (!probe.available) GTEST_SKIP() << "no CUDA device: " << probe.reason;
#endif
    take_reported_errors();  // a previous test's leftovers are that test's problem
    device_ = Device::cuda(0);
  }

  /// Derived fixtures release what they hold first, then call this.
  void TearDown() override {
    if (!device_.valid()) return;  // skipped
    try {
      device_.synchronize();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "synchronising " << device_.name() << " at tear-down: " << e.what();
    }
    fail_on_reported_errors();
  }

  Device device_;
};

}  // namespace gpulife::testing
