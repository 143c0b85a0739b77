// SPDX-License-Identifier: Apache-2.0
// The whole library under injected faults, on two threads at once, checked against a model
// after every round (tools/workload): no device memory leaked (the context, the cache, the pool,
// the adaptor and the simulated device agree with the tensors alive), no double free or use
// after free, every finalizer and expiry callback run exactly once, every tensor holding the
// bytes it should, every failure a typed gpulife exception.
//
// GPULIFE_RELIABILITY_ROUNDS=<n> runs longer; GPULIFE_RELIABILITY_SEED=<s> another seed.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/error_handler.hpp>

#include "runtime/sim_device.hpp"
#include "runtime/sim_scheduler.hpp"
#include "workload.hpp"

namespace gpulife {
namespace {

std::uint64_t from_env(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 10) : fallback;
}

struct RunSpec {
  std::uint64_t seed;
  std::size_t actors;
  SimSchedule schedule;
  bool delay;  // threads mode
};

std::string describe(const RunSpec& run) {
  return "seed " + std::to_string(run.seed) + ", " + std::to_string(run.actors) + " threads, " +
         (run.schedule == SimSchedule::seeded
              ? "seeded scheduler"
              : std::string("stream threads") + (run.delay ? " with delays" : ""));
}

void PrintTo(const RunSpec& run, std::ostream* out) { *out << describe(run); }

class RandomisedWorkload : public ::testing::TestWithParam<RunSpec> {};

TEST_P(RandomisedWorkload, KeepsEveryInvariantUnderFaults) {
  const RunSpec run = GetParam();
  workload::Config config;
  config.seed = from_env("GPULIFE_RELIABILITY_SEED", run.seed);
  config.actors = run.actors;
  config.schedule = run.schedule;
  config.sim_delay = run.delay;
  const std::uint64_t rounds = from_env("GPULIFE_RELIABILITY_ROUNDS", 150);
  workload::Workload w(config);
  std::uint64_t round = 0;
  try {
    for (; round < rounds; ++round) {
      w.round(6);
      w.check();
    }
    w.finish();
  } catch (const workload::InvariantViolation& e) {
    const std::string replay = w.device().replay_seed();
    FAIL() << "seed " << config.seed << ", round " << round << ": " << e.what() << "\n"
           << w.summary() << "\nreplay: GPULIFE_RELIABILITY_SEED=" << config.seed
           << (replay.empty() ? "" : " GPULIFE_SIM_SEED=" + replay) << " --gtest_filter="
           << ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() << "."
           << ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  const workload::Counters c = w.counters();
  std::cout << "[ workload ] " << describe(run) << ": " << w.summary() << "\n";
  RecordProperty("operations", std::to_string(c.operations));
  RecordProperty("faults", std::to_string(c.device_faults + c.pool_faults));
  // The run must have exercised what it claims to.
  EXPECT_EQ(c.checks, rounds + 1);
  EXPECT_GT(c.device_faults, c.operations / 50);
  // The pool goes upstream only for segments (a few per hundred operations): a fault in one in
  // twenty of them runs its retry path often enough.
  EXPECT_GT(c.pool_faults, c.pool_segments / 20);
  EXPECT_GT(c.pool_splits, c.operations / 50) << "blocks were split";
  EXPECT_GT(c.pool_merges, c.operations / 50) << "blocks were merged";
  EXPECT_GT(c.failed_operations, c.operations / 50);
  EXPECT_GT(c.cache_hits, c.operations / 200);
  EXPECT_GT(c.finalizers_run, c.operations / 50);
  EXPECT_GT(c.expiry_callbacks_run, c.operations / 200);
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomisedWorkload,
                         ::testing::Values(RunSpec{1, 2, SimSchedule::seeded, false},
                                           RunSpec{2, 2, SimSchedule::threads, false},
                                           RunSpec{3, 1, SimSchedule::seeded, false},
                                           RunSpec{4, 2, SimSchedule::threads, true}),
                         [](const auto& param_info) {
                           const RunSpec& run = param_info.param;
                           return "seed" + std::to_string(run.seed) + "_" +
                                  std::to_string(run.actors) + "threads" +
                                  (run.schedule == SimSchedule::seeded ? "_seeded" : "") +
                                  (run.delay ? "_delayed" : "");
                         });

// The checks can fail: what the model did not make, or a report it did not expect, is caught.
TEST(WorkloadChecks, ATensorTheModelDoesNotKnowIsALeak) {
  workload::Workload w({});
  w.check();
  DeviceTensor stray = w.context().empty({256}, DType::u8);
  EXPECT_THROW(w.check(), workload::InvariantViolation);
  stray.reset();
  w.check();
}

// The fuzzer's reuse of one workload: after `reset` a run behaves exactly as the same run on a
// new workload (one actor, seeded scheduler: a pure function of the seeds), so an input replays
// alone as it ran in the middle of a campaign.
TEST(WorkloadReuse, ARunAfterResetBehavesAsOnANewWorkload) {
  if (std::getenv("GPULIFE_SIM_SEED") != nullptr) {
    GTEST_SKIP() << "GPULIFE_SIM_SEED overrides the seeds this test compares";
  }
  workload::Config config;
  config.actors = 1;
  const SimFaults device_faults = config.device_faults;
  const FaultOptions pool_faults = config.pool_faults;
  auto run = [&](workload::Workload& w, std::uint64_t seed) {
    const workload::Counters before = w.counters();
    w.restart(seed, device_faults, pool_faults);
    workload::RandomChoices choices(seed * 7919);
    w.drive(choices, 300);
    w.reset();
    const workload::Counters after = w.counters();
    // The interleaving the device's scheduler chose (a digest of every step since the reseed).
    const auto* scheduler = static_cast<detail::sim::SimDevice&>(w.device().impl()).scheduler();
    return std::vector<std::uint64_t>{scheduler->digest(),
                                      scheduler->steps(),
                                      after.operations - before.operations,
                                      after.failed_operations - before.failed_operations,
                                      after.device_faults - before.device_faults,
                                      after.pool_faults - before.pool_faults,
                                      after.cuda_errors - before.cuda_errors,
                                      after.out_of_memory - before.out_of_memory,
                                      after.expired - before.expired,
                                      after.invalid_arguments - before.invalid_arguments,
                                      after.tensors_created - before.tensors_created,
                                      after.finalizers_run - before.finalizers_run,
                                      after.expiry_callbacks_run - before.expiry_callbacks_run,
                                      after.cache_hits - before.cache_hits,
                                      after.cache_misses - before.cache_misses,
                                      after.cache_evictions - before.cache_evictions,
                                      after.pressure_events - before.pressure_events};
  };
  try {
    workload::Workload reused(config);
    (void)run(reused, 11);  // leaves its own traces: caches, ids, the sim's quarantine
    const std::vector<std::uint64_t> second = run(reused, 12);
    workload::Workload fresh(config);
    const std::vector<std::uint64_t> alone = run(fresh, 12);
    EXPECT_EQ(second, alone);
    EXPECT_GT(alone[1], 100U);           // scheduler steps
    EXPECT_GT(alone[2], 250U);           // operations
    EXPECT_GT(alone[4] + alone[5], 0U);  // faults
  } catch (const workload::InvariantViolation& e) {
    FAIL() << e.what();
  }
}

// The fuzzer's other ending: `finish` shuts the context down and the next `restart` builds a
// new one, whose statistics start from zero; the model's checks must hold on it as on the first.
TEST(WorkloadReuse, ARestartAfterFinishChecksTheNewContext) {
  workload::Config config;
  config.actors = 1;
  try {
    workload::Workload w(config);
    for (std::uint64_t seed = 21; seed < 24; ++seed) {
      w.restart(seed, config.device_faults, config.pool_faults);
      workload::RandomChoices choices(seed * 7919);
      w.drive(choices, 300);
      EXPECT_GT(w.counters().finalizers_run, 0U) << "seed " << seed;
      w.finish();
    }
  } catch (const workload::InvariantViolation& e) {
    FAIL() << e.what();
  }
}

TEST(WorkloadChecks, AnUnexpectedReportFailsTheCheck) {
  workload::Workload w({});
  report_error("PoolResource: deallocate of 0x1: already deallocated (double free)");
  EXPECT_THROW(w.check(), workload::InvariantViolation);
}

}  // namespace
}  // namespace gpulife
