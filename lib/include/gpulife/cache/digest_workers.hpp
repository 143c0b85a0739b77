// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DigestWorkers`: a small pool of threads that digests large buffers in parallel.

#include <cstddef>
#include <memory>
#include <span>

#include <gpulife/cache/digest.hpp>

namespace gpulife {

/// @brief Threads that digest a large buffer together: its chunks are hashed in parallel and
/// combined in order, so the result equals `gpulife::digest(bytes)` whatever the thread count.
///
/// The calling thread hashes chunks too, and hashes all of them if the workers are busy with
/// other buffers, so a digest never waits for a free worker and a pool of one thread is the
/// calling thread alone. Buffers of fewer than `parallel_min_bytes` stay on the calling thread.
///
/// Whoever creates it owns it (a context holds one); there is no process-wide pool.
///
/// @par Thread safety
/// `digest` may be called from any number of threads at once; concurrent digests share the
/// workers. The destructor must not run while a `digest` call is in progress.
class DigestWorkers {
 public:
  /// @brief Buffers smaller than this are digested on the calling thread alone: a worker takes
  /// tens of microseconds to wake, as long as hashing 1-2 MiB takes, and a second thread made
  /// 1 MiB and 2 MiB digests slower (0.65x, 0.9x) but 4 MiB ones faster (1.27x) on the build VM.
  static constexpr std::size_t parallel_min_bytes = std::size_t{4} << 20;

  /// @brief Starts `threads - 1` worker threads.
  /// @param threads how many threads hash one buffer, the calling thread included
  /// @throws std::invalid_argument naming `threads` if it is zero
  /// @throws std::system_error if a thread cannot be started
  explicit DigestWorkers(std::size_t threads = default_thread_count());
  /// @brief Stops and joins the workers.
  ~DigestWorkers();
  DigestWorkers(const DigestWorkers&) = delete;
  DigestWorkers& operator=(const DigestWorkers&) = delete;

  /// @brief The content digest of `bytes`, equal to `gpulife::digest(bytes)`.
  /// @throws std::invalid_argument naming `bytes` if its data is null and its size is not zero
  /// @throws std::bad_alloc if the bookkeeping for a parallel digest cannot be allocated
  [[nodiscard]] Digest128 digest(std::span<const std::byte> bytes) const;
  /// @brief `digest({data, size})`.
  /// @throws std::invalid_argument naming `data` if it is null and `size` is not zero
  [[nodiscard]] Digest128 digest(const void* data, std::size_t size) const;

  /// @return how many threads hash one buffer, the calling thread included
  [[nodiscard]] std::size_t thread_count() const noexcept;

  /// @return `std::thread::hardware_concurrency()`, or 1 where it is unknown
  [[nodiscard]] static std::size_t default_thread_count() noexcept;

 private:
  class Pool;
  std::unique_ptr<Pool> pool_;
};

}  // namespace gpulife
