// SPDX-License-Identifier: Apache-2.0
// DeviceTensor: creation, metadata, sharing, views, host copies, bad input.

#include <chrono>
#include <cstdint>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/errors.hpp>
#include <gpulife/runtime/launch.hpp>
#include <gpulife/tensor/weak_tensor.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class DeviceTensorTest : public testing::BackendContextTest {};

std::vector<float> iota(std::size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0F);
  return v;
}

TEST_P(DeviceTensorTest, EmptyHasShapeDtypeAndMemory) {
  Stream stream(device_);
  DeviceTensor t = ctx().empty({2, 3, 4}, DType::f32, stream, "activations");
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.shape(), Shape({2, 3, 4}));
  EXPECT_EQ(t.strides(), Shape({12, 4, 1}));
  EXPECT_EQ(t.rank(), 3U);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.bytes(), 96U);
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.tag(), "activations");
  EXPECT_EQ(t.stream(), stream.view());
  EXPECT_EQ(t.device(), device_);
  EXPECT_NE(t.data(), nullptr);
  EXPECT_EQ(t.data<float>(), t.data());
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_FALSE(t.is_view());
  EXPECT_EQ(ctx().statistics().live_tensors, 1U);
  EXPECT_EQ(ctx().statistics().live_bytes, 96U);
}

TEST_P(DeviceTensorTest, UploadAndDownloadRoundTrip) {
  const auto host = iota(1000);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {10, 100});
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_EQ(t.to_host<float>(), host);
}

TEST_P(DeviceTensorTest, IdsAreUnique) {
  std::set<std::uint64_t> ids;
  for (int i = 0; i < 100; ++i) ids.insert(ctx().empty({4}, DType::u8).id());
  EXPECT_EQ(ids.size(), 100U);
}

TEST_P(DeviceTensorTest, CopySharesMoveTransfersAndTheLastDropReleases) {
  DeviceTensor a = ctx().empty({256}, DType::f32);
  EXPECT_EQ(a.use_count(), 1);
  DeviceTensor b = a;
  EXPECT_EQ(a.use_count(), 2);
  EXPECT_EQ(a, b);
  DeviceTensor c = std::move(b);
  EXPECT_FALSE(b.defined());  // NOLINT(bugprone-use-after-move): checks the moved-from state
  EXPECT_EQ(c.use_count(), 2);
  a.reset();
  EXPECT_EQ(c.use_count(), 1);
  EXPECT_EQ(ctx().statistics().live_tensors, 1U);
  c.reset();
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  EXPECT_EQ(ctx().statistics().resource.bytes_in_use, 0U);
}

TEST_P(DeviceTensorTest, ViewsShareMemoryAndKeepItAlive) {
  const auto host = iota(24);
  DeviceTensor t = ctx().upload(std::span<const float>(host), {4, 6});
  DeviceTensor rows = t.slice(0, 1, 3);
  EXPECT_TRUE(rows.is_view());
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.shape(), Shape({2, 6}));
  EXPECT_EQ(rows.data<float>(), t.data<float>() + 6);
  DeviceTensor flat = rows.view({12});
  EXPECT_EQ(flat.shape(), Shape({12}));
  WeakTensor weak_root = t;
  t.reset();
  rows.reset();
  EXPECT_FALSE(weak_root.expired()) << "the view keeps the memory's owner alive";
  const auto got = flat.to_host<float>();
  EXPECT_EQ(got, std::vector<float>(host.begin() + 6, host.begin() + 18));
  EXPECT_EQ(ctx().statistics().live_tensors, 2U);  // the root and the last view
  flat.reset();
  EXPECT_TRUE(weak_root.expired());
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(DeviceTensorTest, ColumnSliceIsNotContiguous) {
  DeviceTensor t = ctx().empty({4, 6}, DType::f32);
  DeviceTensor cols = t.slice(1, 2, 4);
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.strides(), Shape({6, 1}));
  EXPECT_EQ(cols.bytes(), (3 * 6 + 1 + 1) * sizeof(float));
  EXPECT_THROW((void)cols.view({8}), std::invalid_argument);
  std::vector<std::byte> host(cols.bytes());
  EXPECT_THROW(cols.download(host), std::invalid_argument);
}

