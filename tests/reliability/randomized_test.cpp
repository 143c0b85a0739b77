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

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/error_handler.hpp>

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
  bool delay;
};

void PrintTo(const RunSpec& run, std::ostream* out) {
  *out << "seed " << run.seed << ", " << run.actors << " threads" << (run.delay ? ", delays" : "");
}

class RandomisedWorkload : public ::testing::TestWithParam<RunSpec> {};

TEST_P(RandomisedWorkload, KeepsEveryInvariantUnderFaults) {
  const RunSpec run = GetParam();
  workload::Config config;
  config.seed = from_env("GPULIFE_RELIABILITY_SEED", run.seed);
  config.actors = run.actors;
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
    FAIL() << "seed " << config.seed << ", round " << round << ": " << e.what() << "\n"
           << w.summary();
  }
  const workload::Counters c = w.counters();
  std::cout << "[ workload ] seed " << config.seed << ", " << run.actors << " threads"
            << (run.delay ? ", sim delays" : "") << ": " << w.summary() << "\n";
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
                         ::testing::Values(RunSpec{1, 2, false}, RunSpec{2, 2, false},
                                           RunSpec{3, 1, false}, RunSpec{4, 2, true}),
                         [](const auto& param_info) {
                           return "seed" + std::to_string(param_info.param.seed) + "_" +
                                  std::to_string(param_info.param.actors) + "threads" +
                                  (param_info.param.delay ? "_delayed" : "");
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

TEST(WorkloadChecks, AnUnexpectedReportFailsTheCheck) {
  workload::Workload w({});
  report_error("PoolResource: deallocate of 0x1: already deallocated (double free)");
  EXPECT_THROW(w.check(), workload::InvariantViolation);
}

}  // namespace
}  // namespace gpulife
