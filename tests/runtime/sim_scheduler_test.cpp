// SPDX-License-Identifier: Apache-2.0
// The simulated device's seeded mode: one scheduler runs every stream's queue, choosing the next
// stream with a seeded generator. A run with one host thread is a pure function of the seed and
// the program (same interleaving, same violations, same bytes); CUDA's semantics hold in every
// interleaving; host functions that block do not deadlock a valid program; a seed replays.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/device.hpp>

#include "runtime/sim_device.hpp"
#include "runtime/sim_scheduler.hpp"
#include "support/sim_test.hpp"
#include "support/scoped_env.hpp"

namespace gpulife {
namespace {

using testing::Gate;
using testing::ScopedEnv;

SimOptions seeded(std::uint64_t seed, SimPolicy policy = SimPolicy::mixed) {
  SimOptions options;
  options.schedule = SimSchedule::seeded;
  options.seed = seed;
  options.policy = policy;
  options.on_violation = [](const SimViolation&) {};  // recorded; the tests read them
  return options;
}

/// Tests that compare chosen seeds cannot run when GPULIFE_SIM_SEED overrides every seed.
#define SKIP_IF_THE_ENVIRONMENT_CHOOSES_THE_SEED()                             \
  if (std::getenv("GPULIFE_SIM_SEED") != nullptr) {                            \
    GTEST_SKIP() << "GPULIFE_SIM_SEED overrides the seeds this test compares"; \
  }

detail::sim::SimScheduler& scheduler_of(const Device& device) {
  auto* scheduler = static_cast<detail::sim::SimDevice&>(device.impl()).scheduler();
  if (scheduler == nullptr) throw std::logic_error("not a seeded device");
  return *scheduler;
}

/// Streams that each append their number to a trace, `per_stream` times, with no
/// synchronisation between them: the trace is the interleaving the scheduler chose.
std::vector<int> interleaving(const Device& device, int streams, int per_stream) {
  std::vector<Stream> queues;
  for (int s = 0; s < streams; ++s) queues.emplace_back(device);
  std::mutex mutex;
  std::vector<int> trace;
  for (int k = 0; k < per_stream; ++k) {
    for (int s = 0; s < streams; ++s) {
      queues[static_cast<std::size_t>(s)].view().impl()->launch_host_kernel("trace", {}, [&, s] {
        std::scoped_lock lock(mutex);
        trace.push_back(s);
      });
    }
  }
  device.synchronize();
  return trace;
}

std::size_t longest_run(const std::vector<int>& trace) {
  std::size_t longest = 0;
  std::size_t run = 0;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    run = i > 0 && trace[i] == trace[i - 1] ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  return longest;
}

TEST(SimScheduler, TheSameSeedGivesTheSameInterleavingAndOtherSeedsOthers) {
  SKIP_IF_THE_ENVIRONMENT_CHOOSES_THE_SEED();
  std::vector<std::vector<int>> seen;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const std::vector<int> first = interleaving(Device::sim(seeded(seed)), 3, 40);
    const std::vector<int> again = interleaving(Device::sim(seeded(seed)), 3, 40);
    ASSERT_EQ(first, again) << "seed " << seed << " did not replay its interleaving";
    ASSERT_EQ(first.size(), 120U);
    if (std::find(seen.begin(), seen.end(), first) == seen.end()) seen.push_back(first);
  }
  EXPECT_GE(seen.size(), 15U) << "20 seeds explored only " << seen.size() << " interleavings";
}

TEST(SimScheduler, PctDelaysOneStreamForLongStretchesUniformDoesNot) {
  SKIP_IF_THE_ENVIRONMENT_CHOOSES_THE_SEED();
  // The seed fixes each run, so the averages over these seeds are fixed numbers, not samples.
  double uniform = 0;
  double pct = 0;
  constexpr int seeds = 20;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    uniform += static_cast<double>(
        longest_run(interleaving(Device::sim(seeded(seed, SimPolicy::uniform)), 2, 100)));
    pct += static_cast<double>(
        longest_run(interleaving(Device::sim(seeded(seed, SimPolicy::pct)), 2, 100)));
  }
  uniform /= seeds;
  pct /= seeds;
  EXPECT_LT(uniform, 20.0);
  EXPECT_GT(pct, 3 * uniform) << "uniform: " << uniform << ", pct: " << pct;
}

TEST(SimScheduler, MixedPolicyLetsTheSeedChooseEitherPolicy) {
  SKIP_IF_THE_ENVIRONMENT_CHOOSES_THE_SEED();
  std::size_t long_stretches = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    if (longest_run(interleaving(Device::sim(seeded(seed)), 2, 100)) >= 30) ++long_stretches;
  }
  EXPECT_GT(long_stretches, 2U);
  EXPECT_LT(long_stretches, 18U);
}

