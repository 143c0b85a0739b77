// SPDX-License-Identifier: Apache-2.0
// The simulated device's queues: each stream is an in-order queue of operations. In threads
// mode the stream's own worker thread runs it; in seeded mode the device's scheduler does
// (sim_scheduler.cpp).

#include "runtime/sim_device.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "runtime/sim_bytes.hpp"
#include "runtime/sim_device_guard.hpp"
#include "runtime/sim_pinned_guard.hpp"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "runtime/sim_scheduler.hpp"

namespace gpulife::detail::sim {

namespace {

/// Sleeps `us` microseconds, not the ~55 µs that Linux's default timer slack makes of every
/// short sleep: the worker's slack is 1 ns (see `SimStream::run`), and the last stretch of a
/// short delay is a yield loop.
void delay_for(std::uint32_t us) {
  if (us == 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  if (us > 20) std::this_thread::sleep_for(std::chrono::microseconds(us - 10));
  while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
}

}  // namespace

std::uint64_t delay_stream_seed(std::uint64_t delay_seed, std::size_t index) noexcept {
  return delay_seed * 0x9E3779B97F4A7C15ULL + index;
}

void run_op(std::uint64_t stream_id, std::function<void()>& run) noexcept {
  try {
    run();
  } catch (const std::exception& e) {
    report_error(std::string("sim stream ") + std::to_string(stream_id) +
                 ": queued operation threw: " + e.what());
  } catch (...) {
    report_error("sim stream " + std::to_string(stream_id) + ": queued operation threw");
  }
}

void run_as_device(std::uint64_t stream_id, std::function<void()>& run) noexcept {
  {
    const WorkerScope worker;  // the device's access: guarded memory opens to it
    run_op(stream_id, run);
    run = nullptr;  // release what the operation captured before the stream counts it done
  }
  device_guard::close_opened();  // guarded device memory it opened is closed to the host again
}

// ---- StagingArena ------------------------------------------------------------------------------

struct StagingArena::Chunk {
  std::unique_ptr<unsigned char[]> data;
  std::size_t capacity = 0;
  std::size_t used = 0;    // bytes carved so far
  std::size_t leases = 0;  // carved and not released
  bool retired = false;    // no longer carved: recycled or freed when its last lease goes
};

StagingArena::~StagingArena() {
  delete current_;
  for (Chunk* chunk : spares_) delete chunk;
}

void StagingArena::destroy(Chunk* chunk) noexcept { delete chunk; }

StagingArena::Lease StagingArena::acquire(std::size_t bytes) {
  const std::size_t size = (bytes + 15) / 16 * 16;
  std::scoped_lock lock(mutex_);
  if (size > chunk_bytes / 4) {
    // Large: a chunk of its own, freed when its copy has run.
    auto chunk = std::make_unique<Chunk>();
    chunk->data.reset(new unsigned char[size]);
    chunk->capacity = size;
    chunk->used = size;
    chunk->leases = 1;
    chunk->retired = true;
    unsigned char* data = chunk->data.get();
    return {data, chunk.release()};
  }
  if (current_ == nullptr || current_->capacity - current_->used < size) {
    Chunk* next = nullptr;
    if (!spares_.empty()) {
      next = spares_.back();
      spares_.pop_back();
    } else {
      auto chunk = std::make_unique<Chunk>();
      chunk->data.reset(new unsigned char[chunk_bytes]);
      chunk->capacity = chunk_bytes;
      next = chunk.release();
    }
    if (current_ != nullptr) {
      if (current_->leases == 0) {
        current_->used = 0;
        spares_.push_back(current_);
      } else {
        current_->retired = true;
      }
    }
    current_ = next;
  }
  unsigned char* data = current_->data.get() + current_->used;
  current_->used += size;
  ++current_->leases;
  return {data, current_};
}

void StagingArena::release(const Lease& lease) noexcept {
  Chunk* chunk = lease.chunk;
  if (chunk == nullptr) return;
  std::scoped_lock lock(mutex_);
  if (--chunk->leases != 0) return;
  if (chunk == current_) {
    chunk->used = 0;  // every copy staged in it has run: carve it from the start again
  } else if (chunk->retired && chunk->capacity == chunk_bytes && spares_.size() < spare_chunks) {
    chunk->retired = false;
    chunk->used = 0;
    spares_.push_back(chunk);
  } else if (chunk->retired) {
    destroy(chunk);
  }
}

// ---- SimStream ---------------------------------------------------------------------------------

SimStream::SimStream(SimDevice& device, std::uint64_t id, std::size_t index)
    : device_(device),
      id_(id),
      index_(index),
      scheduler_(device.scheduler()),
      delay_(device.options().delay),
      max_delay_us_(device.options().max_delay_us),
      rng_(delay_stream_seed(device.options().delay_seed, index)) {
  if (scheduler_ != nullptr) {
    scheduler_->add_lane(index_, id_);
    return;
  }
  worker_ = std::thread([this] { run(); });
}

SimStream::~SimStream() { stop(); }

void SimStream::stop() {
  if (scheduler_ != nullptr) return;  // the device drains the scheduler
  {
    std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

DeviceImpl& SimStream::device() noexcept { return device_; }

void SimStream::make_room() {
  if (scheduler_ != nullptr) scheduler_->make_room(index_);
}

std::uint64_t SimStream::enqueue(SimOp op) {
  if (scheduler_ != nullptr) return scheduler_->enqueue(index_, std::move(op));
  std::uint64_t ticket = 0;
  bool wake = false;
  {
    std::scoped_lock lock(mutex_);
    queue_.push_back(std::move(op));
    ticket = ++submitted_;
    wake = idle_;  // a busy worker finds the op on its own; waking it costs a system call
  }
  if (wake) work_cv_.notify_one();
  return ticket;
}

void SimStream::enqueue_bookkeeping(std::function<void()> op, SimEventNode* completes) {
  if (scheduler_ != nullptr) {
    if (!scheduler_->run_if_idle(index_, op)) {
      scheduler_->enqueue(index_, SimOp{.run = std::move(op), .completes = completes});
    }
    return;
  }
  if (!delay_) {
    std::scoped_lock lock(mutex_);
    if (queue_.empty() && completed_ == submitted_) {
      // Held under the stream's lock so that no later operation of this stream overtakes it.
      // The operation takes only the memory lock and event-node locks, never a stream's.
      ++submitted_;
      run_op(id_, op);
      ++completed_;
      return;
    }
  }
  enqueue(SimOp{.run = std::move(op), .completes = completes});
}

std::uint64_t SimStream::enqueue_checked(std::string operation, std::span<const RangeUse> uses,
                                         std::function<void()> op) {
  make_room();  // before the detector's lock: making room may run queued work
  // The check and the queueing under one lock: the detector sees this stream's operations in
  // the order its queue holds them.
  RaceDetector::Step step(device_.races());
  step.stream_op(race_agent, id_, std::move(operation), uses);
  return enqueue(std::move(op));
}

void SimStream::wait_for(std::uint64_t ticket) {
  if (scheduler_ != nullptr) {
    scheduler_->run_until(index_, ticket);
    return;
  }
  std::unique_lock lock(mutex_);
  ++waiters_;
  done_cv_.wait(lock, [&] { return completed_ >= ticket; });
  --waiters_;
}

void SimStream::run() {
#if defined(__linux__)
  // Delays of a few microseconds must not become the default slack's ~55 µs.
  if (delay_) (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
  const WorkerScope worker;  // this thread runs queued work: it keeps access to device memory
  std::unique_lock lock(mutex_);
  for (;;) {
    if (!stop_ && queue_.empty()) {
      idle_ = true;
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      idle_ = false;
    }
    if (queue_.empty()) return;  // stopped and drained
    SimOp op = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (delay_ && max_delay_us_ > 0) {
      std::uniform_int_distribution<std::uint32_t> pick(0, max_delay_us_);
      delay_for(pick(rng_));
    }
    if (op.kind == SimOp::Kind::wait) {
      wait_node(*op.after);
    } else {
      run_op(id_, op.run);
    }
    op = SimOp{};  // release what the op captured before the stream counts it as done
    device_guard::close_opened();  // guarded device memory it opened is closed to the host again
    lock.lock();
    ++completed_;
    if (waiters_ > 0) done_cv_.notify_all();
  }
}

void SimStream::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  const SimClock::Call vt(device_.clock());
  device_.called_from_host_function("cudaMemcpyAsync");
  if (auto cap = capture.get()) {  // captured, not queued (sim_graph.cpp)
    return device_.captures().capture_copy(*cap, *this, dst, src, bytes, kind);
  }
  device_.maybe_fail(FaultSite::copy, "cudaMemcpyAsync", "copying", bytes);
  if (!device_.check_copy(dst, src, bytes, kind, id_)) return;
  if (SimClock* clock = vt.clock()) {
    // Pageable memory: the host waits for the copy (CUDA stages it through a bounce buffer).
    const bool pinned = device_.is_pinned(kind == CopyKind::host_to_device ? src : dst, bytes);
    if (kind == CopyKind::device_to_device) {
      clock->queue(id_, SimClock::Engine::compute, clock->device_copy_ns(bytes), false);
    } else {
      const auto engine =
          kind == CopyKind::host_to_device ? SimClock::Engine::h2d : SimClock::Engine::d2h;
      clock->queue(id_, engine, clock->copy_ns(engine, bytes, pinned), !pinned);
    }
  }
  switch (kind) {
    case CopyKind::host_to_device: {
      if (device_.is_pinned(src, bytes)) {
        const RangeUse uses[] = {{dst, bytes, Use::write}, {src, bytes, Use::read}};
        enqueue_checked("copy host_to_device", uses, [this, dst, src, bytes] {
          if (device_.check(dst, bytes, "copy host_to_device (dst)", id_))
            std::memcpy(dst, device_.device_view(src), bytes);
        });
        return;
      }
      if (bytes == 0) {
        make_room();
        enqueue([] {});
        return;
      }
      // Pageable source: CUDA stages it before returning, so the caller may reuse the buffer
      // at once. Stage it here too, in the device's staging arena.
      StagingArena& arena = device_.staging();
      const StagingArena::Lease staged = arena.acquire(bytes);
      std::memcpy(staged.data, src, bytes);
      const RangeUse uses[] = {{dst, bytes, Use::write}};
      try {
        enqueue_checked("copy host_to_device", uses, [this, dst, staged, bytes] {
          if (device_.check(dst, bytes, "copy host_to_device (dst)", id_))
            std::memcpy(dst, staged.data, bytes);
          device_.staging().release(staged);
        });
      } catch (...) {
        arena.release(staged);
        throw;
      }
      return;
    }
    case CopyKind::device_to_host: {
      if (device_.is_pinned(dst, bytes)) {
        const RangeUse uses[] = {{src, bytes, Use::read}, {dst, bytes, Use::write}};
        enqueue_checked("copy device_to_host", uses, [this, dst, src, bytes] {
          if (device_.check(src, bytes, "copy device_to_host (src)", id_))
            std::memcpy(device_.device_view(dst), src, bytes);
        });
        return;
      }
      // To pageable memory CUDA returns only once the copy has completed: the host is then
      // ordered after it and the stream's earlier work.
      const RangeUse uses[] = {{src, bytes, Use::read}};
      VectorClock reached;
      std::uint64_t ticket = 0;
      make_room();  // before the detector's lock: making room may run queued work
      {
        RaceDetector::Step step(device_.races());
        step.stream_op(race_agent, id_, "copy device_to_host", uses);
        reached = step.stream_clock(race_agent);
        ticket = enqueue([this, dst, src, bytes] {
          if (device_.check(src, bytes, "copy device_to_host (src)", id_))
            std::memcpy(dst, src, bytes);
        });
      }
      wait_for(ticket);
      RaceDetector::Step(device_.races()).host_join(reached);
      return;
    }
    case CopyKind::device_to_device: {
      const RangeUse uses[] = {{src, bytes, Use::read}, {dst, bytes, Use::write}};
      enqueue_checked("copy device_to_device", uses, [this, dst, src, bytes] {
        const bool src_ok = device_.check(src, bytes, "copy device_to_device (src)", id_);
        const bool dst_ok = device_.check(dst, bytes, "copy device_to_device (dst)", id_);
        if (src_ok && dst_ok) std::memmove(dst, src, bytes);
      });
      return;
    }
  }
}

void SimStream::memset(void* dst, int value, std::size_t bytes) {
  const SimClock::Call vt(device_.clock());
  device_.called_from_host_function("cudaMemsetAsync");
  if (auto cap = capture.get()) {
    return device_.captures().capture_op(*cap, *this, "cudaMemsetAsync", [=](SimStream& s) {
      s.memset(dst, value, bytes);
    });
  }
  device_.maybe_fail(FaultSite::memset, "cudaMemsetAsync", "setting", bytes);
  if (SimClock* clock = vt.clock())
    clock->queue(id_, SimClock::Engine::compute, clock->memset_ns(bytes), false);
  const RangeUse uses[] = {{dst, bytes, Use::write}};
  enqueue_checked("memset", uses, [this, dst, value, bytes] {
    if (device_.check(dst, bytes, "memset", id_)) {
      fill_device_bytes(dst, static_cast<unsigned char>(value), bytes);
    }
  });
}

void SimStream::host_callback(std::function<void()> fn) {
  device_.called_from_host_function("cudaLaunchHostFunc");
  if (auto cap = capture.get()) {
    return device_.captures().capture_op(
        *cap, *this, "cudaLaunchHostFunc",
        [fn = std::move(fn)](SimStream& s) { s.host_callback(fn); });
  }
  device_.maybe_fail(FaultSite::stream_operation, "cudaLaunchHostFunc", "queueing a host callback");
  const SimClock::Call vt(device_.clock());
  if (SimClock* clock = vt.clock())
    clock->queue(id_, SimClock::Engine::none, clock->us(clock->profile().host_function_us), false);
  make_room();  // before the detector's lock: making room may run queued work
  RaceDetector::Step step(device_.races());
  step.stream_op(race_agent, id_, "host function", {});
  // Programs use host functions to signal host threads: once one has run, the host counts as
  // synchronised with the work queued before it (an order the detector sees only when it runs).
  // Its captures die inside it, as on CUDA's callback thread (run_host_function).
  enqueue(SimOp{.kind = SimOp::Kind::host_function,
                .run = [this, reached = step.stream_clock(race_agent), fn = std::move(fn)]() mutable {
                  device_.run_host_function(fn);
                  RaceDetector::Step(device_.races()).host_join(reached);
                }});
}

void SimStream::record(EventImpl& event) {
  device_.called_from_host_function("cudaEventRecord");
  if (auto cap = capture.get()) {
    return device_.captures().capture_record(cap, *this, static_cast<SimEvent&>(event));
  }
  device_.maybe_fail(FaultSite::stream_operation, "cudaEventRecord", "recording an event");
  const SimClock::Call vt(device_.clock());
  const double reached_at = vt.clock() ? vt.clock()->record(id_) : 0.0;
  RaceDetector::Step step(device_.races());
  auto node = static_cast<SimEvent&>(event).begin_record(scheduler_, index_,
                                                         step.record(race_agent), reached_at);
  SimEventNode* completes = node.get();
  enqueue_bookkeeping([node = std::move(node)] { node->complete(); }, completes);
}

void SimStream::wait(EventImpl& event) {
  device_.called_from_host_function("cudaStreamWaitEvent");
  if (device_.captures().capture_wait(*this, static_cast<SimEvent&>(event))) return;
  device_.maybe_fail(FaultSite::stream_operation, "cudaStreamWaitEvent", "waiting on an event");
  const SimClock::Call vt(device_.clock());
  make_room();  // before the detector's lock: making room may run queued work
  RaceDetector::Step step(device_.races());
  auto node = static_cast<SimEvent&>(event).latest();
  if (vt.clock()) vt.clock()->wait(id_, node ? node->vtime : 0.0);  // even when already reached
  // The order counts even when the record has already been reached: the detector follows what
  // the program asked for, not what the timing gave it.
  if (node && node->clock) step.wait(race_agent, *node->clock);
  if (!node || node->done()) return;  // nothing recorded, or already reached: no dependency
  enqueue(SimOp{.kind = SimOp::Kind::wait, .after = std::move(node)});
}

void SimStream::synchronize() {
  if (device_.called_from_host_function("cudaStreamSynchronize")) return;  // it would deadlock
  if (capture.active()) device_.captures().stream_sync(*this, "cudaStreamSynchronize");
  const SimClock::Call vt(device_.clock());
  VectorClock reached = RaceDetector::Step(device_.races()).stream_clock(race_agent);
  if (scheduler_ != nullptr) {
    scheduler_->run_queued(index_);
  } else {
    std::unique_lock lock(mutex_);
    const std::uint64_t target = submitted_;
    ++waiters_;
    done_cv_.wait(lock, [&] { return completed_ >= target; });
    --waiters_;
  }
  RaceDetector::Step(device_.races()).host_join(reached);
  if (SimClock* clock = vt.clock()) clock->host_join(clock->stream_ready(id_), clock->sync_ns());
}

bool SimStream::query() {
  device_.called_from_host_function("cudaStreamQuery");
  if (capture.active()) device_.captures().stream_sync(*this, "cudaStreamQuery");
  const SimClock::Call vt(device_.clock());
  VectorClock reached = RaceDetector::Step(device_.races()).stream_clock(race_agent);
  bool done = false;
  if (scheduler_ != nullptr) {
    done = scheduler_->query(index_);
  } else {
    std::scoped_lock lock(mutex_);
    done = completed_ == submitted_;
  }
  if (SimClock* clock = vt.clock()) {
    // Done only once the host's virtual clock has passed the stream's work too (as events).
    clock->charge_us(clock->profile().event_us);
    done = done && clock->now() >= clock->stream_ready(id_);
  }
  if (done) RaceDetector::Step(device_.races()).host_join(reached);
  return done;
}

void SimStream::launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                   std::function<void()> body, KernelWork work) {
  device_.called_from_host_function("cudaLaunchKernel");
  if (!std::isfinite(work.flops) || work.flops < 0) {
    throw std::invalid_argument("work.flops: " + std::to_string(work.flops) + " for kernel " +
                                std::string(name) + " is not a finite count >= 0");
  }
  if (auto cap = capture.get()) {
    return device_.captures().capture_op(
        *cap, *this, "cudaLaunchKernel",
        [name = std::string(name), checked = std::vector<MemoryRange>(ranges.begin(), ranges.end()),
         body = std::move(body), work](SimStream& s) {
          s.launch_host_kernel(name, checked, body, work);
        });
  }
  device_.check_launch_device(name, id_);
  device_.maybe_fail(FaultSite::kernel, "cudaLaunchKernel", "launching kernel", name);
  const SimClock::Call vt(device_.clock());
  if (SimClock* clock = vt.clock())
    clock->queue(id_, SimClock::Engine::compute, clock->kernel_ns(ranges, work.flops), false);
  std::vector<RangeUse> uses;
  uses.reserve(ranges.size());
  for (const MemoryRange& range : ranges) {
    uses.push_back({range.ptr, range.bytes,
                    range.mode == Access::read    ? Use::read
                    : range.mode == Access::write ? Use::write
                                                  : Use::read_write});
  }
  enqueue_checked("kernel " + std::string(name), uses,
                  [this, operation = "kernel " + std::string(name),
                   checked = std::vector<MemoryRange>(ranges.begin(), ranges.end()),
                   body = std::move(body)] {
                    bool ok = true;
                    for (const MemoryRange& range : checked) {
                      ok = device_.check(range.ptr, range.bytes, operation, id_) && ok;
                    }
                    if (ok) body();
                  });
}

}  // namespace gpulife::detail::sim
