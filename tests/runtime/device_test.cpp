// SPDX-License-Identifier: Apache-2.0
// Backend selection and device handles.

#include <cstdint>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/source_location.hpp>

#include "support/backend_test.hpp"
#include "support/scoped_env.hpp"

namespace gpulife {
namespace {

std::uint_least32_t line_of(SourceLocation where = SourceLocation::current()) {
  return where.line();
}

// gpulife's API names SourceLocation so that compilers without std::source_location (Clang 14
// with libstdc++ 12: the fuzzing build) compile it; either way a defaulted parameter must
// capture the caller, which is what leak reports and CudaError messages show.
TEST(SourceLocation, ADefaultedParameterCapturesTheCaller) {
  EXPECT_EQ(line_of(), static_cast<std::uint_least32_t>(__LINE__));
  const std::uint_least32_t line = __LINE__ + 1;
  const CudaError error(1, "cudaErrorInvalidValue", "cudaMemcpyAsync", "testing");
  EXPECT_NE(std::string(error.what()).find("device_test.cpp:" + std::to_string(line)),
            std::string::npos)
      << error.what();
}

using testing::ScopedEnv;

TEST(DeviceSelection, ProbeNeverThrowsAndExplainsItself) {
  const CudaProbe probe = Device::probe_cuda();
  if (!probe.available) {
    EXPECT_FALSE(probe.reason.empty());
    EXPECT_EQ(probe.device_count, 0);
  } else {
    EXPECT_GT(probe.device_count, 0);
  }
}

TEST(DeviceSelection, EnvironmentForcesTheSimulatedDevice) {
  ScopedEnv env("GPULIFE_DEVICE", "sim");
  const Device device = Device::select();
  EXPECT_EQ(device.kind(), BackendKind::sim);
  EXPECT_NE(device.name().find("simulated"), std::string::npos);
}

TEST(DeviceSelection, UnknownBackendNameIsRejected) {
  ScopedEnv env("GPULIFE_DEVICE", "tpu");
  EXPECT_THROW((void)Device::select(), std::invalid_argument);
}

TEST(DeviceSelection, ForcingCudaWithoutADeviceThrowsCudaError) {
  if (Device::probe_cuda().available) GTEST_SKIP() << "a CUDA device is present";
  ScopedEnv env("GPULIFE_DEVICE", "cuda");
  EXPECT_THROW((void)Device::select(), CudaError);
}

TEST(DeviceSelection, WithoutADeviceTheDefaultIsTheSimulatedDevice) {
  if (Device::probe_cuda().available) GTEST_SKIP() << "a CUDA device is present";
  const ScopedEnv unset("GPULIFE_DEVICE", nullptr);
  ::testing::internal::CaptureStderr();
  const Device device = Device::select();
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(device.kind(), BackendKind::sim);
  EXPECT_NE(said.find("using the simulated device"), std::string::npos) << said;
}

// Handles work alike on every backend. (The selection tests above are about choosing a backend,
// and the probe and the environment decide that, so they are not parametrised.)
class DeviceHandles : public testing::BackendTest {};

TEST_P(DeviceHandles, CopiesShareTheDeviceAndEmptyHandlesAreRejected) {
  const Device a = device_;
  const Device b = a;  // NOLINT(performance-unnecessary-copy-initialization): the point of the test
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.kind(), on_sim() ? BackendKind::sim : BackendKind::cuda);
  EXPECT_EQ(a.name(), b.name());
  if (on_sim()) {
    // Every simulated device is a device of its own.
    EXPECT_NE(a, Device::sim());
    EXPECT_NE(a.ordinal(), Device::sim().ordinal());
  } else {
    // A CUDA ordinal names one device object while any handle to it lives.
    EXPECT_EQ(a, Device::cuda(0));
    EXPECT_EQ(a.ordinal(), 0);
    EXPECT_NE(a, Device::sim());
  }
  const Device empty;
  EXPECT_THROW((void)empty.name(), std::invalid_argument);
  EXPECT_THROW((void)Device::sim(SimOptions{.capacity_bytes = 0}), std::invalid_argument);
}

TEST_P(DeviceHandles, StreamsAndEventsArePooled) {
  std::uint64_t first_id = 0;
  {
    Stream stream(device_);
    first_id = stream.id();
  }
  Stream again(device_);
  EXPECT_EQ(again.id(), first_id) << "a released stream's queue is reused";
  Stream moved = std::move(again);
  EXPECT_FALSE(again.valid());  // NOLINT(bugprone-use-after-move): checks the moved-from state
  EXPECT_TRUE(moved.valid());
}

INSTANTIATE_TEST_SUITE_P(Backends, DeviceHandles, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
