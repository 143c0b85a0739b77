// SPDX-License-Identifier: Apache-2.0
// for_each_index is defined one way in nvcc units (a CUDA launch) and another in host units (the
// simulated device only). One functor instantiated in both kinds of unit must give two distinct
// functions: were they one inline function defined twice (an ODR violation), the linker would
// keep one of them for every caller, and an nvcc unit could end up throwing on CUDA streams.

#include <vector>

#include <gtest/gtest.h>

#include <gpulife/runtime/device.hpp>

#include "kernels/launch_odr.hpp"
#include "support/cuda_test.hpp"
#include "support/sim_test.hpp"

namespace gpulife {
namespace {

TEST(LaunchOdr, HostAndNvccUnitsKeepTheirOwnLauncher) {
  EXPECT_NE(testing::launcher_of_host_unit(), testing::launcher_of_cuda_unit())
      << "one definition of for_each_index<OdrBody> replaced the other at link time";
}

using LaunchOdrSimTest = testing::SimTest;

TEST_F(LaunchOdrSimTest, BothLaunchersRunOnTheSimulatedDevice) {
  Stream stream(device_);
  for (auto launcher : {testing::launcher_of_host_unit(), testing::launcher_of_cuda_unit()}) {
    auto* out = static_cast<int*>(device_.impl().allocate(4 * sizeof(int)));
    launcher(stream, 4, testing::OdrBody{out}, {{out, 4 * sizeof(int)}}, "odr",
             SourceLocation::current());
    std::vector<int> back(4);
    stream.view().copy(back.data(), out, 4 * sizeof(int), CopyKind::device_to_host);
    EXPECT_EQ(back, (std::vector<int>{1, 2, 3, 4}));
    device_.impl().deallocate(out, 4 * sizeof(int));
  }
}

using LaunchOdrCudaTest = testing::CudaTest;

TEST_F(LaunchOdrCudaTest, TheNvccUnitLaunchesAndTheHostUnitRefuses) {
  Stream stream(device_);
  auto* out = static_cast<int*>(device_.impl().allocate(4 * sizeof(int)));
  testing::launcher_of_cuda_unit()(stream, 4, testing::OdrBody{out}, {}, "odr",
                                   SourceLocation::current());
  std::vector<int> back(4);
  stream.view().copy(back.data(), out, 4 * sizeof(int), CopyKind::device_to_host);
  EXPECT_EQ(back, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_THROW(testing::launcher_of_host_unit()(stream, 4, testing::OdrBody{out}, {}, "odr",
                                                SourceLocation::current()),
               std::logic_error);
  device_.impl().deallocate(out, 4 * sizeof(int));
}

}  // namespace
}  // namespace gpulife
