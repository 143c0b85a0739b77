// SPDX-License-Identifier: Apache-2.0
// In leak mode the simulated device's violation reports name the tensor that was misused.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/context.hpp>
#include <gpulife/memory/async_resource.hpp>

#include "support/context_test.hpp"
#include "support/sim_test.hpp"

namespace gpulife {
namespace {

using testing::ContextTest;
using testing::Gate;

ContextOptions leak_mode() {
  ContextOptions options;
  options.debug.leaks = true;
  options.debug.use_environment = false;
  return options;
}

std::string name_of(const DeviceTensor& t) {
  return "tensor #" + std::to_string(t.id()) + " '" + t.tag() + "'";
}

/// Frees a tensor and then writes through the pointer it had, on its own stream.
SimViolation use_after_free(Context& ctx, Stream& stream, std::string& name,
                            std::vector<SimViolation> (*take)(void*), void* fixture) {
  DeviceTensor t = ctx.empty({256}, DType::u8, stream, "weights");
  void* stale = t.data();
  name = name_of(t);
  t.reset();
  stream.view().memset(stale, 0, 256);
  const std::vector<SimViolation> seen = take(fixture);
  EXPECT_EQ(seen.size(), 1U);
  return seen.empty() ? SimViolation{} : seen[0];
}

class SimViolationLeakMode : public ContextTest {
 protected:
  SimViolationLeakMode() : ContextTest({}, leak_mode()) {}
  static std::vector<SimViolation> take(void* self) {
    return static_cast<SimViolationLeakMode*>(self)->take_violations();
  }
};

TEST_F(SimViolationLeakMode, UseAfterFreeNamesTheTensor) {
  Stream stream(device_);
  std::string name;
  const SimViolation violation = use_after_free(ctx(), stream, name, &take, this);
  EXPECT_EQ(violation.kind, SimViolation::Kind::use_after_free);
  EXPECT_EQ(violation.owner, name);
  EXPECT_NE(violation.message().find(name), std::string::npos) << violation.message();
}

TEST_F(SimViolationLeakMode, UseBeforeTheAllocationReachedItsStreamNamesTheTensor) {
  Stream home(device_);
  Stream other(device_);
  Gate gate;
  gate.block(home);  // the allocation on `home` cannot execute yet
  DeviceTensor t = ctx().empty({256}, DType::u8, home, "early");
  // Missing synchronisation: another stream writes before the allocation exists.
  other.view().memset(t.data(), 0, 256);
  other.view().synchronize();
  gate.open();
  const std::vector<SimViolation> seen = take_violations();
  ASSERT_EQ(seen.size(), 2U);
  // Found when the memset was queued: nothing orders it after the allocation on `home`.
  const SimViolation* race = testing::find_violation(seen, SimViolation::Kind::race);
  ASSERT_NE(race, nullptr);
  EXPECT_EQ(race->owner, name_of(t));
  EXPECT_EQ(race->other_stream_id, home.id());
  EXPECT_NE(race->site.find("sim_violation_test.cpp"), std::string::npos) << race->site;
  EXPECT_NE(race->other_site.find("sim_violation_test.cpp"), std::string::npos)
      << "the allocation's site is the user's ctx().empty call: " << race->other_site;
  // And when it ran, before the allocation.
  const SimViolation* early = testing::find_violation(seen, SimViolation::Kind::unallocated);
  ASSERT_NE(early, nullptr);
  EXPECT_EQ(early->owner, name_of(t));
}

TEST_F(SimViolationLeakMode, MemoryThatWasNeverAllocatedNamesTheTensorOverIt) {
  Stream stream(device_);
  std::vector<std::byte> host(64);  // not device memory: a producer handed over a bad pointer
  DeviceTensor t = ctx().wrap(
      host.data(), {64}, {}, DType::u8, stream, [](const TensorInfo&) {}, "foreign");
  stream.view().memset(t.data(), 0, 64);
  const std::vector<SimViolation> seen = take_violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].kind, SimViolation::Kind::unallocated);
  EXPECT_EQ(seen[0].owner, name_of(t));
}

class SimViolationWithoutLeakMode : public ContextTest {
 protected:
  SimViolationWithoutLeakMode() : ContextTest({}, {.debug = {.use_environment = false}}) {}
  static std::vector<SimViolation> take(void* self) {
    return static_cast<SimViolationWithoutLeakMode*>(self)->take_violations();
  }
};

TEST_F(SimViolationWithoutLeakMode, TheOwnerIsUnnamed) {
  Stream stream(device_);
  std::string name;
  const SimViolation violation = use_after_free(ctx(), stream, name, &take, this);
  EXPECT_EQ(violation.kind, SimViolation::Kind::use_after_free);
  EXPECT_EQ(violation.owner, "") << "labels cost nothing unless leak mode is on";

  std::vector<std::byte> host(64);
  DeviceTensor t = ctx().wrap(
      host.data(), {64}, {}, DType::u8, stream, [](const TensorInfo&) {}, "foreign");
  stream.view().memset(t.data(), 0, 64);
  const std::vector<SimViolation> seen = take_violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].owner, "");
}

}  // namespace
}  // namespace gpulife
