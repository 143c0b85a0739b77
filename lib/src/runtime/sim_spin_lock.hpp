// SPDX-License-Identifier: Apache-2.0
#pragma once

// The lock of the sim's process-wide guard tables (pinned buffers, guarded device memory).

#include <atomic>
#include <thread>

namespace gpulife::detail::sim {

/// Taken by the SIGSEGV handler too, so a spin lock: no allocation and no futex state a signal
/// could interrupt. No thread touches guarded memory while holding it, so the handler of a fault
/// never waits for its own thread.
class SpinLock {
 public:
  void lock() noexcept {
    while (flag_.test_and_set(std::memory_order_acquire)) std::this_thread::yield();
  }
  void unlock() noexcept { flag_.clear(std::memory_order_release); }

 private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

}  // namespace gpulife::detail::sim