TEST(SimScheduler, EventsOrderStreamsInEveryInterleaving) {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    Device device = Device::sim(seeded(seed));
    Stream writer(device);
    Stream reader(device);
    constexpr std::size_t n = 4096;
    void* buffer = device.impl().allocate(n);
    std::vector<unsigned char> source(n, static_cast<unsigned char>(seed));
    std::vector<unsigned char> back(n, 0);
    writer.view().memset(buffer, 0, n);
    writer.view().copy(buffer, source.data(), n, CopyKind::host_to_device);
    Event written(device);
    writer.view().record(written);
    reader.view().wait(written);
    reader.view().copy(back.data(), buffer, n, CopyKind::device_to_host);  // pageable: waits
    ASSERT_EQ(back, source) << "seed " << seed;
    device.impl().deallocate(buffer, n);
    ASSERT_EQ(device.violation_count(), 0U) << "seed " << seed;
  }
}

// Found by the fuzzer: a wait passed at once (its record had run) uncovered a second wait whose
// record sat behind a host function that nobody had asked for yet; the scheduler did not ask
// for it either, and the synchronisation waited forever.
TEST(SimScheduler, AWaitPassedAtOnceStillDemandsWhatTheNextWaitNeeds) {
  Device device = Device::sim(seeded(13));
  Stream a(device);
  Stream b(device);
  Stream c(device);
  std::atomic<bool> host_function_ran{false};
  a.view().host_callback([&] { host_function_ran = true; });
  Event after_host_function(device);
  a.view().record(after_host_function);  // queued behind the host function
  c.view().impl()->launch_host_kernel("late", {}, [] {});
  Event on_c(device);
  c.view().record(on_c);  // queued behind the kernel
  b.view().wait(on_c);
  b.view().wait(after_host_function);
  c.synchronize();  // b's first wait can now be passed at once
  b.synchronize();  // and its second needs a's host function
  EXPECT_TRUE(host_function_ran.load());
}

TEST(SimScheduler, WorkRunsOnTheWaitingThreadOnlyWhenWaitedFor) {
  Device device = Device::sim(seeded(3));
  Stream stream(device);
  std::thread::id ran_on;
  std::atomic<bool> ran{false};
  stream.view().impl()->launch_host_kernel("where", {}, [&] {
    ran_on = std::this_thread::get_id();
    ran = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(ran.load()) << "queued work ran without anyone waiting for it";
  stream.synchronize();
  ASSERT_TRUE(ran.load());
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(SimScheduler, HostFunctionsRunOnAHostFunctionThreadInStreamOrder) {
  Device device = Device::sim(seeded(4));
  Stream stream(device);
  std::vector<int> order;
  std::thread::id host_function_thread;
  stream.view().impl()->launch_host_kernel("first", {}, [&] { order.push_back(1); });
  stream.view().host_callback([&] {
    host_function_thread = std::this_thread::get_id();
    order.push_back(2);
  });
  stream.view().impl()->launch_host_kernel("third", {}, [&] { order.push_back(3); });
  stream.synchronize();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_NE(host_function_thread, std::this_thread::get_id());
  EXPECT_NE(host_function_thread, std::thread::id{});
}

TEST(SimScheduler, AHostFunctionBlockedOnTheHostDoesNotDeadlockAValidProgram) {
  // Valid under CUDA: the host waits only for stream b, and a query never blocks; the gate on
  // stream a opens later from the same host thread.
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    Device device = Device::sim(seeded(seed));
    Stream a(device);
    Stream b(device);
    Gate gate;
    gate.block(a);
    std::atomic<bool> a_ran{false};
    std::atomic<bool> b_ran{false};
    a.view().host_callback([&] { a_ran = true; });
    b.view().host_callback([&] { b_ran = true; });
    b.synchronize();
    EXPECT_TRUE(b_ran.load());
    EXPECT_FALSE(a.view().query());  // returns although a's host function is blocked
    EXPECT_FALSE(a_ran.load());
    gate.open();
    a.synchronize();
    EXPECT_TRUE(a_ran.load()) << "seed " << seed;
  }
}

TEST(SimScheduler, AHostFunctionBlockedOnAnotherHostThreadIsWaitedFor) {
  Device device = Device::sim(seeded(5));
  Stream stream(device);
  Gate gate;
  gate.block(stream);
  std::atomic<bool> after{false};
  stream.view().host_callback([&] { after = true; });
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gate.open();
  });
  stream.synchronize();  // waits for the gate, which another thread opens
  EXPECT_TRUE(after.load());
  opener.join();
}

