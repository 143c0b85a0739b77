// SPDX-License-Identifier: Apache-2.0
// release_cached() goes down the whole resource stack: each level gives back what it caches and
// asks its upstream to do the same, so that one call at the top reaches the driver's pool.

#include <cstddef>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/memory/fault_adaptor.hpp>
#include <gpulife/memory/pool_resource.hpp>

#include "support/backend_test.hpp"
#include "support/cuda_test.hpp"

namespace gpulife {
namespace {

/// A pass-through adaptor that counts the release_cached calls that reach it.
class SpyResource final : public DeviceMemoryResource {
 public:
  explicit SpyResource(std::shared_ptr<DeviceMemoryResource> upstream)
      : DeviceMemoryResource(upstream->device()), upstream_(std::move(upstream)) {}
  int release_calls = 0;

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override {
    return upstream_->allocate(bytes, stream);
  }
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override {
    upstream_->deallocate(ptr, bytes, stream);
  }
  std::string do_name() const override { return "spy(" + upstream_->name() + ")"; }
  ResourceStatistics do_statistics() const override { return upstream_->statistics(); }
  std::size_t do_release_cached() noexcept override {
    ++release_calls;
    return upstream_->release_cached();
  }

  std::shared_ptr<DeviceMemoryResource> upstream_;
};

class ReleaseCachedTest : public testing::BackendTest {};

TEST_P(ReleaseCachedTest, ThePoolGivesItsBlocksBackAndAsksItsUpstreamToo) {
  auto spy = std::make_shared<SpyResource>(std::make_shared<AsyncResource>(device_));
  auto faults = std::make_shared<FaultAdaptor>(spy, FaultOptions{});
  PoolResource pool(faults);
  Stream stream(device_);
  void* a = pool.allocate(1 << 20, stream);
  void* b = pool.allocate(4096, stream);
  pool.deallocate(a, 1 << 20, stream);
  pool.deallocate(b, 4096, stream);
  // Both blocks came from one 2 MiB segment of the pool's small pool.
  EXPECT_EQ(pool.statistics().bytes_cached, std::size_t{2} << 20);
  const std::size_t released = pool.release_cached();
  EXPECT_EQ(released, std::size_t{2} << 20) << "the pool's own segment";
  EXPECT_EQ(pool.statistics().bytes_cached, 0U);
  EXPECT_EQ(pool.statistics().upstream_deallocations, 1U);
  EXPECT_EQ(spy->release_calls, 1) << "the chain stopped at the pool (or at the fault adaptor)";
}

TEST_P(ReleaseCachedTest, AContextUnderPressureReleasesDownToTheDriver) {
  auto spy = std::make_shared<SpyResource>(std::make_shared<AsyncResource>(device_));
  {
    Context ctx({.device = device_, .resource = std::make_shared<PoolResource>(spy)});
    DeviceTensor t = ctx.empty({1024}, DType::f32);
    t.reset();
    EXPECT_EQ(spy->release_calls, 0);
  }
  EXPECT_EQ(spy->release_calls, 1) << "the context's shutdown gives the cached memory back";
}

INSTANTIATE_TEST_SUITE_P(Backends, ReleaseCachedTest, testing::backends(), testing::backend_name);

// ---- on a GPU: the driver's pool really shrinks ------------------------------------------------

using AsyncReleaseCudaTest = testing::CudaTest;

TEST_F(AsyncReleaseCudaTest, ReleaseCachedTrimsTheDriversPool) {
  auto async = std::make_shared<AsyncResource>(device_);
  PoolResource pool(async);
  Stream stream(device_);
  constexpr std::size_t bytes = std::size_t{256} << 20;
  void* burst = pool.allocate(bytes, stream);
  pool.deallocate(burst, bytes, stream);
  (void)pool.trim();  // back into the driver's pool, which keeps it (threshold: unlimited)
  stream.synchronize();
  const std::size_t kept = async->pool_reserved_bytes();
  EXPECT_GE(kept, bytes) << "the driver's pool did not keep the freed burst";
  (void)pool.release_cached();
  const std::size_t after = async->pool_reserved_bytes();
  EXPECT_LT(after, kept) << "release_cached left " << after << " bytes reserved";
  EXPECT_LT(after, bytes);
}

}  // namespace
}  // namespace gpulife
