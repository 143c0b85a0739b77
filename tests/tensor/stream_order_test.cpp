// SPDX-License-Identifier: Apache-2.0
// The release of a tensor's memory is stream-ordered: it waits for the work queued on the
// tensor's stream and, with record_stream, on other streams; and the simulated device catches
// the use-after-free when a stream that uses the tensor was not recorded.

#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/context_test.hpp"

namespace gpulife {
namespace {

using testing::ContextTest;
using testing::Gate;

class TensorStreamOrderTest : public ContextTest {
 protected:
  /// Queues, on `stream`, a kernel that sums the tensor into `out` (pinned host memory).
  static void sum_into(StreamView stream, const DeviceTensor& t, float* out) {
    const float* data = t.data<float>();
    const auto n = static_cast<std::size_t>(t.numel());
    for_each_index(
        stream, 1,
        [data, n, out](std::size_t) {
          float sum = 0;
          for (std::size_t i = 0; i < n; ++i) sum += data[i];
          *out = sum;
        },
        {{data, n * sizeof(float), Access::read}}, "sum");
  }
};

TEST_F(TensorStreamOrderTest, ReleaseWaitsForWorkOnTheTensorsStream) {
  Stream stream(device_);
  Gate gate;
  gate.block(stream);
  auto* out = static_cast<float*>(device_.allocate_pinned(sizeof(float)));
  {
    const std::vector<float> host(1024, 1.0F);
    DeviceTensor t = ctx().upload(std::span<const float>(host), {1024}, stream);
    sum_into(stream, t, out);
  }  // dropped while the stream is still held at the gate
  gate.open();
  stream.synchronize();
  EXPECT_EQ(*out, 1024.0F);
  EXPECT_TRUE(take_violations().empty());
  device_.deallocate_pinned(out);
}

TEST_F(TensorStreamOrderTest, RecordStreamMakesTheDropSafeForAnotherStreamsKernel) {
  Stream home(device_);
  Stream reader(device_);
  auto* out = static_cast<float*>(device_.allocate_pinned(sizeof(float)));
  Gate gate;
  {
    const std::vector<float> host(1024, 2.0F);
    DeviceTensor t = ctx().upload(std::span<const float>(host), {1024}, home);
    Event uploaded(device_);
    home.view().record(uploaded);
    reader.view().wait(uploaded);
    gate.block(reader);
    sum_into(reader, t, out);
    t.record_stream(reader);
  }  // the last handle drops while the reader's kernel has not run yet
  // The home stream does not wait for the reader: the release adds no dependency.
  home.synchronize();
  gate.open();
  reader.synchronize();
  EXPECT_EQ(*out, 2048.0F);
  EXPECT_TRUE(take_violations().empty());
  device_.deallocate_pinned(out);
}

TEST_F(TensorStreamOrderTest, WithoutRecordStreamTheSimulatedDeviceCatchesTheUseAfterFree) {
  Stream home(device_);
  Stream reader(device_);
  auto* out = static_cast<float*>(device_.allocate_pinned(sizeof(float)));
  Gate gate;
  {
    const std::vector<float> host(1024, 2.0F);
    DeviceTensor t = ctx().upload(std::span<const float>(host), {1024}, home, "weights");
    Event uploaded(device_);
    home.view().record(uploaded);
    reader.view().wait(uploaded);
    gate.block(reader);
    sum_into(reader, t, out);
    // missing: t.record_stream(reader)
  }
  home.synchronize();  // the free has executed on the home stream
  gate.open();
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 2U);
  // Found when the release was queued, whatever the timing: the free on the home stream is not
  // ordered after the reader's kernel.
  const SimViolation* race = testing::find_violation(violations, SimViolation::Kind::race);
  ASSERT_NE(race, nullptr);
  EXPECT_EQ(race->operation, "sub-allocation free (frees)");
  EXPECT_EQ(race->stream_id, home.id());
  EXPECT_EQ(race->other_operation, "kernel sum (reads)");
  EXPECT_EQ(race->other_stream_id, reader.id());
  EXPECT_NE(race->other_site.find("stream_order_test.cpp"), std::string::npos);
  // And when the kernel ran, here after the free: the memory was dead.
  const SimViolation* dead = testing::find_violation(violations, SimViolation::Kind::use_after_free);
  ASSERT_NE(dead, nullptr);
  EXPECT_EQ(dead->operation, "kernel sum");
  EXPECT_EQ(dead->stream_id, reader.id());
  device_.deallocate_pinned(out);
}

TEST_F(TensorStreamOrderTest, MemoryIsReusedAfterTheRecordedStreamIsDone) {
  Stream home(device_);
  Stream reader(device_);
  Gate gate;
  void* first = nullptr;
  {
    DeviceTensor t = ctx().empty({4096}, DType::u8, home);
    first = t.data();
    gate.block(reader);
    t.record_stream(reader);
  }
  DeviceTensor while_reading = ctx().empty({4096}, DType::u8, home);
  EXPECT_NE(while_reading.data(), first) << "reused while the recorded stream was not done";
  gate.open();
  reader.synchronize();
  // Once the recorded stream is done the block is free again: trimming gives back the whole
  // segment it and `while_reading`'s block came from, once that one goes too.
  while_reading.reset();
  EXPECT_GT(ctx().resource().release_cached(), 0U);
  EXPECT_EQ(ctx().statistics().resource.bytes_cached, 0U) << "the recorded block was kept aside";
}

}  // namespace
}  // namespace gpulife
