// SPDX-License-Identifier: Apache-2.0
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/kernels/fill.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class FillTest : public testing::BackendTest {};

TEST_P(FillTest, FillsExactlyTheRequestedElements) {
  constexpr std::size_t n = 1000;
  Stream stream(device_);
  auto* data = static_cast<std::int32_t*>(device_.impl().allocate((n + 8) * sizeof(std::int32_t)));
  stream.view().memset(data, 0, (n + 8) * sizeof(std::int32_t));
  kernels::fill(stream, data, n, std::int32_t{-7});
  std::vector<std::int32_t> host(n + 8);
  stream.view().copy(host.data(), data, host.size() * sizeof(std::int32_t),
                     CopyKind::device_to_host);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(host[i], -7) << i;
  for (std::size_t i = n; i < n + 8; ++i) ASSERT_EQ(host[i], 0) << i;
  device_.impl().deallocate(data, (n + 8) * sizeof(std::int32_t));
}

TEST_P(FillTest, FillOfFreedMemoryIsCaught) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  auto* data = static_cast<float*>(device_.impl().allocate(1024));
  device_.impl().deallocate(data, 1024);
  kernels::fill(device_.default_stream(), data, 256, 1.0F);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].operation, "kernel fill");
}

TEST_P(FillTest, BadArgumentsAreRejected) {
  EXPECT_THROW(kernels::fill<float>(device_.default_stream(), nullptr, 4, 1.0F),
               std::invalid_argument);
  float* data = nullptr;
  kernels::fill(device_.default_stream(), data, 0, 1.0F);  // nothing to do
  EXPECT_THROW(kernels::fill(StreamView{}, reinterpret_cast<float*>(64), 4, 1.0F),
               std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Backends, FillTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
