// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test support: a fixture with a fresh simulated device per test that fails the test when the
// device saw a violation or gpulife reported an error the test did not expect.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/runtime/device.hpp>

namespace gpulife::testing {

/// Messages that reached the default error handler since the last `take_reported_errors`.
std::vector<std::string> take_reported_errors();

/// Fails the current test (ADD_FAILURE) once per message that reached the default error handler
/// since the last `take_reported_errors`: the errors gpulife contained instead of throwing. The
/// tear-down of every device fixture calls it.
void fail_on_reported_errors();

/// A host-side gate: a stream blocked on it holds all later work of that stream, which makes
/// races between streams deterministic in tests. Queued waits share the gate's state, so the
/// gate may go out of scope while a stream worker is still leaving its wait.
class Gate {
 public:
  void open() {
    {
      std::scoped_lock lock(state_->mutex);
      state_->open = true;
    }
    state_->cv.notify_all();
  }
  void wait() { wait_on(*state_); }
  /// Queues a wait for the gate on `stream`.
  void block(StreamView stream) {
    stream.host_callback([state = state_] { wait_on(*state); });
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
  };
  static void wait_on(State& state) {
    std::unique_lock lock(state.mutex);
    state.cv.wait(lock, [&] { return state.open; });
  }
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

/// Fixture: `device_` is a new simulated device. At tear-down the device is synchronised and
/// every violation or reported error that the test did not take fails the test.
class SimTest : public ::testing::Test {
 protected:
  explicit SimTest(SimOptions options = {});
  void TearDown() override;

  /// Synchronises the device and returns the violations seen so far.
  std::vector<SimViolation> take_violations();
  /// Returns the messages reported through the error handler so far.
  std::vector<std::string> take_errors() { return take_reported_errors(); }

  Device device_;
};

/// @return a device with the delay option on, seeded per test
SimOptions delayed_options(std::uint64_t seed = 7);

/// @return the first violation of `kind` in `violations`, or null. Violations found when work
/// is queued (races) and when it runs are reported by different threads, in either order.
inline const SimViolation* find_violation(const std::vector<SimViolation>& violations,
                                          SimViolation::Kind kind) {
  for (const SimViolation& violation : violations) {
    if (violation.kind == kind) return &violation;
  }
  return nullptr;
}

}  // namespace gpulife::testing
