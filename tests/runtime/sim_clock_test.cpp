// SPDX-License-Identifier: Apache-2.0
// The simulated device's virtual time (sim_clock.hpp) on small programs whose timing is known by
// hand, and the device profiles it reads (device_profile.hpp).

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/device_profile.hpp>
#include <gpulife/runtime/launch.hpp>

#include "support/expect_invalid_argument.hpp"
#include "support/scoped_env.hpp"
#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using ::testing::HasSubstr;

// Round figures, so that every expected time below is worked out by hand: copies move 1 byte
// per ns from pinned memory and 0.5 from pageable memory, kernels 10 bytes and 100 FLOPs per ns;
// a launch costs the host 1 us; events and synchronisations cost nothing beyond their waits.
nlohmann::json test_profile_json() {
  const auto f = [](double value) {
    return nlohmann::json{{"value", value}, {"source", "test figure"}};
  };
  return {{"name", "test"},
          {"device", "a device with round figures"},
          {"figures",
           {{"h2d_pinned_gbps", f(1)},
            {"h2d_pageable_gbps", f(0.5)},
            {"d2h_pinned_gbps", f(1)},
            {"d2h_pageable_gbps", f(0.5)},
            {"copy_latency_us", f(0)},
            {"memory_gbps", f(10)},
            {"compute_gflops", f(100)},
            {"kernel_min_us", f(1)},
            {"launch_us", f(1)},
            {"malloc_us", f(100)},
            {"free_us", f(50)},
            {"malloc_async_us", f(2)},
            {"free_async_us", f(3)},
            {"malloc_host_us", f(1000)},
            {"malloc_host_us_per_gib", f(0)},
            {"free_host_us", f(7)},
            {"event_us", f(0)},
            {"host_function_us", f(5)},
            {"sync_us", f(0)}}}};
}

std::string write_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("gpulife_sim_clock_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

constexpr double us = 1000;            // ns
constexpr std::size_t mb = 1'000'000;  // 1 ms at 1 GB/s

class SimClockTest : public testing::SimTest {
 protected:
  SimClockTest() : SimTest(options()) {}
  static SimOptions options() {
    SimOptions o;
    o.profile = write_file("test.json", test_profile_json().dump());
    o.count_host_time = false;  // only the modelled costs: exact figures
    return o;
  }
  double now() const { return device_.virtual_time_ns().value(); }

  // A kernel that reads `bytes` of `buffer`: bytes / 10 ns on the SMs.
  void read_kernel(StreamView stream, const void* buffer, std::size_t bytes) {
    for_each_index(
        stream, 1, [](std::size_t) {}, {{buffer, bytes, Access::read}}, "read");
  }
};

TEST_F(SimClockTest, ReportsTheProfile) {
  const auto profile = device_.time_profile();
  ASSERT_TRUE(profile.has_value());
  EXPECT_EQ(profile->name, "test");
  EXPECT_EQ(profile->h2d_pageable_gbps, 0.5);
}

TEST_F(SimClockTest, TwoStreamsOverlapACopyAndAKernel) {
  void* host = device_.allocate_pinned(mb);
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_), b(device_);
  const double t0 = now();
  a.view().copy(dev, host, mb, CopyKind::host_to_device);  // h2d engine: [t0+1us, +1 ms]
  read_kernel(b, dev, 10 * mb);  // SMs: [t0+2us, +1 ms]; unordered with the copy on purpose
  a.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 1e6);
  b.synchronize();
  EXPECT_EQ(now() - t0, 2 * us + 1e6);  // overlapped: not 2 ms
  (void)take_violations();              // the race between them is not this test's subject
  device_.impl().deallocate(dev, 10 * mb);
  device_.deallocate_pinned(host);
}

TEST_F(SimClockTest, OneStreamRunsTheSameWorkOneAfterTheOther) {
  void* host = device_.allocate_pinned(mb);
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_);
  const double t0 = now();
  a.view().copy(dev, host, mb, CopyKind::host_to_device);
  read_kernel(a, dev, 10 * mb);
  a.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 2e6);
  device_.impl().deallocate(dev, 10 * mb);
  device_.deallocate_pinned(host);
}

