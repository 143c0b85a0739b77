// SPDX-License-Identifier: Apache-2.0
// Stream semantics of the simulated device: order within a stream, events between streams,
// CUDA's host-synchronisation rules for copies, host callbacks, kernels, faults.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/device_guard.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::Gate;
using testing::SimTest;

class SimStreamTest : public SimTest {};

class DelayedSimStreamTest : public SimTest {
 protected:
  DelayedSimStreamTest() : SimTest(testing::delayed_options(11)) {}
};

TEST_F(DelayedSimStreamTest, WorkOnOneStreamRunsInOrder) {
  constexpr std::size_t n = 4096;
  constexpr int rounds = 64;
  Stream stream(device_);
  void* buffer = device_.impl().allocate(n);
  void* out = device_.impl().allocate(n * rounds);
  for (int k = 0; k < rounds; ++k) {
    stream.view().memset(buffer, k, n);
    stream.view().copy(static_cast<unsigned char*>(out) + static_cast<std::size_t>(k) * n, buffer,
                       n, CopyKind::device_to_device);
  }
  std::vector<unsigned char> host(n * rounds);
  stream.view().copy(host.data(), out, host.size(), CopyKind::device_to_host);
  for (int k = 0; k < rounds; ++k) {
    for (std::size_t i = 0; i < n; i += 511) {
      ASSERT_EQ(host[static_cast<std::size_t>(k) * n + i], k) << "round " << k;
    }
  }
  device_.impl().deallocate(buffer, n);
  device_.impl().deallocate(out, n * rounds);
}

TEST_F(SimStreamTest, HostRunsAheadOfTheStream) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  std::atomic<bool> ran{false};
  stream.view().host_callback([&] { ran = true; });
  EXPECT_FALSE(stream.view().query());
  EXPECT_FALSE(ran.load());
  gate.open();
  stream.synchronize();
  EXPECT_TRUE(ran.load());
  EXPECT_TRUE(stream.view().query());
}

TEST_F(SimStreamTest, StreamsDoNotWaitForEachOtherWithoutAnEvent) {
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  std::atomic<bool> b_ran{false};
  b.view().host_callback([&] { b_ran = true; });
  b.synchronize();  // would hang if b waited for a
  EXPECT_TRUE(b_ran.load());
  gate.open();
}

TEST_F(DelayedSimStreamTest, EventWaitOrdersTwoStreams) {
  constexpr std::size_t n = 1 << 16;
  Stream a(device_);
  Stream b(device_);
  Event event(device_);
  void* buffer = device_.impl().allocate(n);
  Gate gate;
  gate.block(a);
  a.view().memset(buffer, 7, n);
  a.view().record(event);
  b.view().wait(event);
  auto* host = static_cast<unsigned char*>(device_.allocate_pinned(n));
  std::memset(host, 0, n);
  b.view().copy(host, buffer, n, CopyKind::device_to_host);  // pinned: asynchronous
  EXPECT_FALSE(b.view().query()) << "b must wait for the event recorded behind the gate";
  EXPECT_FALSE(event.query());
  gate.open();
  b.synchronize();
  EXPECT_TRUE(event.query());
  for (std::size_t i = 0; i < n; i += 997) ASSERT_EQ(host[i], 7);
  device_.deallocate_pinned(host);
  device_.impl().deallocate(buffer, n);
}

TEST_F(SimStreamTest, WaitCapturesTheRecordAtTheTimeOfTheCall) {
  Stream a(device_);
  Stream b(device_);
  Stream c(device_);
  Event event(device_);
  a.view().record(event);
  a.synchronize();
  b.view().wait(event);  // the completed record: no dependency
  Gate gate;
  gate.block(c);
  c.view().record(event);  // re-recorded behind a closed gate
  std::atomic<bool> b_ran{false};
  b.view().host_callback([&] { b_ran = true; });
  b.synchronize();
  EXPECT_TRUE(b_ran.load());
  EXPECT_FALSE(event.query()) << "the event now reflects the latest record";
  gate.open();
  event.synchronize();
  EXPECT_TRUE(event.query());
}

TEST_F(SimStreamTest, NeverRecordedEventIsCompleteAndWaitIsANoOp) {
  Event event(device_);
  EXPECT_TRUE(event.query());
  event.synchronize();
  Stream stream(device_);
  stream.view().wait(event);
  stream.synchronize();
}