TEST(SimScheduler, QueriesMakeProgressSoThatPollingTerminates) {
  Device device = Device::sim(seeded(6));
  Stream stream(device);
  std::atomic<int> done{0};
  for (int i = 0; i < 50; ++i) {
    stream.view().impl()->launch_host_kernel("step", {}, [&] { ++done; });
  }
  stream.view().host_callback([&] { ++done; });
  Event event(device);
  stream.view().record(event);
  int polls = 0;
  while (!event.query()) ++polls;
  EXPECT_EQ(done.load(), 51);
  EXPECT_GT(polls, 0);
  EXPECT_TRUE(stream.view().query());
}

TEST(SimScheduler, WaitsAcrossDevicesDriveTheOtherDevice) {
  for (const SimSchedule other : {SimSchedule::seeded, SimSchedule::threads}) {
    SimOptions options = seeded(7);
    options.schedule = other;
    Device producer = Device::sim(options);
    Device consumer = Device::sim(seeded(8));
    Stream p(producer);
    Stream c(consumer);
    std::atomic<bool> produced{false};
    std::atomic<bool> consumed_after{false};
    p.view().impl()->launch_host_kernel("produce", {}, [&] { produced = true; });
    Event event(producer);
    p.view().record(event);
    c.view().impl()->wait(*event.impl());
    c.view().impl()->launch_host_kernel("consume", {}, [&] { consumed_after = produced.load(); });
    c.synchronize();
    EXPECT_TRUE(consumed_after.load());
  }
}

TEST(SimScheduler, AFullQueueMakesTheHostRunSomeOfIt) {
  Device device = Device::sim(seeded(9));
  Stream stream(device);
  std::atomic<int> ran{0};
  for (int i = 0; i < 3000; ++i) {
    stream.view().impl()->launch_host_kernel("step", {}, [&] { ++ran; });
  }
  EXPECT_GE(ran.load(), 3000 - 1024) << "the queue grew without bound";
  stream.synchronize();
  EXPECT_EQ(ran.load(), 3000);
}

TEST(SimScheduler, PendingFreesLandBeforeAnAllocationGivesUp) {
  Device device = Device::sim({.capacity_bytes = 1 << 20,
                               .schedule = SimSchedule::seeded,
                               .seed = 10,
                               .on_violation = [](const SimViolation&) {}});
  Stream stream(device);
  void* first = device.impl().allocate_async(1 << 20, *stream.view().impl());
  stream.view().impl()->launch_host_kernel("busy", {}, [] {});
  device.impl().deallocate_async(first, 1 << 20, *stream.view().impl());  // queued
  void* second = device.impl().allocate_async(1 << 20, *stream.view().impl());
  ASSERT_NE(second, nullptr);
  device.impl().deallocate_async(second, 1 << 20, *stream.view().impl());
  device.synchronize();
  EXPECT_EQ(device.violation_count(), 0U);
}

TEST(SimScheduler, ReseedStartsTheScheduleOverAsANewDeviceWould) {
  SKIP_IF_THE_ENVIRONMENT_CHOOSES_THE_SEED();
  auto run = [](const Device& device, std::vector<Stream>& streams) {
    std::mutex mutex;
    std::vector<int> trace;
    for (int k = 0; k < 30; ++k) {
      for (std::size_t s = 0; s < streams.size(); ++s) {
        streams[s].view().impl()->launch_host_kernel("trace", {}, [&, s] {
          std::scoped_lock lock(mutex);
          trace.push_back(static_cast<int>(s));
        });
      }
    }
    device.synchronize();
    return trace;
  };
  Device fresh = Device::sim(seeded(11));
  std::vector<Stream> fresh_streams;
  for (int i = 0; i < 3; ++i) fresh_streams.emplace_back(fresh);
  const std::vector<int> expected = run(fresh, fresh_streams);

  Device reused = Device::sim(seeded(99));
  std::vector<Stream> reused_streams;
  for (int i = 0; i < 3; ++i) reused_streams.emplace_back(reused);
  EXPECT_NE(run(reused, reused_streams), expected);  // another seed, another interleaving
  reused.reseed(11);
  EXPECT_EQ(run(reused, reused_streams), expected);
  EXPECT_EQ(scheduler_of(reused).digest(), scheduler_of(fresh).digest());
}

