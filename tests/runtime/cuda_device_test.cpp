// SPDX-License-Identifier: Apache-2.0
// The CUDA backend on a real device. Every test skips, saying why, when no device answers.

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>

#include "support/cuda_test.hpp"

namespace gpulife {
namespace {

using CudaDeviceTest = testing::CudaTest;

TEST_F(CudaDeviceTest, RoundTripThroughDeviceMemory) {
  constexpr std::size_t n = 1 << 20;
  Stream stream(device_);
  void* buffer = device_.impl().allocate_async(n, *stream.view().impl());
  std::vector<unsigned char> host(n, 9);
  stream.view().copy(buffer, host.data(), n, CopyKind::host_to_device);
  stream.view().memset(buffer, 4, n / 2);
  std::vector<unsigned char> back(n);
  stream.view().copy(back.data(), buffer, n, CopyKind::device_to_host);
  stream.synchronize();
  EXPECT_EQ(back[0], 4);
  EXPECT_EQ(back[n - 1], 9);
  device_.impl().deallocate_async(buffer, n, *stream.view().impl());
  stream.synchronize();
}

TEST_F(CudaDeviceTest, EventOrdersTwoStreams) {
  constexpr std::size_t n = 1 << 20;
  Stream a(device_);
  Stream b(device_);
  Event event(device_);
  void* buffer = device_.impl().allocate(n);
  a.view().memset(buffer, 7, n);
  a.view().record(event);
  b.view().wait(event);
  auto* pinned = static_cast<unsigned char*>(device_.allocate_pinned(n));
  b.view().copy(pinned, buffer, n, CopyKind::device_to_host);
  b.synchronize();
  EXPECT_EQ(pinned[n - 1], 7);
  device_.deallocate_pinned(pinned);
  device_.impl().deallocate(buffer, n);
}

TEST_F(CudaDeviceTest, OversizedAllocationThrowsOutOfMemory) {
  const MemoryInfo info = device_.memory_info();
  EXPECT_THROW((void)device_.impl().allocate(info.total_bytes * 2), OutOfMemoryError);
  // the device stays usable
  void* small = device_.impl().allocate(256);
  device_.impl().deallocate(small, 256);
}

TEST_F(CudaDeviceTest, HostCallbackRunsAfterQueuedWork) {
  Stream stream(device_);
  bool ran = false;
  stream.view().host_callback([&] { ran = true; });
  stream.synchronize();
  EXPECT_TRUE(ran);
}

TEST_F(CudaDeviceTest, HostKernelsAreRejectedOnCuda) {
  Stream stream(device_);
  EXPECT_THROW(stream.view().impl()->launch_host_kernel("k", {}, [] {}), std::logic_error);
}

}  // namespace
}  // namespace gpulife
