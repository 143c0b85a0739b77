// SPDX-License-Identifier: Apache-2.0
// The kernels on a real CUDA device (the nvcc-compiled paths: Thrust with gpulife's allocator,
// CUB, <<<>>>). Every test skips, saying why, when no device answers.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/kernels/checksum.hpp>
#include <gpulife/kernels/dense.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>

#include "support/cuda_test.hpp"

namespace gpulife {
namespace {

class CudaKernelsTest : public testing::CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    pool_ = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device_));
    stream_ = Stream(device_);
  }
  void TearDown() override {
    if (stream_.valid()) stream_.synchronize();
    pool_.reset();
    CudaTest::TearDown();
  }

  std::shared_ptr<PoolResource> pool_;
  Stream stream_;
};

TEST_F(CudaKernelsTest, ChecksumMatchesTheHostAndTakesTemporariesFromThePool) {
  constexpr std::size_t n = (std::size_t{1} << 22) + 5;
  std::vector<std::byte> bytes(n);
  std::mt19937_64 rng(1);
  for (std::byte& b : bytes) b = static_cast<std::byte>(rng() & 0xFFU);
  auto* data = static_cast<std::byte*>(pool_->allocate(n, stream_));
  stream_.view().copy(data, bytes.data(), n, CopyKind::host_to_device);
  const std::uint64_t allocations = pool_->statistics().allocations;
  EXPECT_EQ(kernels::checksum(stream_, data, n, *pool_), kernels::checksum_host(bytes));
  EXPECT_GT(pool_->statistics().allocations, allocations)
      << "Thrust's temporaries bypassed the pool";
  // an unaligned start, and Thrust's own temporaries
  EXPECT_EQ(kernels::checksum(stream_, data + 3, n - 3),
            kernels::checksum_host(std::span(bytes).subspan(3)));

  auto* result = static_cast<std::uint64_t*>(pool_->allocate(sizeof(std::uint64_t), stream_));
  kernels::checksum_async(stream_, data, n, result, *pool_);
  std::uint64_t value = 0;
  stream_.view().copy(&value, result, sizeof value, CopyKind::device_to_host);
  EXPECT_EQ(value, kernels::checksum_host(bytes));
  pool_->deallocate(result, sizeof(std::uint64_t), stream_);
  pool_->deallocate(data, n, stream_);
  stream_.synchronize();
  EXPECT_EQ(pool_->statistics().bytes_in_use, 0U);
}

TEST_F(CudaKernelsTest, DenseMatchesAHandExample) {
  // W = [[1, 2], [3, 4]], b = [0.5, -10]; x rows [1, 1] and [-1, 0.5], as f16
  const std::vector<float> w = {1, 2, 3, 4};
  const std::vector<float> b = {0.5F, -10};
  const std::vector<float> x = {1, 1, -1, 0.5F};
  std::vector<std::uint16_t> wh;
  std::vector<std::uint16_t> bh;
  std::vector<std::uint16_t> xh;
  for (float v : w) wh.push_back(kernels::float_to_half(v));
  for (float v : b) bh.push_back(kernels::float_to_half(v));
  for (float v : x) xh.push_back(kernels::float_to_half(v));
  auto* dw = static_cast<std::uint16_t*>(pool_->allocate(8, stream_));
  auto* db = static_cast<std::uint16_t*>(pool_->allocate(4, stream_));
  auto* dx = static_cast<std::uint16_t*>(pool_->allocate(8, stream_));
  auto* dy = static_cast<float*>(pool_->allocate(16, stream_));
  stream_.view().copy(dw, wh.data(), 8, CopyKind::host_to_device);
  stream_.view().copy(db, bh.data(), 4, CopyKind::host_to_device);
  stream_.view().copy(dx, xh.data(), 8, CopyKind::host_to_device);
  kernels::dense(stream_, {2, 2, 2}, dw, dx, db, dy, kernels::Activation::relu);
  std::vector<float> y(4);
  stream_.view().copy(y.data(), dy, 16, CopyKind::device_to_host);
  EXPECT_EQ(y, (std::vector<float>{3.5F, 0.0F, 0.5F, 0.0F}));
  pool_->deallocate(dw, 8, stream_);
  pool_->deallocate(db, 4, stream_);
  pool_->deallocate(dx, 8, stream_);
  pool_->deallocate(dy, 16, stream_);
}

}  // namespace
}  // namespace gpulife
