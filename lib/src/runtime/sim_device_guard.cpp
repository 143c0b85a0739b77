// SPDX-License-Identifier: Apache-2.0
// Device memory the host cannot touch (see sim_device_guard.hpp).

#include "runtime/sim_device_guard.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "runtime/sim_pinned_guard.hpp"
#include "runtime/sim_spin_lock.hpp"

namespace gpulife::detail::sim {

namespace {

// Process-wide, as the signal handler is; never destroyed (a fault during static destruction
// still finds a valid table).
SpinLock& table_lock() {
  static auto* lock = new SpinLock;
  return *lock;
}
std::map<std::uintptr_t, std::size_t>& table() {  // base -> bytes
  static auto* ranges = new std::map<std::uintptr_t, std::size_t>;
  return *ranges;
}

// What this thread opened, to close again. A plain array: the signal handler fills it. Past its
// capacity, a range stays open (host accesses to it are then not caught).
constexpr std::size_t max_opened = 64;
thread_local std::array<std::uintptr_t, max_opened> opened{};
thread_local std::size_t opened_count = 0;
thread_local int access_depth = 0;

/// The guarded range holding `addr` (table lock held); end() if none.
std::map<std::uintptr_t, std::size_t>::iterator find(std::uintptr_t addr) noexcept {
  auto& ranges = table();
  auto it = ranges.upper_bound(addr);
  if (it == ranges.begin()) return ranges.end();
  --it;
  return addr < it->first + it->second ? it : ranges.end();
}

// ---- an async-signal-safe line on stderr ----
struct Line {
  std::array<char, 256> text{};
  std::size_t size = 0;
  void add(const char* s) noexcept {
    while (*s != '\0' && size < text.size()) text[size++] = *s++;
  }
  void hex(std::uintptr_t v) noexcept {
    add("0x");
    char digits[2 * sizeof(v)];
    std::size_t n = 0;
    do {
      digits[n++] = "0123456789abcdef"[v & 0xF];
      v >>= 4;
    } while (v != 0);
    while (n > 0 && size < text.size()) text[size++] = digits[--n];
  }
  void dec(std::size_t v) noexcept {
    char digits[24];
    std::size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0 && size < text.size()) text[size++] = digits[--n];
  }
};

}  // namespace

DeviceAccessScope::DeviceAccessScope() noexcept { ++access_depth; }
DeviceAccessScope::~DeviceAccessScope() {
  if (--access_depth == 0 && !WorkerScope::active()) device_guard::close_opened();
}

namespace device_guard {

bool add(void* base, std::size_t bytes) noexcept {
  install_fault_handler();
  try {
    std::scoped_lock lock(table_lock());
    if (mprotect(base, bytes, PROT_NONE) != 0) return false;
    table()[reinterpret_cast<std::uintptr_t>(base)] = bytes;
    return true;
  } catch (...) {
    mprotect(base, bytes, PROT_READ | PROT_WRITE);
    return false;
  }
}

void remove(const void* base) noexcept {
  std::scoped_lock lock(table_lock());
  table().erase(reinterpret_cast<std::uintptr_t>(base));
}

void close_opened() noexcept {
  if (opened_count == 0) return;
  std::scoped_lock lock(table_lock());
  for (std::size_t i = 0; i < opened_count; ++i) {
    // Only ranges still guarded: a freed one may have been unmapped and its addresses reused.
    auto it = table().find(opened[i]);
    if (it != table().end()) mprotect(reinterpret_cast<void*>(it->first), it->second, PROT_NONE);
  }
  opened_count = 0;
}

bool handle_fault(std::uintptr_t addr) noexcept {
  std::uintptr_t base = 0;
  std::size_t bytes = 0;
  {
    std::scoped_lock lock(table_lock());
    auto it = find(addr);
    if (it == table().end()) return false;
    base = it->first;
    bytes = it->second;
    if (WorkerScope::active() || access_depth > 0) {
      // The device's own access: open the range for this thread until its operation ends.
      mprotect(reinterpret_cast<void*>(base), bytes, PROT_READ | PROT_WRITE);
      bool known = false;
      for (std::size_t i = 0; i < opened_count && !known; ++i) known = opened[i] == base;
      if (!known) {
        if (opened_count < max_opened) opened[opened_count++] = base;
      }
      return true;
    }
  }
  // Host code dereferenced device memory: crash, as on a GPU, saying why.
  Line line;
  line.add("gpulife sim: host code dereferenced device memory at ");
  line.hex(addr);
  line.add(" (allocation [");
  line.hex(base);
  line.add(", +");
  line.dec(bytes);
  line.add(")): device pointers are not host-accessible on a GPU\n");
  const ssize_t written = write(STDERR_FILENO, line.text.data(), line.size);
  (void)written;
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGSEGV, &fallback, nullptr);
  return true;  // the access faults again under the default action
}

}  // namespace device_guard
}  // namespace gpulife::detail::sim