TEST(SimScheduler, TheEnvironmentSeedMakesEveryDeviceSeeded) {
  {
    ScopedEnv env("GPULIFE_SIM_SEED", "pct:42");
    const Device device = Device::sim();
    EXPECT_EQ(device.replay_seed(), "pct:42");
  }
  {
    ScopedEnv env("GPULIFE_SIM_SEED", "17");
    const Device device = Device::sim({.schedule = SimSchedule::seeded, .seed = 3});
    EXPECT_EQ(device.replay_seed(), "17");
  }
  for (const char* bad : {"x", "12x", "-3", "fast:1", "pct:", "99999999999999999999999"}) {
    ScopedEnv env("GPULIFE_SIM_SEED", bad);
    EXPECT_THROW((void)Device::sim(), std::invalid_argument) << bad;
  }
  ScopedEnv unset("GPULIFE_SIM_SEED", nullptr);
  EXPECT_EQ(Device::sim({.schedule = SimSchedule::seeded, .seed = 5}).replay_seed(), "5");
  EXPECT_EQ(Device::sim({.schedule = SimSchedule::seeded, .seed = 5, .policy = SimPolicy::uniform})
                .replay_seed(),
            "uniform:5");
  EXPECT_EQ(Device::sim().replay_seed(), "") << "threads mode has no seed to replay";
}

// ---- replay ------------------------------------------------------------------------------------

struct Outcome {
  std::vector<SimViolation::Kind> kinds;
  std::vector<std::string> operations;
  std::vector<std::string> messages;
  bool reader_stream = true;
  std::uint64_t digest = 0;
  std::uint64_t steps = 0;
};

/// A planted bug: the buffer is freed on the writer's stream with no wait for the reader's copy
/// of it (the missing `reader → writer` event wait). Whether the copy reads freed memory depends
/// on which stream the scheduler advances first. Only use-after-free reports are kept: a
/// happens-before race detector may report the missing wait in every interleaving besides.
Outcome planted_missing_wait() {
  SimOptions options;  // GPULIFE_SIM_SEED chooses the schedule
  options.on_violation = [](const SimViolation&) {};
  Device device = Device::sim(options);
  Stream writer(device);
  Stream reader(device);
  constexpr std::size_t n = 1024;
  void* buffer = device.impl().allocate_async(n, *writer.view().impl());
  writer.view().memset(buffer, 7, n);
  Event written(device);
  writer.view().record(written);
  reader.view().wait(written);
  void* pinned = device.allocate_pinned(n);
  reader.view().copy(pinned, buffer, n, CopyKind::device_to_host);
  reader.view().copy(pinned, buffer, n, CopyKind::device_to_host);
  device.impl().deallocate_async(buffer, n, *writer.view().impl());  // BUG: no wait for reader
  device.synchronize();
  Outcome outcome;
  for (const SimViolation& v : device.take_violations()) {
    if (v.kind != SimViolation::Kind::use_after_free) continue;
    outcome.kinds.push_back(v.kind);
    outcome.operations.push_back(v.operation);
    outcome.messages.push_back(v.message());
    outcome.reader_stream = outcome.reader_stream && v.stream_id == reader.id();
  }
  outcome.digest = scheduler_of(device).digest();
  outcome.steps = scheduler_of(device).steps();
  device.deallocate_pinned(pinned);
  return outcome;
}

// Found by running planted_missing_wait() over seeds 1..: seed 1 and 3 are clean, seed 2 reads
// freed memory. Recorded here as a user records the seed a failure printed.
constexpr const char* failing_seed = "2";
constexpr const char* clean_seed = "1";

TEST(SimSchedulerReplay, ARecordedFailingSeedReproducesTheSameViolation100Times) {
  ScopedEnv env("GPULIFE_SIM_SEED", failing_seed);
  const Outcome first = planted_missing_wait();
  ASSERT_FALSE(first.kinds.empty()) << "the recorded seed no longer fails";
  EXPECT_TRUE(first.reader_stream);
  EXPECT_NE(first.messages.front().find("GPULIFE_SIM_SEED=" + std::string(failing_seed)),
            std::string::npos)
      << first.messages.front();
  for (int run = 1; run < 100; ++run) {
    const Outcome again = planted_missing_wait();
    ASSERT_EQ(again.kinds, first.kinds) << "run " << run;
    ASSERT_EQ(again.operations, first.operations) << "run " << run;
    ASSERT_TRUE(again.reader_stream) << "run " << run;
    ASSERT_EQ(again.digest, first.digest) << "run " << run;
    ASSERT_EQ(again.steps, first.steps) << "run " << run;
  }
}

TEST(SimSchedulerReplay, ARecordedCleanSeedStaysClean100Times) {
  ScopedEnv env("GPULIFE_SIM_SEED", clean_seed);
  for (int run = 0; run < 100; ++run) {
    ASSERT_TRUE(planted_missing_wait().kinds.empty()) << "run " << run;
  }
}

