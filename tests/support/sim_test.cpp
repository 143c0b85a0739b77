// SPDX-License-Identifier: Apache-2.0
#include "support/sim_test.hpp"

namespace gpulife::testing {

namespace {

SimOptions quiet(SimOptions options) {
  // The device records every violation and TearDown checks them; the handler need not see them.
  if (!options.on_violation) options.on_violation = [](const SimViolation&) {};
  return options;
}

}  // namespace

SimTest::SimTest(SimOptions options) : device_(Device::sim(quiet(std::move(options)))) {
  take_reported_errors();  // a previous test's leftovers are that test's problem
}

void SimTest::TearDown() {
  for (const SimViolation& violation : take_violations()) {
    ADD_FAILURE() << "unexpected " << violation.message();
  }
  fail_on_reported_errors();
}

void fail_on_reported_errors() {
  for (const std::string& error : take_reported_errors()) {
    ADD_FAILURE() << "unexpected error report: " << error;
  }
}

std::vector<SimViolation> SimTest::take_violations() {
  device_.synchronize();
  return device_.take_violations();
}

SimOptions delayed_options(std::uint64_t seed) {
  SimOptions options;
  options.delay = true;
  options.delay_seed = seed;
  options.max_delay_us = 100;
  return options;
}

}  // namespace gpulife::testing
