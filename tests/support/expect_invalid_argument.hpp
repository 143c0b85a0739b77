// SPDX-License-Identifier: Apache-2.0
#pragma once

// Test support: a call must throw std::invalid_argument whose message names the argument.

#include <stdexcept>
#include <utility>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace gpulife::testing {

template <class Fn>
void expect_invalid_argument(Fn&& fn, const char* argument) {
  try {
    std::forward<Fn>(fn)();
    ADD_FAILURE() << "no std::invalid_argument naming " << argument;
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(argument));
  }
}

}  // namespace gpulife::testing
