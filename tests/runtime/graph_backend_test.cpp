// SPDX-License-Identifier: Apache-2.0
// Stream capture and graphs through the runtime API, on every backend (the CUDA variants run
// where a GPU answers): what the simulated device models must hold on CUDA too.

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/graph.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class GraphBackendTest : public testing::BackendTest {
 protected:
  static constexpr std::size_t bytes = 4096;
};

TEST_P(GraphBackendTest, AMemsetAndACopyAreCapturedAndReplayed) {
  Stream stream(device_);
  auto* a = static_cast<unsigned char*>(device_.impl().allocate(bytes));
  auto* b = static_cast<unsigned char*>(device_.impl().allocate(bytes));
  stream.view().memset(b, 0, bytes);
  stream.synchronize();
  stream.view().begin_capture();
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::active);
  stream.view().memset(a, 7, bytes);
  stream.view().copy(b, a, bytes, CopyKind::device_to_device);
  CapturedGraph graph = stream.view().end_capture();
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::none);
  EXPECT_GE(graph.node_count(), 2U);
  std::vector<unsigned char> host(bytes, 1);
  stream.view().copy(host.data(), b, bytes, CopyKind::device_to_host);
  EXPECT_EQ(host[100], 0);  // captured, not run
  GraphExec exec = graph.instantiate();
  for (int i = 0; i < 3; ++i) exec.launch(stream);
  stream.view().copy(host.data(), b, bytes, CopyKind::device_to_host);
  EXPECT_EQ(host[100], 7);
  stream.synchronize();
  device_.impl().deallocate(a, bytes);
  device_.impl().deallocate(b, bytes);
}

TEST_P(GraphBackendTest, SynchronisingACapturingStreamFailsAndInvalidatesTheCapture) {
  Stream stream(device_);
  stream.view().begin_capture();
  try {
    stream.synchronize();
    ADD_FAILURE() << "cudaStreamSynchronize during capture must fail";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.error_name(), "cudaErrorStreamCaptureUnsupported") << e.what();
  }
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::invalidated);
  try {
    (void)stream.view().end_capture();
    ADD_FAILURE() << "ending an invalidated capture must fail";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.error_name(), "cudaErrorStreamCaptureInvalidated") << e.what();
  }
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::none);
}

TEST_P(GraphBackendTest, CudaMallocInAGlobalCaptureFailsUnlessTheThreadIsRelaxed) {
  Stream stream(device_);
  stream.view().begin_capture(CaptureMode::global);
  void* ptr = nullptr;
  {
    const CaptureModeGuard relaxed(device_, CaptureMode::relaxed);
    ptr = device_.impl().allocate(bytes);
    EXPECT_NE(ptr, nullptr);
  }
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::active);
  EXPECT_THROW((void)device_.impl().allocate(bytes), CudaError);
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::invalidated);
  EXPECT_THROW((void)stream.view().end_capture(), CudaError);
  device_.impl().deallocate(ptr, bytes);  // after the capture: cudaFree synchronises the device
}

INSTANTIATE_TEST_SUITE_P(Backends, GraphBackendTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