TEST_F(SimClockTest, AKernelTakesTheLongerOfItsBytesAndItsWork) {
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_);
  const auto kernel = [&](double flops) {
    const double t0 = now();
    for_each_index(
        a, 1, [](std::size_t) {}, {{dev, 10 * mb, Access::read}}, "roofline",
        KernelWork{.flops = flops});
    a.synchronize();
    return now() - t0;
  };
  // 10 MB at 10 bytes per ns: 1 ms; the launch costs the host 1 us first.
  EXPECT_EQ(kernel(0), 1 * us + 1e6);
  EXPECT_EQ(kernel(50e6), 1 * us + 1e6);   // 0.5 ms of arithmetic hides under the bytes
  EXPECT_EQ(kernel(300e6), 1 * us + 3e6);  // 3 ms of arithmetic: compute-bound
  // A hint that is not a count is refused before anything is queued.
  EXPECT_THROW(kernel(-1), std::invalid_argument);
  EXPECT_THROW(kernel(std::numeric_limits<double>::infinity()), std::invalid_argument);
  EXPECT_THROW(kernel(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  device_.impl().deallocate(dev, 10 * mb);
}

TEST_F(SimClockTest, CopiesOfTwoStreamsShareTheCopyEngine) {
  void* host = device_.allocate_pinned(2 * mb);
  void* dev = device_.impl().allocate(2 * mb);
  Stream a(device_), b(device_);
  const double t0 = now();
  a.view().copy(dev, host, mb, CopyKind::host_to_device);
  b.view().copy(static_cast<char*>(dev) + mb, static_cast<char*>(host) + mb, mb,
                CopyKind::host_to_device);
  device_.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 2e6);  // one host-to-device engine: the second waits
  // Opposite directions use different engines and overlap.
  const double t1 = now();
  a.view().copy(dev, host, mb, CopyKind::host_to_device);
  b.view().copy(static_cast<char*>(host) + mb, static_cast<char*>(dev) + mb, mb,
                CopyKind::device_to_host);
  device_.synchronize();
  EXPECT_EQ(now() - t1, 2 * us + 1e6);
  device_.impl().deallocate(dev, 2 * mb);
  device_.deallocate_pinned(host);
}

TEST_F(SimClockTest, AnEventWaitSerialisesTwoStreams) {
  void* host = device_.allocate_pinned(mb);
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_), b(device_);
  Event done(device_);
  const double t0 = now();
  read_kernel(a, dev, 10 * mb);  // [t0+1us, t0+1us+1ms]
  done.record(a);
  b.view().wait(done);
  b.view().copy(host, dev, mb, CopyKind::device_to_host);  // starts when the kernel ends
  b.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 2e6);
  // The event carries its virtual time: synchronising on it moves the host there.
  const double t1 = now();
  read_kernel(a, dev, 10 * mb);
  done.record(a);
  done.synchronize();
  EXPECT_EQ(now() - t1, 1 * us + 1e6);
  device_.impl().deallocate(dev, 10 * mb);
  device_.deallocate_pinned(host);
}

TEST_F(SimClockTest, APageableCopyBlocksTheHostAndAPinnedOneDoesNot) {
  std::vector<char> pageable(mb);
  void* pinned = device_.allocate_pinned(mb);
  void* dev = device_.impl().allocate(mb);
  Stream a(device_);
  double t0 = now();
  a.view().copy(dev, pinned, mb, CopyKind::host_to_device);
  EXPECT_EQ(now() - t0, 1 * us);  // the launch only
  a.synchronize();
  t0 = now();
  a.view().copy(dev, pageable.data(), mb, CopyKind::host_to_device);
  EXPECT_EQ(now() - t0, 1 * us + 2e6);  // the host waited for the copy at 0.5 GB/s
  t0 = now();
  a.view().copy(pageable.data(), dev, mb, CopyKind::device_to_host);
  EXPECT_EQ(now() - t0, 1 * us + 2e6);
  device_.impl().deallocate(dev, mb);
  device_.deallocate_pinned(pinned);
}

