// SPDX-License-Identifier: Apache-2.0
// Test main: routes gpulife's error handler into a list that fixtures check, so that an error
// gpulife contains (a finalizer that threw, a double free) fails the test that caused it.

#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <gpulife/error_handler.hpp>

#include "support/sim_test.hpp"

namespace gpulife::testing {
namespace {

std::mutex errors_mutex;
std::vector<std::string> errors;

}  // namespace

std::vector<std::string> take_reported_errors() {
  std::scoped_lock lock(errors_mutex);
  return std::exchange(errors, {});
}

}  // namespace gpulife::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gpulife::set_default_error_handler([](std::string_view message) {
    std::scoped_lock lock(gpulife::testing::errors_mutex);
    gpulife::testing::errors.emplace_back(message);
  });
  return RUN_ALL_TESTS();
}
