// SPDX-License-Identifier: Apache-2.0
// Tests that read the environment (GPULIFE_DEVICE, GPULIFE_SIM_SEED, GPULIFE_SIM_PROFILE, ...)
// set a variable for one scope and put back what was there, set or unset.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace gpulife::testing {

/// Sets (or, with `value` null, unsets) an environment variable for one scope and restores it.
/// Not thread-safe, as setenv is not: use it where no other test thread reads the environment.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace gpulife::testing