TEST_F(SimStreamTest, PageableUploadConsumesTheHostBytesBeforeReturning) {
  constexpr std::size_t n = 1024;
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  void* buffer = device_.impl().allocate(n);
  std::vector<unsigned char> host(n, 42);
  stream.view().copy(buffer, host.data(), n, CopyKind::host_to_device);
  std::fill(host.begin(), host.end(), 0);  // allowed: CUDA staged the pageable source
  gate.open();
  std::vector<unsigned char> back(n);
  stream.view().copy(back.data(), buffer, n, CopyKind::device_to_host);
  // Pageable destination: the copy has completed when the call returns, no synchronize needed.
  EXPECT_EQ(back, std::vector<unsigned char>(n, 42));
  device_.impl().deallocate(buffer, n);
}

TEST_F(SimStreamTest, PinnedCopiesAreAsynchronous) {
  constexpr std::size_t n = 1024;
  Stream stream(device_);
  void* buffer = device_.impl().allocate(n);
  auto* pinned = static_cast<unsigned char*>(device_.allocate_pinned(n));
  std::memset(pinned, 5, n);
  Gate gate;
  gate.block(stream);
  stream.view().copy(buffer, pinned, n, CopyKind::host_to_device);
  std::memset(pinned, 6, n);  // the copy has not run yet: it reads the new bytes
  gate.open();
  std::vector<unsigned char> back(n);
  stream.view().copy(back.data(), buffer, n, CopyKind::device_to_host);
  EXPECT_EQ(back, std::vector<unsigned char>(n, 6));
  // ... and the sim reports the host's write as a race with the queued copy.
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::race);
  EXPECT_EQ(violations[0].operation, "host write to a pinned buffer");
  EXPECT_EQ(violations[0].other_operation, "copy host_to_device (reads)");
  EXPECT_EQ(violations[0].other_stream_id, stream.id());
  device_.deallocate_pinned(pinned);
  device_.impl().deallocate(buffer, n);
}

TEST_F(SimStreamTest, ReadOfFreedMemoryIsCaught) {
  constexpr std::size_t n = 4096;
  Stream stream(device_);
  void* buffer = device_.impl().allocate(n);
  device_.impl().deallocate(buffer, n);
  std::vector<unsigned char> host(n);
  stream.view().copy(host.data(), buffer, n, CopyKind::device_to_host);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
  EXPECT_EQ(violations[0].stream_id, stream.id());
  EXPECT_NE(violations[0].message().find("use after free"), std::string::npos);
}

TEST_F(SimStreamTest, FreedMemoryIsPoisoned) {
  constexpr std::size_t n = 4096;
  auto* buffer = static_cast<unsigned char*>(device_.impl().allocate(n));
  device_.default_stream().memset(buffer, 1, n);
  device_.impl().deallocate(buffer, n);
  // Host code may look at sim memory: a stale pointer sees the poison, not the old bytes.
  EXPECT_EQ(buffer[0], 0xDB);
  EXPECT_EQ(buffer[n - 1], 0xDB);
}

TEST_F(SimStreamTest, StreamOrderedFreeWaitsForEarlierWork) {
  constexpr std::size_t n = 1 << 20;
  Stream stream(device_);
  const std::size_t free_before = device_.memory_info().free_bytes;
  void* buffer = device_.impl().allocate_async(n, *stream.view().impl());
  Gate gate;
  gate.block(stream);
  stream.view().memset(buffer, 3, n);
  device_.impl().deallocate_async(buffer, n, *stream.view().impl());
  EXPECT_EQ(device_.memory_info().free_bytes, free_before - n) << "freed before the stream got there";
  gate.open();
  stream.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, free_before);
  EXPECT_TRUE(take_violations().empty()) << "the memset ran before the free took effect";
}

TEST_F(SimStreamTest, AsyncAllocationIsLiveOnlyInStreamOrder) {
  constexpr std::size_t n = 4096;
  Stream a(device_);
  Stream b(device_);
  Gate gate;
  gate.block(a);
  void* buffer = device_.impl().allocate_async(n, *a.view().impl());
  b.view().memset(buffer, 0, n);  // b never waited for a's allocation
  b.synchronize();
  gate.open();
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 2U);
  // found when the memset was queued: nothing orders it after the allocation
  const SimViolation* race = testing::find_violation(violations, SimViolation::Kind::race);
  ASSERT_NE(race, nullptr);
  EXPECT_EQ(race->other_operation, "cudaMallocAsync (allocates)");
  // and when it ran: the allocation had not reached it
  EXPECT_NE(testing::find_violation(violations, SimViolation::Kind::unallocated), nullptr);
  device_.impl().deallocate_async(buffer, n, *a.view().impl());
}