TEST_F(SimClockTest, CudaFreeWaitsForEveryStream) {
  void* host = device_.allocate_pinned(3 * mb);
  void* dev = device_.impl().allocate(10 * mb);
  void* victim = device_.impl().allocate(256);
  Stream a(device_), b(device_);
  const double t0 = now();
  read_kernel(a, dev, 10 * mb);                                // ends at t0 + 1 us + 1 ms
  b.view().copy(host, dev, 3 * mb, CopyKind::device_to_host);  // ends at t0 + 2 us + 3 ms
  EXPECT_EQ(now() - t0, 2 * us);
  device_.impl().deallocate(victim, 256);  // waits for both streams, then 50 us of its own
  EXPECT_EQ(now() - t0, 2 * us + 3e6 + 50 * us);
  device_.impl().deallocate(dev, 10 * mb);
  device_.deallocate_pinned(host);
}

TEST_F(SimClockTest, AllocationsCostTheHostTheirLatency) {
  Stream a(device_);
  double t0 = now();
  void* p = device_.impl().allocate(1024);
  EXPECT_EQ(now() - t0, 100 * us);
  t0 = now();
  void* q = device_.impl().allocate_async(1024, *a.view().impl());
  EXPECT_EQ(now() - t0, 2 * us);
  t0 = now();
  device_.impl().deallocate_async(q, 1024, *a.view().impl());
  EXPECT_EQ(now() - t0, 3 * us);
  t0 = now();
  void* h = device_.allocate_pinned(64);
  EXPECT_EQ(now() - t0, 1000 * us);
  t0 = now();
  device_.deallocate_pinned(h);
  EXPECT_EQ(now() - t0, 7 * us);
  t0 = now();
  device_.impl().deallocate(p, 1024);  // nothing queued: the free's own cost
  EXPECT_EQ(now() - t0, 50 * us);
}

TEST_F(SimClockTest, AHostFunctionTakesItsTimeOnTheStream) {
  Stream a(device_);
  const double t0 = now();
  a.view().host_callback([] {});
  EXPECT_EQ(now() - t0, 1 * us);
  a.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 5 * us);
}

TEST_F(SimClockTest, EachHostThreadHasItsOwnClock) {
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_);
  const double t0 = now();
  double other = 0;
  std::thread waiter([&] {
    read_kernel(a, dev, 10 * mb);
    a.synchronize();
    other = device_.virtual_time_ns().value();
  });
  waiter.join();
  EXPECT_GE(other - t0, 1 * us + 1e6);  // the waiting thread saw the kernel's time pass
  EXPECT_EQ(now(), t0);                 // this one did not wait
  a.synchronize();
  EXPECT_EQ(now() - t0, 1 * us + 1e6);  // until it does
  device_.impl().deallocate(dev, 10 * mb);
}

TEST_F(SimClockTest, AQueryAnswersInVirtualTime) {
  void* dev = device_.impl().allocate(10 * mb);
  Stream a(device_);
  Event done(device_);
  read_kernel(a, dev, 10 * mb);  // 1 ms on the SMs
  done.record(a);
  // Another host thread waits for it: the work has run, but this thread's clock is still at
  // the launch, where a GPU would not have finished the kernel.
  std::thread([&] { a.synchronize(); }).join();
  EXPECT_FALSE(done.query());
  EXPECT_FALSE(a.view().query());
  done.synchronize();  // the host moves to the kernel's end
  EXPECT_TRUE(done.query());
  EXPECT_TRUE(a.view().query());
  device_.impl().deallocate(dev, 10 * mb);
}

TEST(SimClockHostTime, RealHostTimeBetweenCallsCounts) {
  SimOptions options;
  options.profile = "h100";
  Device device = Device::sim(options);
  Stream a(device);
  a.synchronize();
  const double t0 = device.virtual_time_ns().value();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  a.synchronize();
  EXPECT_GE(device.virtual_time_ns().value() - t0, 20e6);
}

TEST(SimClockHostTime, NoProfileNoVirtualTime) {
  if (std::getenv("GPULIFE_SIM_PROFILE") != nullptr) GTEST_SKIP() << "GPULIFE_SIM_PROFILE is set";
  Device device = Device::sim();
  EXPECT_FALSE(device.virtual_time_ns().has_value());
  EXPECT_FALSE(device.time_profile().has_value());
}

