// SPDX-License-Identifier: Apache-2.0
// Part of the race detector: pinned buffers are protected from the host while queued copies
// use them (see sim_pinned_guard.hpp).

#include "runtime/sim_pinned_guard.hpp"

#include "runtime/sim_device_guard.hpp"
#include "runtime/sim_spin_lock.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <mutex>
#include <thread>

namespace gpulife::detail::sim {

namespace {

thread_local bool runs_queued_work = false;

// Process-wide, because signal handlers are: every guarded buffer of every simulated device,
// by the address the user holds. Never destroyed, so that a fault during static destruction
// still finds a valid (empty) table.
SpinLock& table_lock() {
  static auto* lock = new SpinLock;
  return *lock;
}
std::map<std::uintptr_t, PinnedGuard::Buffer>& table() {
  static auto* buffers = new std::map<std::uintptr_t, PinnedGuard::Buffer>;
  return *buffers;
}

struct sigaction previous_action {};
std::once_flag install_once;

bool fault_was_write(void* context, int protection) noexcept {
#if defined(__x86_64__)
  // The page-fault error code: bit 1 is set for a write.
  (void)protection;
  const auto* uc = static_cast<const ucontext_t*>(context);
  return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
  (void)context;
  // Read-only pages fault only on writes; on inaccessible ones the direction is unknown here.
  return protection == PROT_READ;
#endif
}

void chain(int signal, siginfo_t* info, void* context) {
  if ((previous_action.sa_flags & SA_SIGINFO) != 0 && previous_action.sa_sigaction != nullptr) {
    previous_action.sa_sigaction(signal, info, context);
    return;
  }
  if (previous_action.sa_handler == SIG_DFL || previous_action.sa_handler == SIG_IGN) {
    // Not ours: the access faults again under the default action, as it would have.
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal, &fallback, nullptr);
    return;
  }
  previous_action.sa_handler(signal);
}

void on_fault(int signal, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  bool ours = false;
  {
    std::scoped_lock lock(table_lock());
    auto& buffers = table();
    auto it = buffers.upper_bound(addr);
    if (it != buffers.begin()) {
      --it;
      PinnedGuard::Buffer& buffer = it->second;
      if (addr < it->first + buffer.size && buffer.protection != (PROT_READ | PROT_WRITE)) {
        ours = true;
        if (!runs_queued_work) {
          const bool write = fault_was_write(context, buffer.protection);
          buffer.guard->note_fault(addr, write, buffer);
        }
        // Open the buffer: the access completes (as on a GPU, where nothing stops it); the
        // next copy or synchronisation that concerns the buffer protects it again.
        mprotect(reinterpret_cast<void*>(it->first), buffer.size, PROT_READ | PROT_WRITE);
        buffer.protection = PROT_READ | PROT_WRITE;
      }
    }
  }
  if (!ours && !device_guard::handle_fault(addr)) chain(signal, info, context);
}

}  // namespace

void install_fault_handler() {
  std::call_once(install_once, [] {
    // The handler must not allocate: the table is made before it can run.
    (void)table_lock();
    (void)table();
    struct sigaction action {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_action);
  });
}

