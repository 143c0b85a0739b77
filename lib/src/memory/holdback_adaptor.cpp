// SPDX-License-Identifier: Apache-2.0
#include <gpulife/memory/holdback_adaptor.hpp>

#include <stdexcept>
#include <string>
#include <utility>

#include <gpulife/error_handler.hpp>

namespace gpulife {

HoldbackAdaptor::HoldbackAdaptor(std::shared_ptr<DeviceMemoryResource> upstream,
                                 HoldbackOptions options)
    : DeviceMemoryResource(upstream ? upstream->device()
                                    : throw std::invalid_argument("upstream: null resource")),
      upstream_(std::move(upstream)),
      options_(options) {}

HoldbackAdaptor::~HoldbackAdaptor() { (void)do_release_cached(); }

std::size_t HoldbackAdaptor::held_bytes() const {
  std::scoped_lock lock(mutex_);
  return held_bytes_;
}

void* HoldbackAdaptor::do_allocate(std::size_t bytes, StreamView stream) {
  return upstream_->allocate(bytes, stream);
}

void HoldbackAdaptor::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  do_deallocate_after(ptr, bytes, stream, {});
}

void HoldbackAdaptor::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                          std::vector<Event> after) noexcept {
  std::vector<Held> evicted;
  try {
    // Freed from here on, for the simulated device's checks, though the upstream does not
    // know it yet.
    std::vector<detail::EventImpl*> events;
    events.reserve(after.size());
    for (const Event& event : after) events.push_back(event.impl());
    device().impl().mark_freed(ptr, bytes, *stream.impl(), events);
    std::scoped_lock lock(mutex_);
    held_.push_back(Held{ptr, bytes, stream, std::move(after)});
    held_bytes_ += bytes;
    while (!held_.empty() && (held_bytes_ > options_.bytes || held_.size() > options_.blocks)) {
      held_bytes_ -= held_.front().bytes;
      evicted.push_back(std::move(held_.front()));
      held_.pop_front();
    }
  } catch (...) {
    // No room to hold it: it goes back at once (the mark above, if made, is undone there).
    evicted.push_back(Held{ptr, bytes, stream, std::move(after)});
  }
  for (Held& held : evicted) give_back(held);
}

void HoldbackAdaptor::give_back(Held& held) noexcept {
  // The work that used the block last must be done before it is live again for the sim; held
  // long enough, it is, and then this costs nothing.
  for (const Event& event : held.after) {
    try {
      event.synchronize();
    } catch (const std::exception& e) {
      report_error(std::string("HoldbackAdaptor: waiting for a block's last use failed: ") +
                   e.what());
    }
  }
  // Live again for an instant, so that the upstream's own free of it is a valid one; the sim
  // verifies here that the poison it got when held was left alone.
  device().impl().mark_allocated(held.ptr, held.bytes, *held.stream.impl());
  upstream_->deallocate(held.ptr, held.bytes, held.stream);
}

std::string HoldbackAdaptor::do_name() const { return "holdback(" + upstream_->name() + ")"; }

ResourceStatistics HoldbackAdaptor::do_statistics() const { return upstream_->statistics(); }

std::size_t HoldbackAdaptor::do_release_cached() noexcept {
  std::deque<Held> all;
  std::size_t bytes = 0;
  {
    std::scoped_lock lock(mutex_);
    all.swap(held_);
    bytes = held_bytes_;
    held_bytes_ = 0;
  }
  for (Held& held : all) give_back(held);
  return bytes + upstream_->release_cached();
}

}  // namespace gpulife
