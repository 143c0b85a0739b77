// SPDX-License-Identifier: Apache-2.0
#include "support/backend_test.hpp"

#include <exception>

namespace gpulife::testing {

::testing::internal::ParamGenerator<Backend> backends() {
  return ::testing::Values(Backend::sim, Backend::cuda);
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::sim ? "sim" : "cuda";
}

BackendFixture::BackendFixture(SimOptions sim_options) : sim_options_(std::move(sim_options)) {
  // The device records every violation and TearDown checks them; the handler need not see them.
  if (!sim_options_.on_violation) sim_options_.on_violation = [](const SimViolation&) {};
}

void BackendFixture::SetUp() {
  if (on_sim()) {
    device_ = Device::sim(sim_options_);
  } else {
    const CudaProbe probe = Device::probe_cuda();
#if defined(GPULIFE_DEVICE_REQUIRED)
    ASSERT_TRUE(probe.available) << "GPULIFE_DEVICE_REQUIRED: no CUDA device: " << probe.reason;
#else
    if (!probe.available) GTEST_SKIP() << "no CUDA device: " << probe.reason;
#endif
    device_ = Device::cuda(0);
  }
  take_reported_errors();  // a previous test's leftovers are that test's problem
}

void BackendFixture::TearDown() {
  if (!device_.valid()) return;  // skipped
  try {
    for (const SimViolation& violation : take_violations()) {
      ADD_FAILURE() << "unexpected " << violation.message();
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "synchronising " << device_.name() << " at tear-down: " << e.what();
  }
  fail_on_reported_errors();
}

std::vector<SimViolation> BackendFixture::take_violations() {
  device_.synchronize();
  return device_.take_violations();
}

void BackendContextTest::SetUp() {
  BackendTest::SetUp();
  if (IsSkipped() || HasFatalFailure()) return;
  ContextOptions options = context_options_;
  options.device = device_;
  ctx_.emplace(std::move(options));
}

void BackendContextTest::TearDown() {
  ctx_.reset();
  BackendTest::TearDown();
}

}  // namespace gpulife::testing