namespace {

std::size_t page_size() noexcept {
  static const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

// ---- WorkerScope -------------------------------------------------------------------------------

WorkerScope::WorkerScope() noexcept : was_(runs_queued_work) { runs_queued_work = true; }
WorkerScope::~WorkerScope() { runs_queued_work = was_; }
bool WorkerScope::active() noexcept { return runs_queued_work; }

// ---- PinnedGuard -------------------------------------------------------------------------------

PinnedGuard::~PinnedGuard() {
  std::vector<std::pair<void*, Buffer>> left;
  {
    std::scoped_lock lock(table_lock());
    auto& buffers = table();
    for (auto it = buffers.begin(); it != buffers.end();) {
      if (it->second.guard == this) {
        left.emplace_back(reinterpret_cast<void*>(it->first), std::move(it->second));
        it = buffers.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [user, buffer] : left) {
    munmap(user, buffer.size);
    munmap(buffer.alias, buffer.size);
  }
}

void* PinnedGuard::allocate(std::size_t bytes, std::size_t& size) noexcept {
  install_fault_handler();
  size = (bytes + page_size() - 1) / page_size() * page_size();
  const int fd = memfd_create("gpulife-sim-pinned", MFD_CLOEXEC);
  if (fd < 0) return nullptr;
  void* user = MAP_FAILED;
  void* alias = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(size)) == 0) {
    user = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    alias = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  close(fd);  // the mappings keep the memory
  if (user == MAP_FAILED || alias == MAP_FAILED) {
    if (user != MAP_FAILED) munmap(user, size);
    if (alias != MAP_FAILED) munmap(alias, size);
    return nullptr;
  }
  try {
    Buffer buffer;
    buffer.guard = this;
    buffer.size = size;
    buffer.alias = static_cast<unsigned char*>(alias);
    buffer.protection = PROT_READ | PROT_WRITE;
    std::scoped_lock lock(table_lock());
    table().emplace(reinterpret_cast<std::uintptr_t>(user), std::move(buffer));
  } catch (...) {
    munmap(user, size);
    munmap(alias, size);
    return nullptr;
  }
  return user;
}

bool PinnedGuard::deallocate(void* ptr) noexcept {
  Buffer buffer;
  {
    std::scoped_lock lock(table_lock());
    auto& buffers = table();
    auto it = buffers.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == buffers.end() || it->second.guard != this) return false;
    buffer = std::move(it->second);
    buffers.erase(it);
  }
  munmap(ptr, buffer.size);
  munmap(buffer.alias, buffer.size);
  return true;
}

void* PinnedGuard::device_view(const void* ptr) const noexcept {
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  std::scoped_lock lock(table_lock());
  const auto& buffers = table();
  auto it = buffers.upper_bound(addr);
  if (it == buffers.begin()) return const_cast<void*>(ptr);
  --it;
  if (addr >= it->first + it->second.size || it->second.guard != this) {
    return const_cast<void*>(ptr);
  }
  return it->second.alias + (addr - it->first);
}

void PinnedGuard::protect(std::uintptr_t base, Buffer& buffer) {
  int wanted = PROT_READ | PROT_WRITE;
  for (const Pending& pending : buffer.pending) {
    if (pending.writes) {
      wanted = PROT_NONE;
      break;
    }
    wanted = PROT_READ;
  }
  if (wanted == buffer.protection) return;
  if (mprotect(reinterpret_cast<void*>(base), buffer.size, wanted) == 0) buffer.protection = wanted;
}

void PinnedGuard::on_use(const RangeUse& use, std::uint32_t agent, std::uint64_t tick,
                         const std::shared_ptr<const OpRecord>& op) {
  if (use.bytes == 0) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(use.ptr);
  std::scoped_lock lock(table_lock());
  auto& buffers = table();
  auto it = buffers.upper_bound(begin);
  if (it == buffers.begin()) return;
  --it;
  Buffer& buffer = it->second;
  if (begin >= it->first + buffer.size || buffer.guard != this) return;
  // One pending use per stream and direction is enough: a later one of the same stream is
  // ordered after the earlier, so the host reaches the earlier first.
  std::erase_if(buffer.pending, [&](const Pending& p) {
    return p.agent == agent && p.writes == (use.use != Use::read);
  });
  buffer.pending.push_back({begin, begin + use.bytes, use.use != Use::read, agent, tick, op});
  protect(it->first, buffer);
}

void PinnedGuard::on_host(const VectorClock& host) {
  std::scoped_lock lock(table_lock());
  for (auto& [base, buffer] : table()) {
    if (buffer.guard != this || buffer.pending.empty()) continue;
    std::erase_if(buffer.pending, [&](const Pending& p) { return host.get(p.agent) >= p.tick; });
    protect(base, buffer);
  }
}

void PinnedGuard::note_fault(std::uintptr_t addr, bool write, const Buffer& buffer) noexcept {
  for (const Pending& pending : buffer.pending) {
    if (addr < pending.begin || addr >= pending.end || !(pending.writes || write)) continue;
    for (Slot& slot : slots_) {
      int expected = 0;
      if (!slot.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
      slot.addr = addr;
      slot.write = write;
      slot.other_writes = pending.writes;
      slot.op = pending.op;  // a reference count, no allocation
      slot.state.store(2, std::memory_order_release);
      recorded_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    lost_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
}

std::vector<SimViolation> PinnedGuard::take_recorded() {
  std::vector<SimViolation> found;
  for (Slot& slot : slots_) {
    if (slot.state.load(std::memory_order_acquire) != 2) continue;
    SimViolation v;
    v.kind = SimViolation::Kind::race;
    v.operation = slot.write ? "host write to a pinned buffer" : "host read of a pinned buffer";
    v.ptr = reinterpret_cast<const void*>(slot.addr);
    v.bytes = 1;
    if (slot.op) {
      v.other_operation = slot.op->operation + (slot.other_writes ? " (writes)" : " (reads)");
      v.other_stream_id = slot.op->stream_id;
      v.other_site = format_site(slot.op->site);
    }
    v.rule = "the host touched the buffer before synchronising with a queued copy that uses it";
    slot.op.reset();
    slot.state.store(0, std::memory_order_release);
    recorded_.fetch_sub(1, std::memory_order_acq_rel);
    found.push_back(std::move(v));
  }
  return found;
}

}  // namespace gpulife::detail::sim
