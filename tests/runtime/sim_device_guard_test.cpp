// SPDX-License-Identifier: Apache-2.0
// SimOptions::guard_device_memory: host code that dereferences a device pointer crashes, as on a
// GPU, while gpulife's own work (queued copies, memsets, kernels, the pool's expandable
// segments, the cache) runs as before.

#include <cstdlib>
#include <cstring>
#include <string_view>
#include <memory>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/gpulife.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/sim_test.hpp"

namespace gpulife {
namespace {

SimOptions guarded() {
  SimOptions options;
  options.guard_device_memory = true;
  return options;
}

constexpr const char* crash_message =
    "gpulife sim: host code dereferenced device memory at 0x[0-9a-f]+ \\(allocation "
    "\\[0x[0-9a-f]+, \\+[0-9]+\\)\\): device pointers are not host-accessible on a GPU";

/// Reads one float through a device pointer on the host: what the guard must stop.
float host_read(const float* device_ptr) {
  return *static_cast<const volatile float*>(device_ptr);
}

class SimDeviceGuardDeathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

// Issue 14's table, row "host code dereferences a device pointer": the wrong program crashes
// on every run (delay off and on), and the same program downloading instead is clean.
constexpr int table_runs = 10;

TEST_F(SimDeviceGuardDeathTest, HostReadOfAPoolTensorCrashesWithTheMessageOnEveryRun) {
  for (int run = 0; run < table_runs; ++run) {
    SimOptions options = guarded();
    options.delay = run % 2 == 1;
    options.delay_seed = static_cast<std::uint64_t>(run);
    // The default context: a pool with expandable segments, in the sim's virtual memory.
    EXPECT_DEATH(
        {
          Context ctx({.device = Device::sim(options)});
          const std::vector<float> host(256, 1.5F);
          DeviceTensor t = ctx.upload(std::span<const float>(host), {256});
          ctx.device().synchronize();
          std::printf("%f\n", static_cast<double>(host_read(t.data<float>())));
        },
        crash_message)
        << "run " << run;
  }
}

TEST(SimDeviceGuard, TheFixedProgramDownloadsAndIsClean) {
  for (int run = 0; run < table_runs; ++run) {
    SimOptions options = guarded();
    options.delay = run % 2 == 1;
    options.delay_seed = static_cast<std::uint64_t>(run);
    const Device device = Device::sim(options);
    {
      Context ctx({.device = device});
      const std::vector<float> host(256, 1.5F);
      DeviceTensor t = ctx.upload(std::span<const float>(host), {256});
      EXPECT_EQ(t.to_host<float>()[0], 1.5F);
    }
    device.synchronize();
    EXPECT_TRUE(device.take_violations().empty());
  }
}

TEST_F(SimDeviceGuardDeathTest, HostWriteToACudaMallocAsyncBlockCrashesWithTheMessage) {
  // The upstream allocation path (cudaMallocAsync), small and large.
  for (const std::size_t bytes : {std::size_t{1000}, std::size_t{4} << 20}) {
    EXPECT_DEATH(
        {
          const Device device = Device::sim(guarded());
          AsyncResource resource(device);
          auto* ptr = static_cast<unsigned char*>(resource.allocate(bytes));
          device.synchronize();
          ptr[bytes - 1] = 7;
          std::printf("%d\n", ptr[0]);
        },
        crash_message);
  }
}

// Seeded mode (SimSchedule::seeded): the scheduler runs queued work inline on the host thread
// that waits. That work is the device's (it opens guarded memory), and what it opened is closed
// again after each operation, so the host's own access after it still crashes.
TEST_F(SimDeviceGuardDeathTest, SeededModeHostReadCrashesAfterInlineWorkTouchedTheMemory) {
  for (const std::uint64_t seed : {1U, 2U, 3U}) {
    SimOptions options = guarded();
    options.schedule = SimSchedule::seeded;
    options.seed = seed;
    EXPECT_DEATH(
        {
          Context ctx({.device = Device::sim(options)});
          const std::vector<float> host(256, 1.5F);
          DeviceTensor t = ctx.upload(std::span<const float>(host), {256});
          EXPECT_EQ(t.to_host<float>()[0], 1.5F);  // the copy ran inline, on this thread
          std::printf("%f\n", static_cast<double>(host_read(t.data<float>())));
        },
        crash_message)
        << "seed " << seed;
  }
}

void run_gpulifes_own_work(const SimOptions& options) {
  const Device device = Device::sim(options);
  Context ctx({.device = device});
  ASSERT_TRUE(static_cast<PoolResource&>(ctx.resource()).uses_expandable_segments());
  Stream stream(device), other(device);
  std::vector<float> host(4096);
  std::iota(host.begin(), host.end(), 0.0F);
  // upload (pageable and staged), a kernel, a memset, downloads
  DeviceTensor x = ctx.upload(std::span<const float>(host), {4096}, stream, "x");
  DeviceTensor y = ctx.empty({4096}, DType::f32, stream, "y");
  const float* xs = x.data<float>();
  float* ys = y.data<float>();
  for_each_index(
      stream, 4096, [xs, ys](std::size_t i) { ys[i] = 2.0F * xs[i]; },
      {{xs, 4096 * sizeof(float), Access::read}, {ys, 4096 * sizeof(float), Access::write}},
      "scale");
  const std::vector<float> doubled = y.to_host<float>(stream);
  for (std::size_t i = 0; i < host.size(); ++i) ASSERT_EQ(doubled[i], 2.0F * host[i]) << i;
  StreamView(stream).memset(ys, 0, 4096 * sizeof(float));
  EXPECT_EQ(y.to_host<float>(stream), std::vector<float>(4096, 0.0F));
  // a large staged upload, and the cache (hit on another stream)
  std::vector<float> big(std::size_t{1} << 20, 0.25F);
  DeviceTensor a = ctx.cache().upload(std::span<const float>(big), {1 << 20}, stream);
  DeviceTensor b = ctx.cache().upload(std::span<const float>(big), {1 << 20}, other);
  EXPECT_EQ(a.data<float>(), b.data<float>());
  EXPECT_EQ(b.to_host<float>(other), big);
  // frees, poison, reuse of the pool's blocks and of upstream memory
  x.reset();
  y.reset();
  a.reset();
  b.reset();
  DeviceTensor again = ctx.upload(std::span<const float>(host), {4096}, stream);
  EXPECT_EQ(again.to_host<float>(stream), host);
  again.reset();
  AsyncResource upstream(device);
  for (int round = 0; round < 3; ++round) {
    void* p = upstream.allocate(std::size_t{3} << 20, stream);
    StreamView(stream).memset(p, round, std::size_t{3} << 20);
    upstream.deallocate(p, std::size_t{3} << 20, stream);
  }
  device.synchronize();
  ctx.cache().clear();
  static_cast<PoolResource&>(ctx.resource()).release_cached();
  device.synchronize();
  EXPECT_EQ(device.take_violations().size(), 0U);
  EXPECT_TRUE(testing::take_reported_errors().empty());
}

TEST(SimDeviceGuard, GpulifesOwnWorkRunsCleanWithTheGuard) { run_gpulifes_own_work(guarded()); }

TEST(SimDeviceGuard, GpulifesOwnWorkRunsCleanWithTheGuardInSeededMode) {
  for (const SimPolicy policy : {SimPolicy::uniform, SimPolicy::pct}) {
    SCOPED_TRACE(policy == SimPolicy::uniform ? "uniform" : "pct");
    SimOptions options = guarded();
    options.schedule = SimSchedule::seeded;
    options.policy = policy;
    options.seed = 42;
    run_gpulifes_own_work(options);
  }
}

TEST(SimDeviceGuard, OffByDefaultTheHostCanReadDeviceMemory) {
  // The documented default: device memory is host memory on the sim.
  ASSERT_FALSE(SimOptions{}.guard_device_memory);
  if (const char* env = std::getenv("GPULIFE_SIM_GUARD_DEVICE"); env != nullptr && *env != '\0' &&
                                                                 std::string_view(env) != "0") {
    GTEST_SKIP() << "GPULIFE_SIM_GUARD_DEVICE turns the guard on for every device";
  }
  SimOptions options;
  Context ctx({.device = Device::sim(options)});
  const std::vector<float> host(64, 3.0F);
  DeviceTensor t = ctx.upload(std::span<const float>(host), {64});
  ctx.device().synchronize();
  EXPECT_EQ(host_read(t.data<float>()), 3.0F);
}

}  // namespace
}  // namespace gpulife
