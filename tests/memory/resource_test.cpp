// SPDX-License-Identifier: Apache-2.0
// Tests every memory resource must pass, run over each resource (RMM's pattern): a new resource
// gets them all by adding one line to `resource_kinds`.

#include <algorithm>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/direct_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

struct ResourceKind {
  std::string name;
  std::function<std::shared_ptr<DeviceMemoryResource>(const Device&)> make;
};

std::vector<ResourceKind> resource_kinds() {
  return {
      {"direct", [](const Device& d) { return std::make_shared<DirectResource>(d); }},
      {"async", [](const Device& d) { return std::make_shared<AsyncResource>(d); }},
      {"pool_over_async",
       [](const Device& d) {
         return std::make_shared<PoolResource>(std::make_shared<AsyncResource>(d));
       }},
      {"pool_over_direct",
       [](const Device& d) {
         return std::make_shared<PoolResource>(std::make_shared<DirectResource>(d));
       }},
      // Faults chosen but switched off: the adaptor must then be a transparent pass-through.
      {"fault_over_async",
       [](const Device& d) {
         auto adaptor = std::make_shared<FaultAdaptor>(std::make_shared<AsyncResource>(d),
                                                       FaultOptions{.every_nth = 2});
         adaptor->set_enabled(false);
         return adaptor;
       }},
      {"pool_over_fault_over_direct",
       [](const Device& d) {
         auto adaptor = std::make_shared<FaultAdaptor>(std::make_shared<DirectResource>(d),
                                                       FaultOptions{.probability = 0.5});
         adaptor->set_enabled(false);
         return std::make_shared<PoolResource>(adaptor);
       }},
  };
}

SimOptions small_device() {
  SimOptions options;
  options.capacity_bytes = std::size_t{64} << 20;
  return options;
}

// Every resource on every backend (the CUDA variants skip, saying why, without a GPU).
class ResourceTest
    : public testing::BackendFixture,
      public ::testing::WithParamInterface<std::tuple<ResourceKind, testing::Backend>> {
 protected:
  ResourceTest() : BackendFixture(small_device()) {}
  [[nodiscard]] testing::Backend backend() const override { return std::get<1>(GetParam()); }
  void SetUp() override {
    BackendFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    resource_ = std::get<0>(GetParam()).make(device_);
  }
  void TearDown() override {
    resource_.reset();
    BackendFixture::TearDown();
  }
  std::shared_ptr<DeviceMemoryResource> resource_;
};

TEST_P(ResourceTest, AllocatesAlignedWritableMemory) {
  Stream stream(device_);
  for (std::size_t bytes : {1UL, 255UL, 256UL, 1000UL, 4096UL, 100000UL}) {
    auto* ptr = static_cast<unsigned char*>(resource_->allocate(bytes, stream));
    ASSERT_NE(ptr, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ptr) % 256, 0U);
    stream.view().memset(ptr, 0x5A, bytes);
    std::vector<unsigned char> back(bytes);
    stream.view().copy(back.data(), ptr, bytes, CopyKind::device_to_host);
    EXPECT_EQ(back, std::vector<unsigned char>(bytes, 0x5A));
    resource_->deallocate(ptr, bytes, stream);
  }
}

TEST_P(ResourceTest, ZeroBytesIsNullAndNullDeallocateIsANoOp) {
  EXPECT_EQ(resource_->allocate(0), nullptr);
  resource_->deallocate(nullptr, 0);
  resource_->deallocate(nullptr, 128);
}

TEST_P(ResourceTest, StreamOfAnotherDeviceIsRejected) {
  Device other = Device::sim();
  Stream foreign(other);
  EXPECT_THROW((void)resource_->allocate(256, foreign), std::invalid_argument);
  EXPECT_EQ(resource_->statistics().allocations, 0U);
}

TEST_P(ResourceTest, StatisticsFollowAllocations) {
  void* a = resource_->allocate(1000);
  void* b = resource_->allocate(3000);
  ResourceStatistics stats = resource_->statistics();
  EXPECT_EQ(stats.allocations, 2U);
  EXPECT_GE(stats.bytes_in_use, 4000U);
  EXPECT_GE(stats.peak_bytes_in_use, stats.bytes_in_use);
  resource_->deallocate(a, 1000);
  resource_->deallocate(b, 3000);
  stats = resource_->statistics();
  EXPECT_EQ(stats.deallocations, 2U);
  EXPECT_EQ(stats.bytes_in_use, 0U);
  EXPECT_GE(stats.peak_bytes_in_use, 4000U);
}

