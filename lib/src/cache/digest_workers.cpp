// SPDX-License-Identifier: Apache-2.0
#include <gpulife/cache/digest_workers.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cache/xxh3.hpp"

namespace gpulife {
namespace {

// One parallel digest. The calling thread and any woken workers claim its chunks one at a time;
// each writes its chunk's digest into its own slot of the root list, so the combination is in
// chunk order whatever thread hashed what.
class Job {
 public:
  Job(const std::byte* data, std::size_t size)
      : data_(data),
        size_(size),
        chunks_(detail::chunk_count(size)),
        list_(std::make_unique_for_overwrite<unsigned char[]>(detail::root_list_bytes(chunks_))),
        remaining_(chunks_) {}

  [[nodiscard]] std::size_t chunks() const noexcept { return chunks_; }

  // Hashes chunks until none is left to claim. The thread that hashes the last one wakes the
  // caller.
  void work() noexcept {
    std::size_t hashed = 0;
    // relaxed: the counter only hands out indices; the results are published through remaining_.
    for (std::size_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < chunks_;) {
      detail::hash_chunk(data_, size_, i, list_.get());
      ++hashed;
    }
    // acq_rel: the release publishes this thread's slots; the acquire of the last decrement sees
    // every earlier thread's slots (they are all in this counter's release sequence).
    if (hashed != 0 && remaining_.fetch_sub(hashed, std::memory_order_acq_rel) == hashed) {
      std::scoped_lock lock(mutex_);
      finished_ = true;
      finished_cv_.notify_all();
    }
  }

  // Waits for the chunks other threads claimed, then combines.
  Digest128 finish() {
    {
      std::unique_lock lock(mutex_);
      finished_cv_.wait(lock, [this] { return finished_; });
    }
    return detail::hash_root(size_, chunks_, list_.get());
  }

 private:
  const std::byte* data_;
  std::size_t size_;
  std::size_t chunks_;
  std::unique_ptr<unsigned char[]> list_;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::size_t> remaining_;
  std::mutex mutex_;
  std::condition_variable finished_cv_;
  bool finished_ = false;
};

}  // namespace

class DigestWorkers::Pool {
 public:
  explicit Pool(std::size_t threads) {
    workers_.reserve(threads - 1);
    try {
      for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { run(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  ~Pool() { stop(); }

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  [[nodiscard]] std::size_t thread_count() const noexcept { return workers_.size() + 1; }

  Digest128 digest(std::span<const std::byte> bytes) {
    if (workers_.empty() || bytes.size() < parallel_min_bytes) return gpulife::digest(bytes);

    // Shared: a worker that took the job may still be leaving `work` when the caller returns.
    auto job = std::make_shared<Job>(bytes.data(), bytes.size());
    {
      std::scoped_lock lock(mutex_);
      queue_.push_back(job);
    }
    // The caller hashes too, so at most chunks - 1 workers have anything to do.
    if (const std::size_t helpers = job->chunks() - 1; helpers >= workers_.size()) {
      wake_.notify_all();
    } else {
      for (std::size_t i = 0; i < helpers; ++i) wake_.notify_one();
    }
    job->work();
    remove(job);
    return job->finish();
  }

 private:
  void run() noexcept {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      std::shared_ptr<Job> job = queue_.front();
      lock.unlock();
      job->work();
      lock.lock();
      // Every chunk is claimed: take the job off the queue so that no worker picks it again.
      if (auto it = std::find(queue_.begin(), queue_.end(), job); it != queue_.end()) {
        queue_.erase(it);
      }
    }
  }

  void remove(const std::shared_ptr<Job>& job) {
    std::scoped_lock lock(mutex_);
    if (auto it = std::find(queue_.begin(), queue_.end(), job); it != queue_.end()) {
      queue_.erase(it);
    }
  }

  void stop() noexcept {
    {
      std::scoped_lock lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  // Jobs with chunks left to claim, oldest first: idle workers help the oldest.
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

DigestWorkers::DigestWorkers(std::size_t threads) {
  if (threads == 0) throw std::invalid_argument("threads: must be at least 1");
  pool_ = std::make_unique<Pool>(threads);
}

DigestWorkers::~DigestWorkers() = default;

Digest128 DigestWorkers::digest(std::span<const std::byte> bytes) const {
  if (bytes.data() == nullptr && !bytes.empty()) {
    throw std::invalid_argument("bytes: null data with size " + std::to_string(bytes.size()));
  }
  return pool_->digest(bytes);
}

Digest128 DigestWorkers::digest(const void* data, std::size_t size) const {
  if (data == nullptr && size != 0) {
    throw std::invalid_argument("data: null pointer with size " + std::to_string(size));
  }
  return pool_->digest(std::span{static_cast<const std::byte*>(data), size});
}

std::size_t DigestWorkers::thread_count() const noexcept { return pool_->thread_count(); }

std::size_t DigestWorkers::default_thread_count() noexcept {
  return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

}  // namespace gpulife
