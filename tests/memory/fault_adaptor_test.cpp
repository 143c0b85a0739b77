// SPDX-License-Identifier: Apache-2.0
// What only the fault adaptor does: which allocations it fails, how it says so, and that a
// failure leaves nothing behind, alone and under a pool. Every resource test runs over it too
// (resource_test.cpp), with its faults switched off. The adaptor injects its failures above any
// device, so these run on every backend.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/backend_test.hpp"

namespace gpulife {
namespace {

class FaultAdaptorTest : public testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    upstream_ = std::make_shared<AsyncResource>(device_);
  }
  void TearDown() override {
    upstream_.reset();
    BackendTest::TearDown();
  }

  /// Allocates `count` times; true where the allocation failed. Frees what succeeded.
  static std::vector<bool> pattern(DeviceMemoryResource& resource, int count) {
    std::vector<bool> failed;
    for (int i = 0; i < count; ++i) {
      try {
        void* ptr = resource.allocate(512);
        resource.deallocate(ptr, 512);
        failed.push_back(false);
      } catch (const OutOfMemoryError&) {
        failed.push_back(true);
      }
    }
    return failed;
  }

  std::shared_ptr<AsyncResource> upstream_;
};

TEST_P(FaultAdaptorTest, FailsEveryNthAllocation) {
  FaultAdaptor adaptor(upstream_, {.every_nth = 3});
  EXPECT_EQ(pattern(adaptor, 7),
            (std::vector<bool>{false, false, true, false, false, true, false}));
  EXPECT_EQ(adaptor.injected_failures(), 2U);
  EXPECT_EQ(upstream_->statistics().allocations, 5U) << "failed requests never reach upstream";
}

TEST_P(FaultAdaptorTest, ProbabilityIsSeededAndRepeatable) {
  FaultAdaptor a(upstream_, {.probability = 0.3, .seed = 11});
  FaultAdaptor b(upstream_, {.probability = 0.3, .seed = 11});
  FaultAdaptor c(upstream_, {.probability = 0.3, .seed = 12});
  const std::vector<bool> first = pattern(a, 200);
  EXPECT_EQ(pattern(b, 200), first);
  EXPECT_NE(pattern(c, 200), first);
  const auto failures = static_cast<std::uint64_t>(std::count(first.begin(), first.end(), true));
  EXPECT_EQ(a.injected_failures(), failures);
  EXPECT_GT(failures, 30U);
  EXPECT_LT(failures, 90U);
  // set_options restarts the sequence
  a.set_options({.probability = 0.3, .seed = 11});
  EXPECT_EQ(pattern(a, 200), first);
}

TEST_P(FaultAdaptorTest, TheFailureSaysItWasInjectedAndIsCounted) {
  FaultAdaptor adaptor(upstream_, {.every_nth = 1});
  try {
    (void)adaptor.allocate(4096);
    FAIL() << "expected an injected failure";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("fault injected"), std::string::npos) << message;
    EXPECT_NE(message.find("fault(async)"), std::string::npos) << message;
    EXPECT_EQ(e.requested_bytes(), 4096U);
  }
  const ResourceStatistics stats = adaptor.statistics();
  EXPECT_EQ(stats.failed_allocations, 1U);
  EXPECT_EQ(stats.allocations, 0U);
  EXPECT_EQ(stats.bytes_in_use, 0U);
  EXPECT_EQ(adaptor.name(), "fault(async)");
}

TEST_P(FaultAdaptorTest, DisabledItPassesEverythingThrough) {
  FaultAdaptor adaptor(upstream_, {.every_nth = 1});
  adaptor.set_enabled(false);
  EXPECT_FALSE(adaptor.enabled());
  EXPECT_EQ(pattern(adaptor, 5), std::vector<bool>(5, false));
  adaptor.set_enabled(true);
  EXPECT_EQ(pattern(adaptor, 2), std::vector<bool>(2, true));
  EXPECT_EQ(adaptor.injected_failures(), 2U);
}

TEST_P(FaultAdaptorTest, MemoryFromItIsTheUpstreams) {
  FaultAdaptor adaptor(upstream_);
  FaultAdaptor other(upstream_);
  EXPECT_TRUE(adaptor.is_equal(*upstream_));
  EXPECT_TRUE(adaptor.is_equal(other));
  EXPECT_FALSE(adaptor.is_equal(AsyncResource(device_)));
  void* ptr = adaptor.allocate(1000);
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 1000U);
  EXPECT_EQ(adaptor.statistics().bytes_in_use, 1000U);
  upstream_->deallocate(ptr, 1000);  // equal resources free each other's memory
  EXPECT_EQ(adaptor.statistics().bytes_in_use, 0U);
}

TEST_P(FaultAdaptorTest, UnderAPoolASingleFailureIsRetriedAndNothingLeaks) {
  auto adaptor = std::make_shared<FaultAdaptor>(upstream_, FaultOptions{.every_nth = 2});
  PoolResource pool(adaptor);
  void* a = pool.allocate(1000);     // call 1: a small segment
  void* b = pool.allocate(3 << 20);  // call 2 (a large segment) fails; the pool retries: call 3
  EXPECT_EQ(adaptor->injected_failures(), 1U);
  pool.deallocate(a, 1000);
  pool.deallocate(b, 3 << 20);
  adaptor->set_options({.every_nth = 1});
  EXPECT_THROW((void)pool.allocate(64 << 20), OutOfMemoryError);  // no cached block fits
  EXPECT_EQ(pool.statistics().failed_allocations, 1U);
  EXPECT_EQ(pool.statistics().bytes_in_use, 0U);
  pool.trim();
  device_.synchronize();
  EXPECT_EQ(upstream_->statistics().bytes_in_use, 0U);
  // Only the simulated device is empty but for this test; a GPU holds its runtime's memory too.
  if (on_sim()) {
    EXPECT_EQ(device_.memory_info().free_bytes, device_.memory_info().total_bytes);
  }
}

TEST_P(FaultAdaptorTest, RejectsBadArguments) {
  try {
    FaultAdaptor adaptor(nullptr);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("upstream:", 0), 0U) << e.what();
  }
  EXPECT_THROW(FaultAdaptor(upstream_, {.probability = 1.5}), std::invalid_argument);
  EXPECT_THROW(FaultAdaptor(upstream_, {.probability = -0.1}), std::invalid_argument);
  FaultAdaptor adaptor(upstream_, {.every_nth = 2});
  EXPECT_THROW(adaptor.set_options({.probability = 2.0}), std::invalid_argument);
  EXPECT_EQ(pattern(adaptor, 2), (std::vector<bool>{false, true})) << "options unchanged";
}

INSTANTIATE_TEST_SUITE_P(Backends, FaultAdaptorTest, testing::backends(), testing::backend_name);

}  // namespace
}  // namespace gpulife