TEST_P(DeviceTensorTest, ZeroExtentTensorHasNoMemory) {
  DeviceTensor t = ctx().empty({0, 5}, DType::f64);
  EXPECT_EQ(t.bytes(), 0U);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_TRUE(t.to_host<double>().empty());
}

TEST_P(DeviceTensorTest, TypedAccessIsCheckedAgainstTheDtype) {
  DeviceTensor t = ctx().empty({8}, DType::f16);
  EXPECT_NO_THROW((void)t.data<Half>());
  try {
    (void)t.data<float>();
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("holds f16, not f32"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)t.data<BFloat16>(), std::invalid_argument);
}

TEST_P(DeviceTensorTest, EmptyHandleThrowsClearly) {
  DeviceTensor moved_from = ctx().empty({4}, DType::f32);
  DeviceTensor taker = std::move(moved_from);
  try {
    (void)moved_from.data();  // NOLINT(bugprone-use-after-move): the point of the test
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("moved-from"), std::string::npos);
  }
  EXPECT_EQ(moved_from.use_count(), 0);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW((void)DeviceTensor{}.shape(), std::invalid_argument);
  EXPECT_THROW(DeviceTensor{}.record_stream(device_.default_stream()), std::invalid_argument);
}

TEST_P(DeviceTensorTest, BadUploadsAndSlicesAreRejectedAndLeaveNothing) {
  const auto host = iota(10);
  EXPECT_THROW((void)ctx().upload(std::span<const float>(host), {11}), std::invalid_argument);
  EXPECT_THROW((void)ctx().upload(std::span<const std::byte>(), {4}, DType::f32),
               std::invalid_argument);
  EXPECT_THROW((void)Shape({-1, 2}), std::invalid_argument);
  EXPECT_THROW((void)Shape({1, 1, 1, 1, 1, 1, 1, 1, 1}), std::invalid_argument);
  DeviceTensor t = ctx().empty({4, 4}, DType::f32);
  EXPECT_THROW((void)t.slice(2, 0, 1), std::invalid_argument);
  EXPECT_THROW((void)t.slice(0, 3, 5), std::invalid_argument);
  EXPECT_THROW((void)t.slice(0, 2, 1), std::invalid_argument);
  EXPECT_THROW((void)t.view({5, 3}), std::invalid_argument);
  std::vector<std::byte> small(3);
  EXPECT_THROW(t.download(small), std::invalid_argument);
  Device other = Device::sim();
  Stream foreign(other);
  EXPECT_THROW((void)ctx().empty({4}, DType::f32, foreign), std::invalid_argument);
  EXPECT_THROW(t.record_stream(foreign), std::invalid_argument);
  EXPECT_EQ(ctx().statistics().live_tensors, 1U);
}

TEST_P(DeviceTensorTest, OutOfMemoryNamesWhatIsAlive) {
  if (!on_sim()) GTEST_SKIP() << "sim only: a small simulated device makes out-of-memory cheap";
  // The sim backs its memory with host memory: a small device keeps the test light.
  Context small({.device = Device::sim({.capacity_bytes = std::size_t{64} << 20})});
  DeviceTensor big = small.empty({std::int64_t{40} << 20}, DType::u8, {}, "big");
  try {
    (void)small.empty({std::int64_t{40} << 20}, DType::u8);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("live tensors: 1 holding 40.00 MiB"), std::string::npos) << message;
  }
}

TEST_P(DeviceTensorTest, ControlBlockIsSmall) {
  // Host metadata per tensor: the control block (a slab slot), nothing else on the hot path.
  std::printf("sizeof(DeviceTensor) = %zu, sizeof(TensorImpl) = %zu\n", sizeof(DeviceTensor),
              sizeof(detail::TensorImpl));
  EXPECT_EQ(sizeof(DeviceTensor), sizeof(void*));
  EXPECT_LE(sizeof(detail::TensorImpl), 320U);
}

}  // namespace
}  // namespace gpulife

