// SPDX-License-Identifier: Apache-2.0
// Stream capture and graphs on the simulated device: what is captured, how replays are checked,
// and the misuses CUDA refuses during capture, each with CUDA's error (runtime/graph.hpp).

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/graph.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::SimTest;

class SimGraphTest : public SimTest {
 protected:
  static constexpr std::size_t n = 64;

  void SetUp() override { buffer_ = static_cast<float*>(device_.impl().allocate(n * 4)); }
  void TearDown() override {
    if (buffer_ != nullptr) device_.impl().deallocate(buffer_, n * 4);
    SimTest::TearDown();
  }

  /// buffer[i] += 1 as a kernel on `stream`.
  void increment(StreamView stream, float* data) {
    for_each_index(
        stream, n, [data](std::size_t i) { data[i] += 1.0F; },
        {{data, n * 4, Access::read_write}}, "increment");
  }
  /// A kernel that declares a write of `data` but touches nothing: the race detector judges the
  /// order, and the test itself has no data race on the host (for ThreadSanitizer).
  static void touch(StreamView stream, float* data) {
    const MemoryRange range{data, n * 4, Access::read_write};
    stream.impl()->launch_host_kernel("touch", std::span(&range, 1), [] {});
  }
  std::vector<float> read(StreamView stream, const float* data) {
    std::vector<float> host(n);
    stream.copy(host.data(), data, n * 4, CopyKind::device_to_host);
    return host;
  }
  /// Expects `fn` to throw CudaError with `code`.
  template <class Fn>
  static void expect_cuda_error(int code, const char* name, Fn&& fn) {
    try {
      fn();
      ADD_FAILURE() << "expected " << name;
    } catch (const CudaError& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_EQ(e.error_name(), name) << e.what();
    }
  }

  float* buffer_ = nullptr;
};

TEST_F(SimGraphTest, CapturedWorkRunsAtEveryLaunchNotAtCapture) {
  Stream stream(device_);
  stream.view().memset(buffer_, 0, n * 4);
  stream.synchronize();
  stream.view().begin_capture();
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::active);
  EXPECT_NE(stream.view().capture_info().id, 0U);
  increment(stream, buffer_);
  increment(stream, buffer_);
  CapturedGraph graph = stream.view().end_capture();
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::none);
  EXPECT_EQ(graph.node_count(), 2U);
  EXPECT_EQ(read(stream, buffer_)[5], 0.0F);  // nothing ran at capture
  GraphExec exec = graph.instantiate();
  for (int launch = 1; launch <= 3; ++launch) {
    exec.launch(stream);
    EXPECT_EQ(read(stream, buffer_)[5], 2.0F * static_cast<float>(launch));
  }
}

TEST_F(SimGraphTest, CrossStreamCaptureForksAndJoinsThroughEvents) {
  Stream origin(device_), side(device_);
  float* other = static_cast<float*>(device_.impl().allocate(n * 4));
  origin.view().memset(buffer_, 0, n * 4);
  origin.view().memset(other, 0, n * 4);
  origin.synchronize();
  Event fork(device_), join(device_);
  origin.view().begin_capture();
  origin.view().record(fork);
  side.view().wait(fork);  // `side` joins the capture
  EXPECT_EQ(side.view().capture_info().id, origin.view().capture_info().id);
  increment(side, other);
  increment(origin, buffer_);
  side.view().record(join);
  origin.view().wait(join);
  increment(origin, other);  // after side's increment: ordered by the join
  GraphExec exec = origin.view().end_capture().instantiate();
  EXPECT_EQ(side.view().capture_info().status, CaptureStatus::none);
  exec.launch(origin);
  exec.launch(origin);
  EXPECT_EQ(read(origin, buffer_)[0], 2.0F);
  EXPECT_EQ(read(origin, other)[n - 1], 4.0F);
  EXPECT_TRUE(take_violations().empty());
  device_.impl().deallocate(other, n * 4);
}

TEST_F(SimGraphTest, AReplayIsRaceCheckedLikeLiveWork) {
  Stream origin(device_), side(device_);
  origin.view().memset(buffer_, 0, n * 4);
  origin.synchronize();
  Event fork(device_), join(device_);
  origin.view().begin_capture();
  origin.view().record(fork);
  side.view().wait(fork);
  touch(side, buffer_);
  touch(origin, buffer_);  // unordered with side's: a race in every replay
  side.view().record(join);
  origin.view().wait(join);
  GraphExec exec = origin.view().end_capture().instantiate();
  EXPECT_TRUE(take_violations().empty());  // nothing ran, nothing checked at capture
  exec.launch(origin);
  const auto violations = take_violations();
  ASSERT_NE(testing::find_violation(violations, SimViolation::Kind::race), nullptr);
}