TEST(SimSchedulerReplay, SomeSeedsCatchThePlantedBugAndSomeDoNot) {
  std::size_t failing = 0;
  constexpr int seeds = 40;
  for (int seed = 1; seed <= seeds; ++seed) {
    ScopedEnv env("GPULIFE_SIM_SEED", std::to_string(seed).c_str());
    if (!planted_missing_wait().kinds.empty()) ++failing;
  }
  EXPECT_GT(failing, 0U);
  EXPECT_LT(failing, static_cast<std::size_t>(seeds));
}

// ---- threads mode ------------------------------------------------------------------------------

TEST(SimDelay, StreamsAreNumberedOnTheirDeviceSoThatDelaysDoNotDependOnEarlierTests) {
  SimOptions options = testing::delayed_options(3);
  const Device first = Device::sim(options);
  const Stream a(first);
  const Stream b(first);
  const Device second = Device::sim(options);  // as if a test before had made `first`
  const Stream c(second);
  const Stream d(second);
  auto index = [](const Stream& s) {
    return static_cast<detail::sim::SimStream*>(s.view().impl())->index();
  };
  EXPECT_EQ(index(a), 1U);
  EXPECT_EQ(index(b), 2U);
  EXPECT_EQ(index(c), 1U);
  EXPECT_EQ(index(d), 2U);
  EXPECT_NE(a.id(), c.id());
  EXPECT_EQ(detail::sim::delay_stream_seed(3, index(a)),
            detail::sim::delay_stream_seed(3, index(c)));
  EXPECT_NE(detail::sim::delay_stream_seed(3, 1), detail::sim::delay_stream_seed(3, 2));
}

// ---- the staging arena of pageable copies -------------------------------------------------------

TEST(SimStaging, ChunksAreRecycledOnceTheirCopiesRan) {
  detail::sim::StagingArena arena;
  const auto a = arena.acquire(1000);
  const auto b = arena.acquire(1000);
  EXPECT_EQ(a.chunk, b.chunk);
  EXPECT_GE(static_cast<std::size_t>(b.data - a.data), 1000U);
  arena.release(a);
  arena.release(b);
  const auto c = arena.acquire(1000);
  EXPECT_EQ(c.data, a.data) << "an empty chunk is carved from its start again";
  arena.release(c);
  const auto big = arena.acquire(std::size_t{1} << 20);  // a chunk of its own
  EXPECT_NE(big.chunk, c.chunk);
  arena.release(big);
}

TEST(SimStaging, PageableSourcesMayBeReusedAtOnceWhateverTheSizes) {
  for (const SimSchedule schedule : {SimSchedule::threads, SimSchedule::seeded}) {
    Device device = Device::sim({.schedule = schedule, .seed = 12});
    Stream stream(device);
    Gate gate;
    if (schedule == SimSchedule::threads) gate.block(stream);  // every copy stays queued
    const std::size_t sizes[] = {1, 100, 4096, 70000, 300000, 5000, 1 << 20, 17};
    std::vector<void*> buffers;
    std::vector<unsigned char> source;
    for (std::size_t i = 0; i < std::size(sizes); ++i) {
      for (int round = 0; round < 4; ++round) {
        source.assign(sizes[i],
                      static_cast<unsigned char>(i * 4 + static_cast<std::size_t>(round)));
        void* dst = device.impl().allocate(sizes[i]);
        buffers.push_back(dst);
        stream.view().copy(dst, source.data(), sizes[i], CopyKind::host_to_device);
        std::fill(source.begin(), source.end(), 0xEE);  // the copy staged the old bytes
      }
    }
    gate.open();
    stream.synchronize();
    std::size_t k = 0;
    for (std::size_t i = 0; i < std::size(sizes); ++i) {
      for (int round = 0; round < 4; ++round, ++k) {
        std::vector<unsigned char> back(sizes[i]);
        stream.view().copy(back.data(), buffers[k], sizes[i], CopyKind::device_to_host);
        ASSERT_EQ(back, std::vector<unsigned char>(
                            sizes[i],
                            static_cast<unsigned char>(i * 4 + static_cast<std::size_t>(round))))
            << "size " << sizes[i] << ", round " << round;
      }
    }
    for (std::size_t j = 0; j < buffers.size(); ++j) {
      device.impl().deallocate(buffers[j], sizes[j / 4]);
    }
    EXPECT_EQ(device.violation_count(), 0U);
  }
}

}  // namespace
}  // namespace gpulife