TEST_P(ResourceTest, LiveAllocationsNeverOverlap) {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<std::size_t> size(1, 20000);
  struct Live {
    std::uintptr_t begin;
    std::size_t bytes;
  };
  std::vector<Live> live;
  for (int i = 0; i < 400; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const std::size_t bytes = size(rng);
      const auto begin = reinterpret_cast<std::uintptr_t>(resource_->allocate(bytes));
      for (const Live& other : live) {
        ASSERT_TRUE(begin + bytes <= other.begin || other.begin + other.bytes <= begin)
            << "overlap at step " << i;
      }
      live.push_back({begin, bytes});
    } else {
      const std::size_t victim = rng() % live.size();
      resource_->deallocate(reinterpret_cast<void*>(live[victim].begin), live[victim].bytes);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(victim));
    }
  }
  for (const Live& l : live) resource_->deallocate(reinterpret_cast<void*>(l.begin), l.bytes);
}

TEST_P(ResourceTest, OutOfMemoryIsReadableAndLeavesNothingBehind) {
  if (!on_sim()) GTEST_SKIP() << "sim only: a small simulated device makes out-of-memory cheap";
  const std::size_t capacity = device_.memory_info().total_bytes;
  void* half = resource_->allocate(capacity / 2 + 4096);
  try {
    (void)resource_->allocate(capacity / 2 + 4096);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("out of memory"), std::string::npos) << message;
    EXPECT_NE(message.find(device_.name()), std::string::npos) << message;
  }
  EXPECT_GE(resource_->statistics().failed_allocations, 1U);
  resource_->deallocate(half, capacity / 2 + 4096);
  resource_->release_cached();
  device_.synchronize();
  EXPECT_EQ(device_.memory_info().free_bytes, capacity);
  // and the resource still works
  void* again = resource_->allocate(capacity / 2 + 4096);
  resource_->deallocate(again, capacity / 2 + 4096);
}

TEST_P(ResourceTest, UseAfterDeallocateIsCaughtByTheSimulatedDevice) {
  if (!on_sim()) GTEST_SKIP() << "sim only: the simulated device's violation checks";
  Stream stream(device_);
  void* ptr = resource_->allocate(4096, stream);
  resource_->deallocate(ptr, 4096, stream);
  stream.view().memset(ptr, 0, 4096);
  const auto violations = take_violations();
  ASSERT_EQ(violations.size(), 1U);
  EXPECT_EQ(violations[0].kind, SimViolation::Kind::use_after_free);
}

TEST_P(ResourceTest, DeallocateAfterKeepsMemoryForAnotherStreamsWork) {
  Stream home(device_);
  Stream reader(device_);
  void* ptr = resource_->allocate(4096, home);
  home.view().memset(ptr, 1, 4096);
  Event written(device_);
  home.view().record(written);
  reader.view().wait(written);
  testing::Gate gate;
  gate.block(reader);
  auto* pinned = static_cast<unsigned char*>(device_.allocate_pinned(4096));
  reader.view().copy(pinned, ptr, 4096, CopyKind::device_to_host);
  std::vector<Event> after;
  after.emplace_back(device_);
  reader.view().record(after.back());
  // DirectResource's cudaFree waits for the whole device, the reader included: open the gate
  // from another thread so that it can.
  std::jthread opener([&gate] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate.open();
  });
  resource_->deallocate_after(ptr, 4096, home, std::move(after));
  // Reuse on the home stream must not hand the memory to new work before the reader is done.
  void* next = resource_->allocate(4096, home);
  home.view().memset(next, 2, 4096);
  opener.join();
  device_.synchronize();
  EXPECT_EQ(pinned[0], 1);
  EXPECT_EQ(pinned[4095], 1);
  resource_->deallocate(next, 4096, home);
  device_.deallocate_pinned(pinned);
}

INSTANTIATE_TEST_SUITE_P(AllResources, ResourceTest,
                         ::testing::Combine(::testing::ValuesIn(resource_kinds()),
                                            testing::backends()),
                         [](const auto& param_info) {
                           return std::get<0>(param_info.param).name + "_" +
                                  (std::get<1>(param_info.param) == testing::Backend::sim
                                       ? "sim"
                                       : "cuda");
                         });

}  // namespace
}  // namespace gpulife