TEST_F(SimGraphTest, AReplayAfterItsMemoryWasFreedIsAUseAfterFree) {
  Stream stream(device_);
  stream.view().memset(buffer_, 0, n * 4);
  stream.view().begin_capture();
  increment(stream, buffer_);
  GraphExec exec = stream.view().end_capture().instantiate();
  exec.launch(stream);
  stream.synchronize();
  device_.impl().deallocate(buffer_, n * 4);
  buffer_ = nullptr;
  exec.launch(stream);
  stream.synchronize();
  const auto violations = take_violations();
  ASSERT_NE(testing::find_violation(violations, SimViolation::Kind::use_after_free), nullptr);
}

TEST_F(SimGraphTest, AJoinedStreamThatIsNotJoinedBackFailsTheEnd) {
  Stream origin(device_), side(device_);
  Event fork(device_);
  origin.view().begin_capture();
  origin.view().record(fork);
  side.view().wait(fork);
  increment(side, buffer_);
  expect_cuda_error(904, "cudaErrorStreamCaptureUnjoined", [&] { (void)origin.view().end_capture(); });
  EXPECT_EQ(origin.view().capture_info().status, CaptureStatus::none);
  EXPECT_EQ(side.view().capture_info().status, CaptureStatus::none);
}

TEST_F(SimGraphTest, SynchronisingOrQueryingACapturingStreamInvalidatesTheCapture) {
  Stream stream(device_);
  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported", [&] { stream.synchronize(); });
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::invalidated);
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated", [&] { increment(stream, buffer_); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::none);

  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported", [&] { (void)stream.view().query(); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  // The stream works eagerly again.
  increment(stream, buffer_);
  stream.synchronize();
}

