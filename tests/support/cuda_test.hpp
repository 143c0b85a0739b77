// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test support: a fixture for tests that need a CUDA device. Without one they skip, saying why;
// under GPULIFE_DEVICE_REQUIRED (the gpu preset) they fail instead.

#include <gtest/gtest.h>

#include <gpulife/runtime/device.hpp>

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
    device_ = Device::cuda(0);
  }

  Device device_;
};

}  // namespace gpulife::testing