namespace gpulife {
namespace {

class WrapTest : public testing::BackendContextTest {};

TEST_P(WrapTest, WrappedMemoryIsGivenBackByItsOwnerOnlyAtTheRealRelease) {
  void* foreign = device_.impl().allocate(4096);
  int released = 0;
  std::vector<int> order;
  DeviceTensor t = ctx().wrap(foreign, {1024}, {}, DType::f32, {}, [&](const TensorInfo& info) {
    ++released;
    order.push_back(0);
    EXPECT_EQ(info.data, foreign);
  });
  EXPECT_EQ(t.bytes(), 4096U);
  EXPECT_EQ(t.strides(), Shape({1}));
  EXPECT_EQ(ctx().statistics().resource.allocations, 0U) << "gpulife allocated nothing";
  (void)t.on_release([&](const TensorInfo&) { order.push_back(1); });
  DeviceTensor row = t.slice(0, 0, 16);
  t.reset();
  EXPECT_EQ(released, 0);
  row.reset();
  EXPECT_EQ(released, 1);
  EXPECT_EQ(order, (std::vector<int>{1, 0})) << "the owner's release comes last";
  device_.impl().deallocate(foreign, 4096);
}

TEST_P(WrapTest, SurvivesContextShutdownWithoutReleasing) {
  void* foreign = device_.impl().allocate(256);
  int released = 0;
  DeviceTensor t = ctx().wrap(foreign, {64}, {}, DType::i32, {}, [&](const TensorInfo&) { ++released; });
  ctx_.reset();
  (void)take_errors();  // the shutdown report of the live tensor
  EXPECT_EQ(released, 0);
  t.reset();
  EXPECT_EQ(released, 1);
  device_.impl().deallocate(foreign, 256);
}

TEST_P(WrapTest, RecordedStreamsAreOrderedBeforeTheOwnersStreamOrderedRelease) {
  if (!on_sim())
    GTEST_SKIP() << "sim only: a host-code kernel and the simulated device's violation checks";
  // The owner frees in stream order on the tensor's stream as soon as its release runs: the
  // stream must wait there for the reader's kernel, or the kernel would touch freed memory.
  Stream home(device_);
  Stream reader(device_);
  void* foreign = device_.impl().allocate(1024);
  reader.view().memset(foreign, 0, 1024);
  DeviceTensor t = ctx().wrap(foreign, {256}, {}, DType::f32, home, [&](const TensorInfo& info) {
    device_.impl().deallocate_async(const_cast<void*>(info.data), 1024, *home.view().impl());
  });
  testing::Gate gate;
  gate.block(reader);
  auto* out = static_cast<float*>(device_.allocate_pinned(sizeof(float)));
  const float* data = t.data<float>();
  for_each_index(
      reader, 1, [data, out](std::size_t) { *out = std::accumulate(data, data + 256, 1.0F); },
      {{data, 1024}}, "read");
  t.record_stream(reader);
  t.reset();  // the owner's release has run: its free is queued on `home`
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(home.view().query()) << "the free did not wait for the recorded stream";
  gate.open();
  reader.synchronize();
  home.synchronize();
  EXPECT_EQ(*out, 1.0F);
  EXPECT_TRUE(take_violations().empty());
  device_.deallocate_pinned(out);
}

TEST_P(WrapTest, BadArgumentsAreRejected) {
  int dummy = 0;
  auto release = [](const TensorInfo&) {};
  EXPECT_THROW((void)ctx().wrap(nullptr, {4}, {}, DType::f32, {}, release), std::invalid_argument);
  EXPECT_THROW((void)ctx().wrap(&dummy, {4}, {}, DType::f32, {}, {}), std::invalid_argument);
  EXPECT_THROW((void)ctx().wrap(&dummy, {4, 4}, {1}, DType::f32, {}, release),
               std::invalid_argument);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

INSTANTIATE_TEST_SUITE_P(Backends, DeviceTensorTest, testing::backends(), testing::backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, WrapTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
