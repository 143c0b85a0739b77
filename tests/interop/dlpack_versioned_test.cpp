// SPDX-License-Identifier: Apache-2.0
// DLPack 1.x: the inline DLManagedTensorVersioned overloads over gpulife's unversioned
// exchange, compiled here against the 1.x declarations (the machine's header may be 0.6).

// Before gpulife's header, so that it sees DLPACK_MAJOR_VERSION.
#include "interop/dlpack_v1_shim.h"

#include <gpulife/interop/dlpack.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

/// A DLPack 1.x producer of one tensor in device memory; counts its deleter's calls.
struct VersionedProducer {
  struct Lent {
    DLManagedTensorVersioned managed{};
    VersionedProducer* owner = nullptr;
    std::int64_t shape[1] = {0};
    void* memory = nullptr;
    std::size_t bytes = 0;
  };

  DLManagedTensorVersioned* lend(const std::vector<float>& values) {
    auto* lent = new Lent{};
    lent->owner = this;
    lent->shape[0] = static_cast<std::int64_t>(values.size());
    lent->bytes = values.size() * sizeof(float);
    lent->memory = device.impl().allocate(lent->bytes);
    device.default_stream().copy(lent->memory, values.data(), lent->bytes,
                                 CopyKind::host_to_device);
    device.synchronize();
    lent->managed.version = {DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
    lent->managed.manager_ctx = lent;
    lent->managed.deleter = [](DLManagedTensorVersioned* self) {
      auto* l = static_cast<Lent*>(self->manager_ctx);
      l->owner->device.impl().deallocate(l->memory, l->bytes);
      l->owner->deleted.fetch_add(1);
      delete l;
    };
    DLTensor& dl = lent->managed.dl_tensor;
    dl.data = lent->memory;
    dl.device = to_dlpack_device(device);
    dl.ndim = 1;
    dl.dtype = to_dlpack_dtype(DType::f32);
    dl.shape = lent->shape;
    dl.strides = nullptr;
    return &lent->managed;
  }

  Device device;
  std::atomic<int> deleted{0};
};

class DLPackVersionedTest : public testing::BackendContextTest {
 protected:
  void SetUp() override {
    BackendContextTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    producer_.device = device_;
  }
  VersionedProducer producer_;
};

TEST_P(DLPackVersionedTest, ExportCarriesTheVersionAndNoFlags) {
  const std::vector<float> host{1, 2, 3, 4, 5, 6};
  DeviceTensor t = ctx().upload(std::span<const float>(host), {2, 3});
  int released = 0;
  (void)t.on_release([&](const TensorInfo&) { ++released; });
  DLManagedTensorVersioned* managed = to_dlpack_versioned(t);
  EXPECT_EQ(managed->version.major, static_cast<std::uint32_t>(DLPACK_MAJOR_VERSION));
  EXPECT_EQ(managed->version.minor, static_cast<std::uint32_t>(DLPACK_MINOR_VERSION));
  EXPECT_EQ(managed->flags, 0U);
  EXPECT_EQ(managed->dl_tensor.data, t.data());
  EXPECT_EQ(managed->dl_tensor.ndim, 2);
  EXPECT_EQ(managed->dl_tensor.shape[1], 3);
  EXPECT_EQ(managed->dl_tensor.strides[0], 3);
  t.reset();
  EXPECT_EQ(released, 0) << "the versioned tensor holds the reference";
  managed->deleter(managed);
  EXPECT_EQ(released, 1);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
}

TEST_P(DLPackVersionedTest, ImportCallsTheVersionedDeleterExactlyOnce) {
  DeviceTensor t = from_dlpack(ctx(), producer_.lend({7, 8, 9}));
  EXPECT_EQ(t.to_host<float>(), (std::vector<float>{7, 8, 9}));
  DeviceTensor view = t.view({3});
  t.reset();
  EXPECT_EQ(producer_.deleted.load(), 0);
  view.reset();
  EXPECT_EQ(producer_.deleted.load(), 1);
}

TEST_P(DLPackVersionedTest, ReadOnlyTensorsAndOtherMajorVersionsAreLeftWithTheCaller) {
  DLManagedTensorVersioned* read_only = producer_.lend({1});
  read_only->flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  EXPECT_THROW((void)from_dlpack(ctx(), read_only), std::invalid_argument);
  DLManagedTensorVersioned* future = producer_.lend({1});
  future->version.major = DLPACK_MAJOR_VERSION + 1;
  EXPECT_THROW((void)from_dlpack(ctx(), future), std::invalid_argument);
  EXPECT_EQ(producer_.deleted.load(), 0);
  EXPECT_EQ(ctx().statistics().live_tensors, 0U);
  read_only->deleter(read_only);  // DLPack: on a version mismatch the consumer calls the deleter
  future->deleter(future);
  EXPECT_EQ(producer_.deleted.load(), 2);
}

TEST_P(DLPackVersionedTest, ARoundTripReleasesOnce) {
  const std::vector<float> host{3, 1, 4};
  DeviceTensor t = ctx().upload(std::span<const float>(host), {3});
  int released = 0;
  (void)t.on_release([&](const TensorInfo&) { ++released; });
  DeviceTensor back = from_dlpack(ctx(), to_dlpack_versioned(t));
  EXPECT_EQ(back.data(), t.data());
  EXPECT_EQ(back.to_host<float>(), host);
  t.reset();
  EXPECT_EQ(released, 0);
  back.reset();
  EXPECT_EQ(released, 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, DLPackVersionedTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
