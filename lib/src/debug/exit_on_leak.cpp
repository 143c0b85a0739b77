// SPDX-License-Identifier: Apache-2.0
#include "debug/exit_on_leak.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>

namespace gpulife::detail {
namespace {

std::atomic<int> pending_code{0};
std::atomic<bool> exiting{false};

[[noreturn]] void exit_now(int code) noexcept {
  // _Exit skips the remaining destructors and handlers, so flush what a test runner or a log
  // reader would miss.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(code);
}

void exit_handler() {
  exiting.store(true, std::memory_order_seq_cst);
  if (const int code = pending_code.load(std::memory_order_seq_cst); code != 0) exit_now(code);
}

}  // namespace

void arm_exit_on_leak() {
  static std::once_flag armed;
  std::call_once(armed, [] {
    std::atexit(exit_handler);
    std::at_quick_exit(exit_handler);
  });
}

void exit_on_leak(int code) noexcept {
  int expected = 0;
  pending_code.compare_exchange_strong(expected, code, std::memory_order_seq_cst);
  if (exiting.load(std::memory_order_seq_cst)) exit_now(pending_code.load());
}

}  // namespace gpulife::detail
