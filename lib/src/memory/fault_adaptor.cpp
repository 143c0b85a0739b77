// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/fault_adaptor.hpp>

#include <stdexcept>
#include <string>
#include <utility>

#include <gpulife/errors.hpp>

#include "detail/format.hpp"

namespace gpulife {
namespace {

void check_options(const FaultOptions& options) {
  if (!(options.probability >= 0.0 && options.probability <= 1.0)) {
    throw std::invalid_argument("options.probability: " + std::to_string(options.probability) +
                                " is outside [0, 1]");
  }
}

}  // namespace

FaultAdaptor::FaultAdaptor(std::shared_ptr<DeviceMemoryResource> upstream, FaultOptions options)
    : DeviceMemoryResource(upstream ? upstream->device()
                                    : throw std::invalid_argument("upstream: null resource")),
      upstream_(std::move(upstream)) {
  set_options(options);
}

void FaultAdaptor::set_options(const FaultOptions& options) {
  check_options(options);
  std::scoped_lock lock(mutex_);
  options_ = options;
  rng_.seed(options.seed);
  calls_ = 0;
}

void FaultAdaptor::set_enabled(bool enabled) noexcept {
  std::scoped_lock lock(mutex_);
  enabled_ = enabled;
}

bool FaultAdaptor::enabled() const noexcept {
  std::scoped_lock lock(mutex_);
  return enabled_;
}

std::uint64_t FaultAdaptor::injected_failures() const noexcept {
  std::scoped_lock lock(mutex_);
  return injected_;
}

bool FaultAdaptor::should_fail() {
  std::scoped_lock lock(mutex_);
  if (!enabled_ || (options_.every_nth == 0 && options_.probability <= 0.0)) return false;
  ++calls_;
  bool fail = options_.every_nth != 0 && calls_ % options_.every_nth == 0;
  // Drawn on every call, failing or not, so that the sequence depends only on the call count.
  if (options_.probability > 0.0 &&
      std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < options_.probability) {
    fail = true;
  }
  if (fail) ++injected_;
  return fail;
}

void* FaultAdaptor::do_allocate(std::size_t bytes, StreamView stream) {
  if (should_fail()) {
    throw OutOfMemoryError("out of memory: " + name() + " failed an allocation of " +
                               detail::format_bytes(bytes) + " on " + device().name() +
                               ", stream " + std::to_string(stream.id()) +
                               " (fault injected by FaultAdaptor)",
                           bytes);
  }
  return upstream_->allocate(bytes, stream);
}

void FaultAdaptor::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  upstream_->deallocate(ptr, bytes, stream);
}

void FaultAdaptor::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                       std::vector<Event> after) noexcept {
  // The upstream decides how to honour the events (a pool keeps the block aside).
  upstream_->deallocate_after(ptr, bytes, stream, std::move(after));
}

bool FaultAdaptor::do_is_equal(const DeviceMemoryResource& other) const noexcept {
  // Memory from the adaptor is the upstream's: whatever can free the upstream's can free it.
  if (const auto* adaptor = dynamic_cast<const FaultAdaptor*>(&other)) {
    return upstream_->is_equal(*adaptor->upstream_);
  }
  return upstream_->is_equal(other);
}

std::string FaultAdaptor::do_name() const { return "fault(" + upstream_->name() + ")"; }

ResourceStatistics FaultAdaptor::do_statistics() const {
  ResourceStatistics stats = upstream_->statistics();
  stats.failed_allocations += injected_failures();
  return stats;
}

std::size_t FaultAdaptor::do_release_cached() noexcept { return upstream_->release_cached(); }

std::size_t FaultAdaptor::do_mapping_granularity() const noexcept {
  return upstream_->mapping_granularity();
}

void* FaultAdaptor::do_reserve_range(std::size_t bytes) { return upstream_->reserve_range(bytes); }

void FaultAdaptor::do_release_range(void* base, std::size_t bytes) noexcept {
  upstream_->release_range(base, bytes);
}

void FaultAdaptor::do_unmap(void* ptr, std::size_t bytes) noexcept { upstream_->unmap(ptr, bytes); }

void FaultAdaptor::do_map(void* ptr, std::size_t bytes) {
  // Mapping physical memory is an allocation: it fails as the options choose.
  if (should_fail()) {
    throw OutOfMemoryError("out of memory: " + name() + " failed to map " +
                               detail::format_bytes(bytes) + " on " + device().name() +
                               " (fault injected by FaultAdaptor)",
                           bytes);
  }
  upstream_->map(ptr, bytes);
}

}  // namespace gpulife