TEST(SimClockHostTime, TheEnvironmentSelectsAProfile) {
  const Device device = [] {
    const testing::ScopedEnv env("GPULIFE_SIM_PROFILE", "h200");
    return Device::sim();
  }();
  ASSERT_TRUE(device.time_profile().has_value());
  EXPECT_EQ(device.time_profile()->name, "h200");
  // An explicit profile wins over the environment.
  SimOptions options;
  options.profile = "h100";
  EXPECT_EQ(Device::sim(options).time_profile()->name, "h100");
}

// ---- profiles ----

TEST(DeviceProfile, BuiltInProfilesCarryASourceForEveryFigure) {
  for (const std::string& name : DeviceProfile::builtin_names()) {
    const DeviceProfile profile = DeviceProfile::builtin(name);
    EXPECT_EQ(profile.name, name);
    EXPECT_FALSE(profile.calibrated) << "the built-in figures are published ones";
    EXPECT_EQ(profile.sources.size(), 19U);
    for (const auto& [figure, source] : profile.sources) EXPECT_GT(source.size(), 20U) << figure;
    EXPECT_GT(profile.memory_gbps, 1000);
    EXPECT_NEAR(profile.h2d_pinned_gbps, 55, 5);
    EXPECT_LT(profile.h2d_pageable_gbps, profile.h2d_pinned_gbps);
  }
  EXPECT_GT(DeviceProfile::builtin("h200").memory_gbps, DeviceProfile::builtin("h100").memory_gbps);
}

TEST(DeviceProfile, ToJsonReadsBack) {
  DeviceProfile profile = DeviceProfile::builtin("h100");
  profile.name = "measured";
  profile.calibrated = true;
  profile.malloc_us = 123.5;
  const DeviceProfile back = DeviceProfile::parse(profile.to_json(), "round trip");
  EXPECT_EQ(back.name, "measured");
  EXPECT_TRUE(back.calibrated);
  EXPECT_EQ(back.malloc_us, 123.5);
  EXPECT_EQ(back.sources, profile.sources);
  const std::string path = write_file("round_trip.json", profile.to_json());
  EXPECT_EQ(DeviceProfile::select(path).malloc_us, 123.5);
}

TEST(DeviceProfile, BadProfilesAreRefusedSayingWhy) {
  using testing::expect_invalid_argument;
  expect_invalid_argument([] { (void)DeviceProfile::builtin("a100"); }, "a100");
  expect_invalid_argument([] { (void)DeviceProfile::select("a100"); }, "known: h100, h200");
  expect_invalid_argument([] { (void)DeviceProfile::load("/nonexistent/p.json"); },
                          "/nonexistent/p.json: cannot be opened");
  expect_invalid_argument([] { (void)DeviceProfile::parse("{", "broken"); },
                          "broken: invalid JSON");
  auto edited = [](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json doc = test_profile_json();
    edit(doc);
    return doc.dump();
  };
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(edited([](auto& d) { d["figures"].erase("malloc_us"); }), "p");
      },
      "missing figure \"malloc_us\"");
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(edited([](auto& d) { d["figures"]["free_us"]["value"] = -1; }),
                                   "p");
      },
      "\"free_us\": value -1 is negative");
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(
            edited([](auto& d) { d["figures"]["memory_gbps"]["value"] = 0; }), "p");
      },
      "\"memory_gbps\": a bandwidth of 0");
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(
            edited([](auto& d) { d["figures"]["launch_us"].erase("source"); }), "p");
      },
      "\"launch_us\" has no \"source\"");
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(
            edited([](auto& d) { d["figures"]["launch_us"]["value"] = "fast"; }), "p");
      },
      "\"launch_us\": \"value\" is not a number");
  expect_invalid_argument(
      [&] {
        (void)DeviceProfile::parse(
            edited([](auto& d) { d["figures"]["lanch_us"] = d["figures"]["launch_us"]; }), "p");
      },
      "unknown figure \"lanch_us\"");
  expect_invalid_argument(
      [&] { (void)DeviceProfile::parse(edited([](auto& d) { d.erase("name"); }), "p"); },
      "missing \"name\"");
  // Through the device's options: the bad file is named.
  SimOptions options;
  options.profile = "/nonexistent/p.json";
  expect_invalid_argument([&] { (void)Device::sim(options); }, "/nonexistent/p.json");
}

}  // namespace
}  // namespace gpulife
