// SPDX-License-Identifier: Apache-2.0
// The CUDA backend on a real device. Every test skips, saying why, when no device answers.

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <gtest/gtest-spi.h>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/device_guard.hpp>

#include "support/cuda_test.hpp"

#if defined(GPULIFE_HAS_CUDA)
#include <cuda_runtime_api.h>

#include "runtime/backends.hpp"
#endif

namespace gpulife {
namespace {

using CudaDeviceTest = testing::CudaTest;

TEST(CudaTestFixture, TearDownFailsOnErrorsGpulifeReported) {
  // What CudaTest::TearDown (and the simulated device's fixture) call: a contained error, such
  // as a failed free in a destructor, fails the test that caused it.
  EXPECT_NONFATAL_FAILURE(
      {
        report_error("a failed cudaFreeAsync");
        testing::fail_on_reported_errors();
      },
      "unexpected error report: a failed cudaFreeAsync");
  testing::fail_on_reported_errors();  // nothing left over
}

TEST_F(CudaDeviceTest, RoundTripThroughDeviceMemory) {
  constexpr std::size_t n = 1 << 20;
  Stream stream(device_);
  void* buffer = device_.impl().allocate_async(n, *stream.view().impl());
  std::vector<unsigned char> host(n, 9);
  stream.view().copy(buffer, host.data(), n, CopyKind::host_to_device);
  stream.view().memset(buffer, 4, n / 2);
  std::vector<unsigned char> back(n);
  stream.view().copy(back.data(), buffer, n, CopyKind::device_to_host);
  // pageable destination: complete when the copy returns, without a synchronisation
  EXPECT_EQ(back[0], 4);
  EXPECT_EQ(back[n - 1], 9);
  device_.impl().deallocate_async(buffer, n, *stream.view().impl());
  stream.synchronize();
}

TEST_F(CudaDeviceTest, ACopyToPageableMemoryHasCompletedWhenItReturns) {
  // The runtime only says such a copy "might be synchronous"; gpulife's contract is that it has
  // completed. A host function holds the stream (host functions may wait on host primitives)
  // until another thread lets it go, well after the copy was queued.
  constexpr std::size_t n = 64 << 20;
  Stream stream(device_);
  void* buffer = device_.impl().allocate(n);
  stream.view().memset(buffer, 0x3C, n);
  std::atomic<bool> open{false};
  stream.view().host_callback([&open] {
    while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  std::thread opener([&open] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    open = true;
  });
  std::vector<unsigned char> back(n, 0);
  stream.view().copy(back.data(), buffer, n, CopyKind::device_to_host);
  EXPECT_EQ(back[0], 0x3C);
  EXPECT_EQ(back[n - 1], 0x3C);
  opener.join();
  device_.impl().deallocate(buffer, n);
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

TEST_F(CudaDeviceTest, OneDeviceObjectPerOrdinal) {
  const Device again = Device::cuda(device_.ordinal());
  EXPECT_EQ(again, device_) << "two objects for one GPU reject each other's streams";
  Stream stream(again);
  Event event(device_);
  stream.view().record(event);  // an event of one handle, a stream of the other
  event.synchronize();
  EXPECT_THROW((void)Device::cuda(-1), CudaError);
  EXPECT_THROW((void)Device::cuda(1 << 20), CudaError);
}

#if defined(GPULIFE_HAS_CUDA)

TEST(CudaErrors, StickyErrorsAreTheOnesThatCorruptTheContext) {
  for (cudaError_t sticky : {cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorAssert,
                             cudaErrorMisalignedAddress, cudaErrorHardwareStackError,
                             cudaErrorIllegalInstruction, cudaErrorInvalidPc,
                             cudaErrorLaunchTimeout}) {
    EXPECT_TRUE(detail::is_sticky_cuda_error(sticky)) << cudaGetErrorName(sticky);
  }
  for (cudaError_t recoverable : {cudaErrorMemoryAllocation, cudaErrorInvalidValue,
                                  cudaErrorNotReady, cudaErrorLaunchOutOfResources,
                                  cudaErrorInvalidDevice, cudaErrorCudartUnloading}) {
    EXPECT_FALSE(detail::is_sticky_cuda_error(recoverable)) << cudaGetErrorName(recoverable);
  }
}

TEST_F(CudaDeviceTest, AnErrorTheApplicationLeftPendingIsNotSwallowed) {
  // The application made a failing call and has not looked at the error yet.
  (void)cudaGetLastError();
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(count + 7), cudaErrorInvalidDevice);
  Stream stream(device_);
  std::atomic<bool> open{false};
  stream.view().host_callback([&open] {
    while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  Event event(device_);
  stream.view().record(event);
  EXPECT_FALSE(event.query());        // cudaErrorNotReady: not an error, and not cleared away
  EXPECT_FALSE(stream.view().query());
  int local = 0;
  EXPECT_FALSE(device_.impl().is_pinned(&local, sizeof local));
  open = true;
  stream.synchronize();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice) << "gpulife cleared the caller's error";
}

TEST_F(CudaDeviceTest, EveryEntryRestoresTheCallersCurrentDevice) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "needs two GPUs to tell the current device from gpulife's";
  const Device second = Device::cuda(1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  {
    Stream stream(second);
    void* buffer = second.impl().allocate_async(4096, *stream.view().impl());
    stream.view().memset(buffer, 1, 4096);
    std::vector<unsigned char> back(4096);
    stream.view().copy(back.data(), buffer, 4096, CopyKind::device_to_host);
    second.impl().deallocate_async(buffer, 4096, *stream.view().impl());
    stream.synchronize();
    EXPECT_EQ(back[0], 1);
    int current = -1;
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, 0) << "a gpulife call left the caller on another device";
    {
      const DeviceGuard guard(second);
      ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
      EXPECT_EQ(current, 1);
    }
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, 0) << "the guard did not restore the caller's device";
  }
}

#endif  // GPULIFE_HAS_CUDA

}  // namespace
}  // namespace gpulife