TEST_F(SimGraphTest, QueryingAnEventRecordedInTheCaptureInvalidatesIt) {
  Stream stream(device_);
  Event event(device_);
  stream.view().begin_capture();
  stream.view().record(event);
  expect_cuda_error(907, "cudaErrorCapturedEvent", [&] { (void)event.query(); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  // After the capture the captured record counts as reached.
  EXPECT_TRUE(event.query());
  event.synchronize();
}

TEST_F(SimGraphTest, DeviceSynchronizeDuringCaptureInvalidatesIt) {
  Stream stream(device_);
  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported", [&] { device_.synchronize(); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
}

TEST_F(SimGraphTest, CudaMallocFollowsTheCaptureModes) {
  Stream stream(device_);
  // global (the default): forbidden in the capturing thread
  stream.view().begin_capture(CaptureMode::global);
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported",
                    [&] { (void)device_.impl().allocate(256); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  // ... and in any other thread whose mode is global
  stream.view().begin_capture(CaptureMode::global);
  std::thread([&] {
    expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported",
                      [&] { (void)device_.impl().allocate(256); });
  }).join();
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  // a per-thread capture does not forbid it in other threads
  stream.view().begin_capture(CaptureMode::per_thread);
  std::thread([&] {
    void* ptr = device_.impl().allocate(256);
    device_.impl().deallocate(ptr, 256);
  }).join();
  increment(stream, buffer_);
  EXPECT_EQ(stream.view().end_capture().node_count(), 1U);
  // a relaxed thread mode permits it during the thread's own global capture
  stream.view().begin_capture(CaptureMode::global);
  {
    const CaptureModeGuard relaxed(device_, CaptureMode::relaxed);
    void* ptr = device_.impl().allocate(256);
    device_.impl().deallocate(ptr, 256);
  }
  increment(stream, buffer_);
  EXPECT_EQ(stream.view().end_capture().node_count(), 1U);
  // a relaxed capture forbids nothing
  stream.view().begin_capture(CaptureMode::relaxed);
  void* ptr = device_.impl().allocate(256);
  EXPECT_EQ(stream.view().capture_info().status, CaptureStatus::active);
  (void)stream.view().end_capture();
  device_.impl().deallocate(ptr, 256);
}

TEST_F(SimGraphTest, AForbiddenCudaFreeIsReportedAndFreesNothing) {
  Stream stream(device_);
  void* ptr = device_.impl().allocate(256);
  stream.view().begin_capture(CaptureMode::global);
  device_.impl().deallocate(ptr, 256);  // noexcept: reported, not thrown
  const auto violations = device_.take_violations();  // (the fixture's would synchronise)
  const SimViolation* misuse = testing::find_violation(violations, SimViolation::Kind::api_misuse);
  ASSERT_NE(misuse, nullptr);
  EXPECT_NE(misuse->message().find("cudaErrorStreamCaptureUnsupported"), std::string::npos);
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  device_.impl().deallocate(ptr, 256);  // still allocated: freed now, without a report
}

TEST_F(SimGraphTest, WaitingOnAnEventFromOutsideTheCaptureIsAnIsolationError) {
  Stream stream(device_), other(device_);
  Event outside(device_);
  other.view().record(outside);
  stream.view().begin_capture();
  expect_cuda_error(905, "cudaErrorStreamCaptureIsolation", [&] { stream.view().wait(outside); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
}

TEST_F(SimGraphTest, TwoCapturesCannotMerge) {
  Stream a(device_), b(device_);
  Event in_a(device_);
  a.view().begin_capture();
  b.view().begin_capture();
  a.view().record(in_a);
  expect_cuda_error(902, "cudaErrorStreamCaptureMerge", [&] { b.view().wait(in_a); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated", [&] { (void)a.view().end_capture(); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated", [&] { (void)b.view().end_capture(); });
}

TEST_F(SimGraphTest, BeginAndEndAreChecked) {
  Stream stream(device_), other(device_);
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported",
                    [&] { device_.default_stream().begin_capture(); });
  expect_cuda_error(401, "cudaErrorIllegalState", [&] { (void)stream.view().end_capture(); });
  stream.view().begin_capture();
  expect_cuda_error(401, "cudaErrorIllegalState", [&] { stream.view().begin_capture(); });
  std::thread([&] {
    expect_cuda_error(908, "cudaErrorStreamCaptureWrongThread",
                      [&] { (void)stream.view().end_capture(); });
  }).join();
  Event fork(device_), join(device_);
  stream.view().record(fork);
  other.view().wait(fork);
  expect_cuda_error(903, "cudaErrorStreamCaptureUnmatched", [&] { (void)other.view().end_capture(); });
  other.view().record(join);
  stream.view().wait(join);
  EXPECT_TRUE(stream.view().end_capture().valid());  // still intact after the refused calls
}

TEST_F(SimGraphTest, StreamOrderedAllocationOnACapturingStreamIsRefused) {
  Stream stream(device_);
  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported",
                    [&] { (void)device_.impl().allocate_async(256, *stream.view().impl()); });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
}

TEST_F(SimGraphTest, HostCallbacksAndCopiesAreReplayed) {
  Stream stream(device_);
  int calls = 0;
  auto* host = static_cast<float*>(device_.allocate_pinned(n * 4));
  for (std::size_t i = 0; i < n; ++i) host[i] = 3.0F;
  stream.view().begin_capture();
  stream.view().copy(buffer_, host, n * 4, CopyKind::host_to_device);
  increment(stream, buffer_);
  stream.view().host_callback([&calls] { ++calls; });
  GraphExec exec = stream.view().end_capture().instantiate();
  EXPECT_EQ(calls, 0);
  exec.launch(stream);
  exec.launch(stream);
  stream.synchronize();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(read(stream, buffer_)[7], 4.0F);  // the copy reads the host buffer at each launch
  device_.deallocate_pinned(host);
}

TEST_F(SimGraphTest, CopiesFromOrToPageableMemoryCannotBeCaptured) {
  Stream stream(device_);
  std::vector<float> host(n, 1.0F);
  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported", [&] {
    stream.view().copy(buffer_, host.data(), n * 4, CopyKind::host_to_device);
  });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
  stream.view().begin_capture();
  expect_cuda_error(900, "cudaErrorStreamCaptureUnsupported", [&] {
    stream.view().copy(host.data(), buffer_, n * 4, CopyKind::device_to_host);
  });
  expect_cuda_error(901, "cudaErrorStreamCaptureInvalidated",
                    [&] { (void)stream.view().end_capture(); });
}

}  // namespace
}  // namespace gpulife