TEST_F(SimStreamTest, KernelRangesAreCheckedWhenTheKernelRuns) {
  constexpr std::size_t n = 256;
  auto* data = static_cast<int*>(device_.impl().allocate(n * sizeof(int)));
  Stream stream(device_);
  for_each_index(stream, n, [data](std::size_t i) { data[i] = static_cast<int>(i); },
                 {{data, n * sizeof(int)}}, "iota");
  std::vector<int> host(n);
  stream.view().copy(host.data(), data, n * sizeof(int), CopyKind::device_to_host);
  std::vector<int> expected(n);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(host, expected);

  std::atomic<bool> ran{false};
  for_each_index(stream, 1, [&ran](std::size_t) { ran = true; },
                 {{data, (n + 1) * sizeof(int)}}, "overrun");
  auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::out_of_bounds);
  EXPECT_EQ(violations[0].operation, "kernel overrun");
  EXPECT_FALSE(ran.load()) << "a kernel with a bad range must not touch memory";

  int on_host = 0;
  for_each_index(stream, 1, [](std::size_t) {}, {{&on_host, sizeof on_host}}, "host pointer");
  violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::unallocated);
  device_.impl().deallocate(data, n * sizeof(int));
}

TEST_F(SimStreamTest, ExceptionInAHostCallbackIsReportedAndTheStreamGoesOn) {
  Stream stream(device_);
  stream.view().host_callback([] { throw std::runtime_error("boom"); });
  std::atomic<bool> ran{false};
  stream.view().host_callback([&] { ran = true; });
  stream.synchronize();
  EXPECT_TRUE(ran.load());
  const auto errors = take_errors();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].find("boom"), std::string::npos);
}

TEST_F(SimStreamTest, DestroyedStreamStillRunsItsQueuedWork) {
  std::atomic<bool> ran{false};
  Gate gate;
  {
    Stream stream(device_);
    gate.block(stream);
    stream.view().host_callback([&] { ran = true; });
  }
  gate.open();
  device_.synchronize();
  EXPECT_TRUE(ran.load());
}

TEST_F(SimStreamTest, EmptyStreamViewAndNullPointersAreRejected) {
  StreamView empty;
  EXPECT_THROW(empty.synchronize(), std::invalid_argument);
  Stream stream(device_);
  int host = 0;
  EXPECT_THROW(stream.view().copy(nullptr, &host, 4, CopyKind::host_to_device),
               std::invalid_argument);
  EXPECT_THROW(stream.view().memset(nullptr, 0, 4), std::invalid_argument);
  EXPECT_THROW(stream.view().record(Event{}), std::invalid_argument);
  stream.view().copy(nullptr, nullptr, 0, CopyKind::host_to_device);  // zero bytes: nothing to do
}

TEST_F(SimStreamTest, EventOfAnotherDeviceCanBeWaitedForButNotRecorded) {
  // CUDA's programming guide: cudaEventRecord fails for an event and a stream of different
  // devices; cudaStreamWaitEvent succeeds.
  Device other = Device::sim();
  Event foreign(other);
  Stream stream(device_);
  EXPECT_THROW(stream.view().record(foreign), std::invalid_argument);
  Stream there(other);
  Gate gate;
  gate.block(there);
  there.view().record(foreign);
  stream.view().wait(foreign);
  std::atomic<bool> ran{false};
  stream.view().host_callback([&] { ran = true; });
  EXPECT_FALSE(stream.view().query()) << "the wait holds the stream until the other device's work";
  gate.open();
  stream.synchronize();
  EXPECT_TRUE(ran.load());
}

TEST_F(SimStreamTest, ALaunchNeedsTheStreamsDeviceCurrentAndForEachIndexMakesItSo) {
  // CUDA's programming guide, "Stream and Event Behavior": a kernel launch fails on a stream of
  // a device that is not current; a memory copy succeeds.
  const Device other = Device::sim({.on_violation = [](const SimViolation&) {}});
  Stream stream(device_);
  auto* data = static_cast<int*>(device_.impl().allocate(64 * sizeof(int)));
  {
    const DeviceGuard elsewhere(other);
    const MemoryRange range{data, 64 * sizeof(int), Access::write};
    EXPECT_THROW(stream.view().impl()->launch_host_kernel("raw", std::span(&range, 1), [] {}),
                 CudaError);
    const auto violations = take_violations();
    ASSERT_EQ(violations.size(), 1U);
    EXPECT_EQ(violations[0].kind, SimViolation::Kind::api_misuse);
    // for_each_index holds a DeviceGuard for its launch, as on CUDA, and restores `other`.
    for_each_index(stream, 64, [data](std::size_t i) { data[i] = 1; },
                   {{data, 64 * sizeof(int), Access::write}}, "guarded");
    stream.view().memset(data, 0, 64 * sizeof(int));  // copies and memsets need no current device
    EXPECT_THROW(stream.view().impl()->launch_host_kernel("raw", std::span(&range, 1), [] {}),
                 CudaError)
        << "the guard restored the other device";
    EXPECT_EQ(take_violations().size(), 1U);
  }
  const MemoryRange range{data, 64 * sizeof(int), Access::write};
  stream.view().impl()->launch_host_kernel("raw", std::span(&range, 1), [] {});  // none current
  device_.impl().deallocate(data, 64 * sizeof(int));
}

