// SPDX-License-Identifier: Apache-2.0
// A sticky CUDA error (here cudaErrorIllegalAddress) corrupts the context for the rest of the
// process: gpulife reports the device lost once, and later frees, destructors and
// synchronisations skip CUDA instead of flooding the error handler. Its own executable, since
// the process cannot use the GPU afterwards; skipped without a GPU.

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>

#include "support/cuda_test.hpp"

namespace gpulife {
namespace testing {
cudaError_t launch_illegal_address(void* stream);
}  // namespace testing
namespace {

class CudaLostTest : public testing::CudaTest {
 protected:
  // The device cannot be synchronised any more: the test checks the reports itself.
  void TearDown() override {}
};

TEST_F(CudaLostTest, AStickyErrorIsReportedOnceAndLaterCleanupSkipsCuda) {
  auto ctx = std::make_unique<Context>(ContextOptions{.device = device_});
  Stream stream(device_);
  std::vector<float> host(1 << 16, 1.0F);
  DeviceTensor weights = ctx->cache().upload(std::span<const float>(host), {1 << 16}, stream);
  DeviceTensor scratch = ctx->empty({1 << 16}, DType::f32, stream);
  ASSERT_EQ(testing::launch_illegal_address(stream.view().native_handle()), cudaSuccess);
  try {
    stream.synchronize();
    FAIL() << "expected the illegal address to surface";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code(), static_cast<int>(cudaErrorIllegalAddress)) << e.what();
  }
  auto reports = testing::take_reported_errors();
  ASSERT_EQ(reports.size(), 1U);
  EXPECT_NE(reports[0].find("is lost"), std::string::npos) << reports[0];
  EXPECT_NE(reports[0].find("cudaErrorIllegalAddress"), std::string::npos) << reports[0];

  // Everything afterwards is cleanup on a dead context: quiet.
  stream.synchronize();
  device_.synchronize();
  scratch.reset();
  weights.reset();
  ctx.reset();
  stream = Stream{};
  reports = testing::take_reported_errors();
  EXPECT_TRUE(reports.empty()) << reports.size() << " more reports, the first: " << reports[0];
  // New work still fails, with the error that killed the context.
  EXPECT_THROW((void)device_.impl().allocate(256), CudaError);
}

}  // namespace
}  // namespace gpulife
