// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/logging_adaptor.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <ostream>
#include <stdexcept>
#include <utility>

#include <gpulife/error_handler.hpp>

namespace gpulife {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// A small number per thread, in order of first use (process-wide).
unsigned thread_number() {
  static std::atomic<unsigned> next{0};
  thread_local const unsigned number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}

const std::shared_ptr<DeviceMemoryResource>& checked(
    const std::shared_ptr<DeviceMemoryResource>& upstream) {
  if (!upstream) throw std::invalid_argument("upstream: null resource");
  return upstream;
}

}  // namespace

LoggingAdaptor::LoggingAdaptor(std::shared_ptr<DeviceMemoryResource> upstream,
                               const std::string& filename, LoggingOptions options)
    : DeviceMemoryResource(checked(upstream)->device()),
      upstream_(std::move(upstream)),
      file_(std::make_unique<std::ofstream>(filename, std::ios::out | std::ios::trunc)),
      out_(file_.get()),
      options_(options),
      start_ns_(now_ns()) {
  if (!*file_) throw std::invalid_argument("filename: cannot open '" + filename + "' for writing");
  *out_ << header() << '\n';
}

LoggingAdaptor::LoggingAdaptor(std::shared_ptr<DeviceMemoryResource> upstream, std::ostream& out,
                               LoggingOptions options)
    : DeviceMemoryResource(checked(upstream)->device()),
      upstream_(std::move(upstream)),
      out_(&out),
      options_(options),
      start_ns_(now_ns()) {
  *out_ << header() << '\n';
}

LoggingAdaptor::~LoggingAdaptor() {
  try {
    flush();
  } catch (...) {
    report_error("LoggingAdaptor: flushing the log failed");
  }
}

std::string LoggingAdaptor::header() { return "thread,time,action,pointer,size,stream,after"; }

void LoggingAdaptor::flush() {
  std::scoped_lock lock(mutex_);
  out_->flush();
}

void LoggingAdaptor::log(const char* action, const void* ptr, std::size_t bytes,
                         StreamView stream, bool after) noexcept {
  char line[160];
  const int n = std::snprintf(line, sizeof line, "%u,%lld,%s,%p,%zu,%llu,%s\n", thread_number(),
                              static_cast<long long>(now_ns() - start_ns_), action, ptr, bytes,
                              static_cast<unsigned long long>(stream.id()),
                              after ? "record_stream" : "");
  if (n <= 0) return;
  try {
    std::scoped_lock lock(mutex_);
    out_->write(line, static_cast<std::streamsize>(std::min<int>(n, sizeof line - 1)));
    if (options_.auto_flush) out_->flush();
  } catch (...) {
    // A log that cannot be written must not break the program's memory.
  }
}

void* LoggingAdaptor::do_allocate(std::size_t bytes, StreamView stream) {
  try {
    void* ptr = upstream_->allocate(bytes, stream);
    log("allocate", ptr, bytes, stream, false);
    return ptr;
  } catch (...) {
    log("allocate_failure", nullptr, bytes, stream, false);
    throw;
  }
}

void LoggingAdaptor::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  log("free", ptr, bytes, stream, false);
  upstream_->deallocate(ptr, bytes, stream);
}

void LoggingAdaptor::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                         std::vector<Event> after) noexcept {
  log("free", ptr, bytes, stream, true);
  upstream_->deallocate_after(ptr, bytes, stream, std::move(after));
}

bool LoggingAdaptor::do_is_equal(const DeviceMemoryResource& other) const noexcept {
  return upstream_->is_equal(other);
}

std::string LoggingAdaptor::do_name() const { return "logging(" + upstream_->name() + ")"; }

ResourceStatistics LoggingAdaptor::do_statistics() const { return upstream_->statistics(); }

std::size_t LoggingAdaptor::do_release_cached() noexcept { return upstream_->release_cached(); }

std::size_t LoggingAdaptor::do_mapping_granularity() const noexcept {
  return upstream_->mapping_granularity();
}

void* LoggingAdaptor::do_reserve_range(std::size_t bytes) { return upstream_->reserve_range(bytes); }

void LoggingAdaptor::do_release_range(void* base, std::size_t bytes) noexcept {
  upstream_->release_range(base, bytes);
}

void LoggingAdaptor::do_unmap(void* ptr, std::size_t bytes) noexcept { upstream_->unmap(ptr, bytes); }

void LoggingAdaptor::do_map(void* ptr, std::size_t bytes) { upstream_->map(ptr, bytes); }

}  // namespace gpulife