TEST_F(SimStreamTest, ACudaCallInsideAHostFunctionIsAViolation) {
  Stream stream(device_);
  auto* data = device_.impl().allocate(256);
  stream.view().host_callback([&] { stream.view().memset(data, 0, 256); });
  stream.synchronize();
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::api_misuse);
  EXPECT_EQ(violations[0].operation, "cudaMemsetAsync");
  device_.impl().deallocate(data, 256);
}

TEST_F(SimStreamTest, SerialisedHostFunctionsRunOneAtATime) {
  const Device device = Device::sim({.serialize_host_functions = true});
  Stream a(device);
  Stream b(device);
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  auto fn = [&] {
    const int now = ++running;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    --running;
  };
  for (int i = 0; i < 10; ++i) {
    a.view().host_callback(fn);
    b.view().host_callback(fn);
  }
  device.synchronize();
  EXPECT_EQ(most.load(), 1);
}

class FaultySimStreamTest : public SimTest {
 protected:
  static SimOptions faulty() {
    SimOptions options;
    options.faults.every_nth = 3;
    return options;
  }
  FaultySimStreamTest() : SimTest(faulty()) {}
};

TEST_F(FaultySimStreamTest, InjectedFaultsThrowCudaLikeErrorsAndHaveNoEffect) {
  constexpr std::size_t n = 64;
  void* buffer = device_.impl().allocate(n);
  Stream stream(device_);
  stream.view().memset(buffer, 1, n);  // call 1
  stream.view().memset(buffer, 2, n);  // call 2
  try {
    stream.view().memset(buffer, 3, n);  // call 3 fails
    FAIL() << "expected an injected fault";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.error_name(), "cudaErrorInvalidValue");
    EXPECT_EQ(e.call(), "cudaMemsetAsync");
    EXPECT_NE(std::string(e.what()).find("fault injected"), std::string::npos);
  }
  std::vector<unsigned char> host(n);
  stream.view().copy(host.data(), buffer, n, CopyKind::device_to_host);  // call 4
  EXPECT_EQ(host, std::vector<unsigned char>(n, 2));
  device_.impl().deallocate(buffer, n);
}

TEST_F(FaultySimStreamTest, FaultsCanBeSwitchedOffAndChangedAtRunTime) {
  constexpr std::size_t n = 64;
  void* buffer = device_.impl().allocate(n);
  Stream stream(device_);
  EXPECT_TRUE(device_.faults_enabled());
  device_.set_faults_enabled(false);
  for (int i = 0; i < 10; ++i) stream.view().memset(buffer, i, n);  // none fails
  EXPECT_EQ(device_.injected_faults(), 0U);
  device_.set_faults_enabled(true);
  stream.view().memset(buffer, 1, n);  // the count went on: call 1, 2
  stream.view().memset(buffer, 1, n);
  EXPECT_THROW(stream.view().memset(buffer, 1, n), CudaError);  // call 3
  EXPECT_EQ(device_.injected_faults(), 1U);

  // New faults: stream operations only, every second call; the count restarts.
  device_.set_faults({.every_nth = 2,
                      .copies = false,
                      .memsets = false,
                      .kernels = false,
                      .stream_operations = true});
  stream.view().memset(buffer, 1, n);  // not eligible
  Event event(device_);
  stream.view().record(event);  // call 1
  try {
    stream.view().wait(event);  // call 2
    FAIL() << "expected an injected fault";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.call(), "cudaStreamWaitEvent");
    EXPECT_NE(std::string(e.what()).find("fault injected"), std::string::npos) << e.what();
  }
  EXPECT_EQ(device_.injected_faults(), 2U);
  EXPECT_THROW(device_.set_faults({.probability = 1.5}), std::invalid_argument);
  device_.set_faults({});
  stream.synchronize();
  device_.impl().deallocate(buffer, n);
}

TEST(SimFaults, AllocationFaultsAreOutOfMemoryWithTheRequestedSize) {
  Device device = Device::sim({.faults = {.every_nth = 1, .allocations = true}});
  try {
    (void)device.impl().allocate(3000);
    FAIL() << "expected an injected fault";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(e.requested_bytes(), 3000U);
    EXPECT_NE(std::string(e.what()).find("fault injected"), std::string::npos) << e.what();
  }
  EXPECT_EQ(device.memory_info().free_bytes, device.memory_info().total_bytes);
  EXPECT_THROW((void)Device::sim({.faults = {.probability = -1.0}}), std::invalid_argument);
}

}  // namespace
}  // namespace gpulife
